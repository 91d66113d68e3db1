"""`QMoELayer`: a router weights experts, per input. One batch goes, left to right::

    inputs ─► inputs.InputReader: a Batch (circuits checked and prepared once, or features -> angles)
           ─► routers.RouterLogits: router logits [B, E]
           ─► gating.Gate: Routing (expert_index, combine_weights [B, k]; losses, metrics)
           ─► dispatch.ExpertBank: ONE executor call for every quantum row (+ each classical expert
              on its rows, + shared experts), combined ─► outputs [B, n_readouts]

Everything that call needs (programs, symbol layout, the router's program) is built once in
`build`; `call` is those four steps, and the data does not come back into the layer.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import cirq
import tensorflow as tf
import tf_keras as keras

from qmoe_tfq import dispatch, routing, routing_terms
from qmoe_tfq.circuits import EXPERT_PREFIX, Ansatz, Observable
from qmoe_tfq.coherent import CoherentQMoELayer, coherent_arguments
from qmoe_tfq.encoding import AngleEncoder, FeatureEncoder
from qmoe_tfq.execution import Executor
from qmoe_tfq.execution.backends import Backend, Execution
from qmoe_tfq.execution.program import decode_strings
from qmoe_tfq.execution.xla import on_padded_batch
from qmoe_tfq.experts import (QUANTUM, ExpertPQC, Part, check_output_widths, deserialize_part, expert_list,
                              make_experts, serialize_entries, shared_list)
from qmoe_tfq.gating import Gate
from qmoe_tfq.inputs import Batch, InputReader, feeds_features
from qmoe_tfq.mixture import MixtureLayer
from qmoe_tfq.qcnn import BUILTINS, QCNN
from qmoe_tfq.routers import QuantumRouter, RouterLogits, deserialize_router
from qmoe_tfq.serialization import FORMAT_VERSION
from qmoe_tfq.settings import parts, pop_settings, upgrade_settings

LOG = logging.getLogger("qmoe_tfq")


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class QMoELayer(MixtureLayer):
    """Quantum mixture of experts: a router weights experts (PQCs or Keras layers), per input::

        gates   = softmax(logits / temperature)            # [B, E]; logits: router readouts x scale, or its head
        outputs = sum_e gates[:, e] * <expert_e readouts>  # [B, n_readouts]

    A `TopK` gate keeps the k largest gates (renormalised) and runs only those experts. Every quantum
    expert's rows go through one executor call per step, however different their circuits.

    >>> import qmoe_tfq as qmoe
    >>> qubits = cirq.GridQubit.rect(1, 4)
    >>> inputs = keras.Input(shape=(), dtype=tf.string)
    >>> moe = qmoe.QMoELayer(qubits, 4, gate=qmoe.TopK(2))  # the same as QMoELayer(qubits, 4, top_k=2)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(moe(inputs)))
    >>> model(qmoe.encode(np.random.rand(3, 4), qubits)).shape
    TensorShape([3, 2])
    >>> moe.gate_weights(qmoe.encode(np.random.rand(3, 4), qubits)).shape  # [batch, n_experts]
    TensorShape([3, 4])

    Input: serialized circuits ``<string>[batch]`` (quantum data, or `qmoe_tfq.encode`), or float features
    ``[batch, n_features]`` (read by `encoder`, `AngleEncoder(qubits)` by default). Output: ``[batch,
    len(observables)]``. The gate adds its losses through `add_loss` and router metrics named after the layer.
    Each part can be made, inspected and passed on its own::

        QMoELayer(qubits, experts=["quantum", my_circuit, keras.layers.Dense(4)],
                  router=QuantumRouter(Ansatz(layers=3), head=keras.layers.Dense(3)),
                  gate=TopK(1, balance="bias"), execution=Execution("noiseless"))

    Args:
        qubits: the qubits every part acts on (parts may use a subset).
        n_experts: the number of built-in experts (default 4), or ``len(experts)``.
        experts: one entry per expert: ``"quantum"`` (the built-in `ansatz`), an `Ansatz` or `QCNN`, a
            `cirq.Circuit` (its symbols are its weights; it reads `observables`), a `tfq.layers.PQC` (its own
            operators, as many as `observables`) or a `tf_keras` layer on the float features.
        router: a `QuantumRouter` (default: the built-in ansatz read with `router_readouts`), an `Ansatz`, circuit
            or PQC (a `QuantumRouter` of it), or any `tf_keras` layer mapping features to E logits.
        gate: `TopK` (default ``TopK(top_k)``), `ExpertChoice` or `DenseGate` (when `top_k` is None): the routing
            policy, with its load balancing, z-loss and metrics.
        top_k: short for ``gate=TopK(top_k)``; None (and no gate) is dense routing.
        observables: what each expert reads; Z on each qubit by default.
        ansatz: the built-in experts' and router's circuit: an `Ansatz` (default: CNOT ring, ry, rz; 2 layers)
            or a `QCNN`.
        encoder: an `AngleEncoder` or `CircuitEncoder` for float features (angles go to the simulator
            with the weights; no circuit is built per sample).
        shared_experts: experts every sample always uses with weight 1 (DeepSeekMoE): a count of built-in
            experts, or entries as for `experts`.
        reuploading: QMoE+ re-uploading: the encoder again before every layer of the built-in experts,
            scaled per expert, layer and feature (weight ``input_scaling`` [E, L, F], init 1).
        execution: an `Execution`, or its backend (``"auto"`` by default, ``"statevector"``, ``"noiseless"``,
            a Cirq sampler or simulator, an executor object).
        **kwargs: Keras layer arguments (``name``...) and settings (``temperature=0.5``, ``backend=...``),
            each making its part when that part is not given: see `qmoe_tfq.settings`.

    QMoE+ coherent aggregation (one circuit holds router and experts) is `CoherentQMoELayer`. Under
    ``model.compile(..., jit_compile=True)`` the layer runs when it takes float features on the statevector
    kernel with quantum experts and no capacity (its input checks then do not run); otherwise it raises saying why.
    Such a layer whose router is quantum without a head infers (``training=False``: `predict`, `evaluate`) as one
    XLA computation after its input checks, on batches padded to a few sizes per octave; it trains in TF's ops
    around the kernel's XLA calls, which measured faster than a backward pass under XLA.
    """

    def __init__(self, qubits: Sequence[cirq.Qid], n_experts: int | None = None, *,
                 experts: Sequence[Part] | None = None, router: Part | QuantumRouter | None = None,
                 gate: Gate | None = None, top_k: int | None = None, observables: Sequence[Observable] | None = None,
                 ansatz: Ansatz | QCNN | None = None, encoder: FeatureEncoder | None = None,
                 shared_experts: int | Sequence[Part] = 0, reuploading: bool = False,
                 execution: Execution | Backend | Executor | None = None, **kwargs) -> None:
        made = parts(pop_settings(kwargs), top_k, gate, ansatz, router, execution)
        super().__init__(qubits, observables, made.ansatz, encoder, made.execution, **kwargs)
        entries = expert_list(experts, n_experts)
        self.n_experts = len(entries)
        entries = made.with_depths(entries + shared_list(shared_experts))
        self._builtin = [e if isinstance(e, (str, *BUILTINS)) else None for e in entries]  # layers are tracked as experts
        self.gate = made.gate
        self.gate.bind(self.n_experts, self.name)
        if reuploading and (self.encoder is None or any(e != QUANTUM for e in entries)
                            or not isinstance(self.ansatz, Ansatz)):
            raise ValueError("reuploading=True re-encodes float features before every layer of the built-in "
                             "experts: pass encoder=qmoe_tfq.AngleEncoder(qubits) and only 'quantum' experts "
                             "(of the layer's Ansatz, one depth).")
        self.reuploading = bool(reuploading)
        quantum_router = isinstance(made.router, QuantumRouter)
        self._router_part = made.router if quantum_router else None  # for the config; not a layer, so not tracked
        self.router_head = made.router.head if quantum_router else None  # before the experts: the weights' order
        with tf.name_scope(self.name):
            every_expert = make_experts(entries, self.builtin_expert, self.qubits, self.observables,
                                        **self.executor_args)
            self.experts, self.shared_experts = every_expert[:self.n_experts], every_expert[self.n_experts:]
            self.router = (made.router.make(self.qubits, self.n_experts, self.ansatz, **self.executor_args)
                           if quantum_router else made.router)
        self._quantum = [isinstance(e, ExpertPQC) for e in every_expert]
        self._warned_xla = False  # warned once that, under jit_compile=True, the input checks do not run
        if self.encoder is None and (any(self._quantum) or self.quantum_router) and self._classical_parts():
            self.encoder = AngleEncoder(self.qubits)  # classical parts need features; quantum ones encode them

    @property
    def quantum_router(self) -> bool:
        return isinstance(self.router, ExpertPQC)

    @property
    def _every_expert(self) -> list[keras.layers.Layer]:
        """Routed experts, then shared ones: the order of dispatch rows' expert indices."""
        return self.experts + self.shared_experts

    def _classical_parts(self) -> list[str]:
        parts = [f"experts[{i}] ({e.name})" for i, e in enumerate(self._every_expert) if not self._quantum[i]]
        return parts + ([] if self.quantum_router else [f"router ({self.router.name})"])

    def _adopt_inputs(self, inputs: object) -> None:
        """Before the first build: float inputs without an encoder get `AngleEncoder(qubits)`."""
        if not self.built and self.encoder is None and feeds_features(inputs) and not self._classical_parts():
            self.encoder = AngleEncoder(self.qubits)

    def build(self, input_shape: tf.TensorShape) -> None:
        input_shape = tf.TensorShape(input_shape)
        classical = self._classical_parts()  # decided once: features when these or an encoder need them, else circuits
        why = (f"{', '.join(classical)} are classical" if classical
               else None if self.encoder is None else f"it encodes them with {self.encoder.name}")
        self._inputs = InputReader.for_shape(self.name, self.qubits, self._executor, self.encoder, input_shape, why)
        if why is not None:
            check_output_widths(self._every_expert, self.router, self._inputs.n_features, self.n_readouts,
                                self.n_experts)
        if self.encoder is not None and not self.encoder.built:
            self.encoder.build(input_shape)
        data_circuit = cirq.Circuit() if self.encoder is None else self.encoder.circuit
        data_names = [] if self.encoder is None else decode_strings(self.encoder.symbol_names)
        reuploaded, expert_data = None, data_names
        if self.reuploading:  # every expert re-encodes the features before each layer, scaled per expert and layer
            reuploaded, uploads = self.ansatz.reuploading(self.qubits, self.ansatz.layers, self.encoder.circuit,
                                                          EXPERT_PREFIX)
            expert_data = [str(s) for s in uploads]
            self.input_scaling = self.add_weight(
                "input_scaling", shape=(len(self._every_expert), self.ansatz.layers, self.encoder.n_features),
                initializer="ones", trainable=True)  # <float32>[E, L, F]
        table = dispatch.expert_table(self._every_expert, data_circuit, expert_data, self.qubits, self.noise,
                                      self.gate.rows_per_sample + len(self.shared_experts), reuploaded)
        run = self._executor.compile(table.program) if any(self._quantum) else None
        self._bank = dispatch.ExpertBank(self._every_expert, table, run, self.n_readouts, len(self.shared_experts),
                                         self.input_scaling if self.reuploading else None)
        scale = None  # the quantum router's readouts times a learned scale are its logits, unless a head maps them
        if self.quantum_router and self.router_head is None:
            self.logit_scale = scale = self.add_weight("logit_scale", shape=(), trainable=True,
                                                       initializer=keras.initializers.Constant(3.0))
        self._router = RouterLogits(self.router, self.router_head, scale, self._executor, data_circuit, data_names,
                                    self.qubits, self.noise)
        self.gate.build(tf.TensorShape([None, self.n_experts]))
        self._inference = None  # inference as one XLA computation, where every part of the step is ours and compiles
        if self._xla_refusal() is None and self.quantum_router and self.router_head is None:
            self._inference = on_padded_batch(self._infer)
        super().build(input_shape)

    def _xla_refusal(self) -> str | None:
        """Why the layer cannot run in an XLA-compiled step (``model.compile(..., jit_compile=True)``), or None."""
        policy = self.gate.policy
        if self._inputs.n_features is None:
            return "takes serialized circuits, which only TFQ's ops read"
        if self.simulator != "statevector":
            return f"runs its circuits on {self.simulator!r}, with TFQ's ops"
        if not all(self._quantum):
            return "has classical experts, each run on the rows routed to it: a count known only at run time"
        if policy.drops:
            return "routes with a capacity, which keeps a number of rows known only at run time"
        return None

    def _enter_xla(self) -> None:
        """Refuses, naming why, to be traced into an XLA-compiled step that cannot compile; else warns that the
        input checks do not run there (XLA drops assertions)."""
        why = self._xla_refusal()
        if why is not None:
            raise ValueError(f"{self.name} cannot run in an XLA-compiled step (compile(..., jit_compile=True)): it "
                             f"{why}. Compile the model without jit_compile (the statevector kernel runs under XLA "
                             "either way).")
        if self._warned_xla:  # Keras may trace a step more than once
            return
        self._warned_xla = True
        LOG.warning("%s runs in an XLA-compiled step (jit_compile=True), where its input checks do not run: a NaN or "
                    "infinite feature gives NaN outputs (and, training, NaN weights) instead of an error.", self.name)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if tf.__internal__.get_enclosing_xla_context() is not None:  # traced for jit_compile=True
            self._enter_xla()
        batch = self._inputs.read(inputs)  # checked once; circuits prepared once for the executor
        if training or self._inference is None:
            outputs, terms = self._step(batch, training)
            self.gate.add_terms(terms, training)  # losses, the selection bias's step
        else:
            outputs, losses = self._inference(batch.angles)
            for loss in losses:
                self.gate.add_loss(loss)
        return outputs  # <float32>[B, n_readouts]

    def _step(self, batch: Batch, training: bool | None,
              valid: tf.Tensor | None = None) -> tuple[tf.Tensor, routing_terms.RoutingTerms]:
        """Router, gate and experts on a read batch: outputs <float32>[B, n_readouts] and the routing's terms
        (over the `valid` <bool>[B] samples of a padded batch), already reported to the gate's health metric."""
        route = self.gate.select(self._router.logits(batch), training)  # expert_index, combine_weights [B, k]
        rows = dispatch.routed_rows(route, self.gate.policy.drops)
        terms = routing_terms.measure(route, self.gate.policy, valid)
        self.gate.report(terms, training)  # metrics, in the inference XLA computation too
        return self._bank.outputs(rows, batch), terms

    def _infer(self, angles: tf.Tensor, valid: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """`_step` for inference in one XLA computation: outputs <float32>[B, n_readouts] and the gate's losses only
        (every tensor handed out costs the computation's launch). A quantum router and experts read only the
        angles."""
        outputs, terms = self._step(Batch(None, None, angles), False, valid)
        return outputs, self.gate.weighted_losses(terms)

    def route(self, inputs: tf.Tensor, training: bool = False) -> routing.Routing:
        """The routing decision for a batch (logits, probabilities, selected experts, weights)."""
        batch = self._read(inputs)  # builds the layer first if needed
        return self.gate.select(self._router.logits(batch), training)

    def get_config(self) -> dict:
        entries = serialize_entries(self._builtin, self._every_expert)
        routed, shared = entries[:self.n_experts], entries[self.n_experts:]
        router = self._router_part.serialize(self.router) if self.quantum_router else keras.layers.serialize(self.router)
        return {
            **super().get_config(), "n_experts": self.n_experts,
            "experts": None if all(e == QUANTUM for e in routed) else routed,
            "shared_experts": len(shared) if all(e == QUANTUM for e in shared) else shared,
            "router": router, "gate": keras.layers.serialize(self.gate), "reuploading": self.reuploading,
        }

    @classmethod
    def from_config(cls, config: dict) -> QMoELayer | CoherentQMoELayer:
        version = config.get("format_version", FORMAT_VERSION)
        config, execution, _ = cls.read_config(config, cls.__name__, ("router_observables",) if version < 4 else ())
        if version < 4:  # settings, not parts: they make the parts as the keyword settings do
            config = upgrade_settings(config, version, execution)
            if config.pop("aggregation", "classical") == "coherent":  # then a mode of this layer
                return CoherentQMoELayer(**coherent_arguments(config))
        else:
            config["router"] = deserialize_router(config["router"], execution)
            config["gate"] = deserialize_part(config["gate"], execution)
        for key in ("experts", "shared_experts"):
            if isinstance(config.get(key), list):
                config[key] = [deserialize_part(entry, execution) for entry in config[key]]
        return cls(**config)
