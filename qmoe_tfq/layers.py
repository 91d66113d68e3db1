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

import dataclasses
from collections.abc import Sequence

import cirq
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq import dispatch, routing
from qmoe_tfq.circuits import EXPERT_PREFIX, Ansatz, Observable
from qmoe_tfq.coherent import CoherentQMoELayer, coherent_arguments
from qmoe_tfq.encoding import AngleEncoder, FeatureEncoder
from qmoe_tfq.execution import Executor
from qmoe_tfq.execution.backends import Backend, Execution
from qmoe_tfq.execution.program import decode_strings
from qmoe_tfq.experts import (QUANTUM, ExpertPQC, Part, check_output_widths, deserialize_part, expert_list,
                              make_experts, shared_list)
from qmoe_tfq.gating import Gate
from qmoe_tfq.inputs import InputReader, feeds_features
from qmoe_tfq.mixture import MixtureLayer
from qmoe_tfq.qcnn import BUILTINS, QCNN
from qmoe_tfq.routers import QuantumRouter, RouterLogits
from qmoe_tfq.serialization import FORMAT_VERSION
from qmoe_tfq.settings import parts, pop_settings, upgrade_settings


PQC_ROUTER = "pqc"  # a quantum router made from a PQC: its config is the PQC's


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class QMoELayer(MixtureLayer):
    """Quantum mixture of experts: a router weights experts (PQCs or Keras layers), per input.

    The router's readouts, times a learned scale (or through its head), are the logits::

        gates   = softmax(logits / temperature)                          # [B, E]
        outputs = sum_e gates[:, e] * <expert_e readouts>                # [B, n_readouts]

    With a `TopK` gate only the k largest gates are kept (renormalised) and only those experts run.
    Every quantum expert's rows go through one executor call per step, however different their
    circuits.

    >>> import qmoe_tfq as qmoe
    >>> qubits = cirq.GridQubit.rect(1, 4)
    >>> inputs = keras.Input(shape=(), dtype=tf.string)
    >>> moe = qmoe.QMoELayer(qubits, 4, gate=qmoe.TopK(2))  # the same as QMoELayer(qubits, 4, top_k=2)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(moe(inputs)))
    >>> model(qmoe.encode(np.random.rand(3, 4), qubits)).shape
    TensorShape([3, 2])
    >>> moe.gate_weights(qmoe.encode(np.random.rand(3, 4), qubits)).shape  # [batch, n_experts]
    TensorShape([3, 4])

    Input shape: serialized circuits ``<string>[batch]`` (quantum data, or `qmoe_tfq.encode`), or
    float features ``[batch, n_features]``: with an `encoder`, or `AngleEncoder(qubits)` by default.
    Output shape: ``[batch, len(observables)]``. The gate adds its losses (load balancing, z-loss)
    through `add_loss` and router health (entropy, confidence, dropped pairs, unused experts) through
    metrics named after this layer.

    The layer is made of parts, each of which can be made, inspected and passed on its own::

        QMoELayer(qubits, experts=["quantum", my_circuit, keras.layers.Dense(4)],
                  router=QuantumRouter(Ansatz(layers=3), head=keras.layers.Dense(3)),
                  gate=TopK(1, balance="bias"), execution=Execution("noiseless"))

    Args:
        qubits: the qubits every part acts on (parts may use a subset).
        n_experts: the number of built-in experts (default 4), or ``len(experts)``.
        experts: one entry per expert: ``"quantum"`` (the built-in `ansatz`), an `Ansatz` or `QCNN`
            (built-in with that shape and depth), a `cirq.Circuit` (its symbols are its weights; it reads
            `observables`), a `tfq.layers.PQC`/`ExpertPQC` (its own operators, as many as
            `observables`) or a `tf_keras` layer on the float features.
        router: a `QuantumRouter` (default: the built-in ansatz read with `router_readouts`); an `Ansatz`,
            circuit or PQC (a `QuantumRouter` of it); or any `tf_keras` layer mapping features to E logits.
        gate: the routing policy: `TopK` (default ``TopK(top_k)``), `ExpertChoice` or `DenseGate`
            (default when `top_k` is None): it owns the load balancing, z-loss and router metrics.
        top_k: short for ``gate=TopK(top_k)``; None (and no gate) is dense routing.
        observables: what each expert reads; Z on each qubit by default.
        ansatz: the built-in experts' and router's circuit: an `Ansatz` (by default a CNOT ring, then ry and
            rz; 2 layers) or a `QCNN`.
        encoder: an `AngleEncoder` or `CircuitEncoder` for float features (angles go to the
            simulator with the weights; no circuit is built per sample).
        shared_experts: experts every sample always uses with weight 1 (DeepSeekMoE), besides the
            routed ones: a count of built-in experts, or a list of entries as for `experts`.
        reuploading: QMoE+ re-uploading: the encoder again before every layer of the built-in
            experts, scaled per expert, layer and feature (weight ``input_scaling`` [E, L, F], init 1).
        execution: where and how circuits run: an `Execution`, or a backend (``"auto"`` by default,
            ``"statevector"``, ``"noiseless"``, a Cirq sampler or simulator, an executor object).
        **kwargs: Keras layer arguments (``name``...) and settings (``temperature=0.5``,
            ``expert_layers=3``, ``backend="noiseless"``...), each making the part it belongs to when
            that part is not given: see `qmoe_tfq.settings`.

    QMoE+ coherent aggregation (one circuit holds router and experts) is the sibling layer
    `CoherentQMoELayer`.
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
        entries += shared_list(shared_experts)
        if made.depths is not None:  # expert_layers=[...]: each built-in expert its own depth
            if len(made.depths) != len(entries):
                raise ValueError(f"expert_layers has {len(made.depths)} depths but there are {len(entries)} experts.")
            entries = [dataclasses.replace(self.ansatz, layers=d) if e == QUANTUM else e
                       for e, d in zip(entries, made.depths)]
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
        # For the config: what the quantum router was made from (no layer here: attributes holding layers are tracked)
        self._router_circuit = made.router.circuit if quantum_router else None
        if isinstance(self._router_circuit, tfq.layers.PQC):
            self._router_circuit = PQC_ROUTER
        self.router_head = made.router.head if quantum_router else None  # before the experts: the weights' order
        with tf.name_scope(self.name):
            every_expert = make_experts(entries, self.builtin_expert, self.qubits, self.observables,
                                        **self.executor_args)
            self.experts, self.shared_experts = every_expert[:self.n_experts], every_expert[self.n_experts:]
            self.router = (made.router.make(self.qubits, self.n_experts, self.ansatz, **self.executor_args)
                           if quantum_router else made.router)
        self._quantum = [isinstance(e, ExpertPQC) for e in every_expert]
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

    def _why_features(self) -> str:
        parts = self._classical_parts()
        return f"{', '.join(parts)} are classical" if parts else f"it encodes them with {self.encoder.name}"

    def __call__(self, inputs, *args, **kwargs):
        self._adopt_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def _adopt_inputs(self, inputs: object) -> None:
        """Before the first build: float inputs without an encoder get `AngleEncoder(qubits)`."""
        if not self.built and self.encoder is None and feeds_features(inputs) and not self._classical_parts():
            self.encoder = AngleEncoder(self.qubits)

    def build(self, input_shape: tf.TensorShape) -> None:
        input_shape = tf.TensorShape(input_shape)
        # Decided once: features when there is an encoder or a classical part, else circuits.
        features = self.encoder is not None or self._classical_parts()
        self._inputs = InputReader.for_shape(self.name, self.qubits, self._executor, self.encoder, input_shape,
                                             self._why_features() if features else None)
        if features:
            check_output_widths(self._every_expert, self.router, self._inputs.n_features, self.n_readouts,
                                self.n_experts)
        if self.encoder is not None and not self.encoder.built:
            self.encoder.build(input_shape)
        data_circuit = cirq.Circuit() if self.encoder is None else self.encoder.circuit
        data_names = [] if self.encoder is None else decode_strings(self.encoder.symbol_names)
        table = self._expert_table(data_circuit, data_names)
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
        super().build(input_shape)

    def _expert_table(self, data_circuit: cirq.Circuit, data_names: list[str]) -> dispatch.ExpertTable:
        """Every quantum expert's program behind the data encoding (or re-uploading it per layer)."""
        for index, expert in enumerate(self._every_expert):
            if self._quantum[index]:
                dispatch.refuse_data_symbols(f"experts[{index}] ({expert.name})", decode_strings(expert.symbol_names),
                                             data_names)
        bodies = [data_circuit + e.model_circuit if q else None for q, e in zip(self._quantum, self._every_expert)]
        if self.reuploading:
            body, uploads = self.ansatz.reuploading(self.qubits, self.ansatz.layers, self.encoder.circuit,
                                                    EXPERT_PREFIX)
            bodies, data_names = [body] * len(bodies), [str(s) for s in uploads]
            self.input_scaling = self.add_weight(
                "input_scaling", shape=(len(bodies), self.ansatz.layers, self.encoder.n_features),
                initializer="ones", trainable=True)
        readouts = [e.readouts if q else None for q, e in zip(self._quantum, self._every_expert)]
        return dispatch.expert_table(bodies, readouts, data_names, self.qubits, self.noise, self.reuploading,
                                     self.gate.rows_per_sample + len(self.shared_experts))

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        batch = self._inputs.read(inputs)  # checked once; circuits prepared once for the executor
        route = self.gate(self._router.logits(batch), training=training)  # expert_index, combine_weights [B, k]
        return self._bank.outputs(dispatch.routed_rows(route), batch)  # <float32>[B, n_readouts]

    def route(self, inputs: tf.Tensor, training: bool = False) -> routing.Routing:
        """The routing decision for a batch (logits, probabilities, selected experts, weights)."""
        inputs = tf.convert_to_tensor(inputs)
        self._adopt_inputs(inputs)
        if not self.built:
            self.build(inputs.shape)
        return self.gate.select(self._router.logits(self._inputs.read(inputs)), training)

    def get_config(self) -> dict:
        entries = [e if isinstance(e, str) else {"ansatz": e.get_config()} if isinstance(e, BUILTINS)
                   else keras.layers.serialize(layer) for e, layer in zip(self._builtin, self._every_expert)]
        routed, shared = entries[:self.n_experts], entries[self.n_experts:]
        router = keras.layers.serialize(self.router)
        if self.quantum_router:
            from_pqc = self._router_circuit == PQC_ROUTER
            router = {"class_name": "QuantumRouter", "config": QuantumRouter(
                self.router if from_pqc else self._router_circuit, None if from_pqc else self.router.readouts,
                self.router_head).get_config()}
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
            router = config["router"]
            config["router"] = (QuantumRouter.from_config(router["config"], execution)
                                if router.get("class_name") == "QuantumRouter" else deserialize_part(router, execution))
            config["gate"] = deserialize_part(config["gate"], execution)
        for key in ("experts", "shared_experts"):
            if isinstance(config.get(key), list):
                config[key] = [deserialize_part(entry, execution) for entry in config[key]]
        return cls(**config)
