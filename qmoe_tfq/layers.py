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

from collections.abc import Callable, Sequence

import cirq
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq import dispatch, routing
from qmoe_tfq.circuits import (EXPERT_PREFIX, ROUTER_PREFIX, Ansatz, Observable, validate_observables,
                               validate_positive_int)
from qmoe_tfq.coherent import CoherentQMoELayer, coherent_arguments
from qmoe_tfq.encoding import AngleEncoder, FeatureEncoder
from qmoe_tfq.execution import Executor
from qmoe_tfq.execution.backends import Backend, Noise
from qmoe_tfq.execution.program import decode_strings
from qmoe_tfq.experts import (QUANTUM, ExpertPQC, Part, check_output_widths, deserialize_part, expert_depths,
                              expert_list, make_experts, shared_list)
from qmoe_tfq.gating import Gate
from qmoe_tfq.inputs import InputReader, feeds_features
from qmoe_tfq.mixture import MixtureLayer
from qmoe_tfq.routers import RouterLogits, make_router, router_readouts
from qmoe_tfq.routing import RoutingPolicy
from qmoe_tfq.serialization import to_cirq_json, upgrade_qmoe_config


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class QMoELayer(MixtureLayer):
    """Quantum mixture of experts: a router weights experts (PQCs or Keras layers), per input.

    The router's readouts, times a learned scale (or through ``router_head``), are the logits::

        gates   = softmax(logits / temperature)                          # [B, E]
        outputs = sum_e gates[:, e] * <expert_e readouts>                # [B, n_readouts]

    With ``top_k=k`` only the k largest gates are kept (renormalised) and only those experts run.
    Every quantum expert's rows go through one executor call per step, however different their
    circuits. Bring your own circuits: each entry of ``experts=`` is ``"quantum"`` (the built-in
    ansatz), a `cirq.Circuit` (its symbols are its weights; it reads `observables`), a
    `tfq.layers.PQC`/`ExpertPQC` (its own operators, as many as `observables`) or a `tf_keras`
    layer on the float features.

    >>> import qmoe_tfq as qmoe
    >>> qubits = cirq.GridQubit.rect(1, 4)
    >>> inputs = keras.Input(shape=(), dtype=tf.string)
    >>> moe = qmoe.QMoELayer(qubits, n_experts=4, expert_layers=2, router_layers=2, top_k=2)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(moe(inputs)))
    >>> model(qmoe.encode(np.random.rand(3, 4), qubits)).shape
    TensorShape([3, 2])
    >>> moe.gate_weights(qmoe.encode(np.random.rand(3, 4), qubits)).shape  # [batch, n_experts]
    TensorShape([3, 4])

    Input shape: serialized circuits ``<string>[batch]`` (quantum data, or `qmoe_tfq.encode`), or
    float features ``[batch, n_features]``: with an `encoder`, or `AngleEncoder(qubits)` by default.
    Output shape: ``[batch, len(observables)]``. Load balancing and z-loss go through `add_loss`;
    router health (entropy, confidence, dropped pairs, unused experts) through metrics.

    Args:
        qubits: the qubits every part acts on (parts may use a subset).
        n_experts: number of experts (default 4, or ``len(experts)``).
        expert_layers: depth of the built-in experts: one int, or one per expert (routed, then shared).
        router_layers: depth of the built-in router.
        top_k, temperature, router_noise, capacity_factor, load_balance_weight, z_loss_weight: the
            gating policy, see `routing.RoutingPolicy`: dense or top-k; softmax temperature; std of
            the logits' noise in training; None or ``ceil(capacity_factor * B * k / E)`` pairs per
            expert (first choices first, dropped pairs contribute nothing); aux-loss weights.
        routing: ``"top_k"`` (each sample chooses experts) or ``"expert_choice"`` (each expert takes
            its ``ceil(capacity_factor * B * k / E)`` best samples of the batch; k = ``top_k`` or 1,
            ``capacity_factor`` 2 unless given).
        balance: ``"aux_loss"`` (the Switch loss, `load_balance_weight`) or ``"bias"`` (DeepSeek-V3:
            a non-trainable per-expert bias added to the logits for selection only, moved by
            ``bias_rate`` towards under-used experts after every training step).
        metrics: ``"summary"`` (routing entropy, router confidence, dropped pairs, unused experts,
            and the aux losses whose weight is > 0), ``"per_expert"`` (also each expert's share) or
            ``"none"`` (the aux losses still train).
        shared_experts: experts every sample always uses with weight 1 (DeepSeekMoE), besides the
            routed ones: a count of built-in experts, or a list of entries as for `experts`.
        observables: expert readouts; Z on each qubit by default.
        rotations, entangler, entangle_first: the built-in experts' and router's `Ansatz`: by default
            each layer is a CNOT ring, then the rotations.
        encoder: an `AngleEncoder` or `CircuitEncoder` for float features (angles go to the
            simulator with the weights; no circuit is built per sample).
        reuploading: QMoE+ re-uploading: the encoder again before every built-in expert layer,
            scaled per expert, layer and feature (weight ``input_scaling`` [E, L, F], init 1).
        experts: one entry per expert, as above.
        router: None (the built-in ansatz), a `cirq.Circuit` (read with `router_observables`), a
            `tfq.layers.PQC`/`ExpertPQC`, or any `tf_keras` layer mapping features to E logits.
        router_observables: readouts of a quantum router; `router_readouts(qubits, E)` by default:
            neighbouring Z Z correlators first, which entangled (quantum-data) inputs carry.
        router_head: a `tf_keras` layer mapping the quantum router's readouts to E logits (e.g.
            ``Dense(n_experts)``, the hybrid QMoE router); then any number of router readouts works.
        backend, repetitions, differentiator, noise: where and how circuits run (`qmoe_tfq.execution`).

    QMoE+ coherent aggregation (one circuit holds router and experts) is the sibling layer
    `CoherentQMoELayer`.
    """

    def __init__(self, qubits: Sequence[cirq.Qid], n_experts: int | None = None,
                 expert_layers: int | Sequence[int] = 2, router_layers: int = 2, *, top_k: int | None = None,
                 temperature: float = 1.0, observables: Sequence[Observable] | None = None,
                 rotations: Sequence[str] = Ansatz.rotations, entangler: str = Ansatz.entangler,
                 entangle_first: bool = Ansatz.entangle_first,
                 encoder: FeatureEncoder | None = None, reuploading: bool = False,
                 router_noise: float = 0.0, capacity_factor: float | None = None, load_balance_weight: float = 1e-2,
                 z_loss_weight: float = 1e-3, backend: Backend | Executor = "auto",
                 repetitions: int | None = None, differentiator: tfq.differentiators.Differentiator | None = None,
                 noise: Noise | None = None, experts: Sequence[Part] | None = None, router: Part | None = None,
                 router_observables: Sequence[Observable] | None = None,
                 router_head: keras.layers.Layer | None = None, routing: str = "top_k",
                 balance: str = "aux_loss", bias_rate: float = 0.1, metrics: str = "summary",
                 shared_experts: int | Sequence[Part] = 0, **kwargs) -> None:
        super().__init__(qubits, observables, Ansatz(rotations, entangler, entangle_first), encoder, backend,
                         repetitions, differentiator, noise, **kwargs)
        parts = expert_list(experts, n_experts)
        self.n_experts = len(parts)
        shared = shared_list(shared_experts)
        self.expert_layers = expert_depths(expert_layers, self.n_experts + len(shared))
        self.router_layers = validate_positive_int(router_layers, "router_layers")
        self.policy = RoutingPolicy(self.n_experts, top_k, temperature, router_noise, capacity_factor,
                                    load_balance_weight, z_loss_weight, routing, balance, bias_rate, metrics)
        self.gate = Gate(self.policy, self.name, name="gate")
        if reuploading and (self.encoder is None or not isinstance(self.expert_layers, int)
                            or any(p != QUANTUM for p in parts)):
            raise ValueError("reuploading=True re-encodes float features before every layer of the built-in "
                             "experts: pass encoder=qmoe_tfq.AngleEncoder(qubits), one int expert_layers and "
                             "only 'quantum' experts.")
        if router_head is not None and not isinstance(router_head, keras.layers.Layer):
            raise TypeError(f"router_head must be None or a tf_keras layer, got {router_head!r}.")
        self.reuploading, self.router_head = bool(reuploading), router_head
        with tf.name_scope(self.name):
            every_expert = make_experts(parts + shared, self._builtin_expert, self.qubits, self.observables,
                                        **self.executor_args)
            self.experts, self.shared_experts = every_expert[:self.n_experts], every_expert[self.n_experts:]
            self.router = make_router(router, self.qubits, self._router_observables(router_observables),
                                      lambda: self.ansatz.circuit(self.qubits, self.router_layers, ROUTER_PREFIX),
                                      self.n_experts, router_head is not None, **self.executor_args)
        self._builtin = [isinstance(p, str) for p in parts + shared]
        self._builtin_router = router is None
        self._quantum = [isinstance(e, ExpertPQC) for e in every_expert]
        if self.encoder is None and (any(self._quantum) or self.quantum_router) and self._classical_parts():
            self.encoder = AngleEncoder(self.qubits)  # classical parts need features; quantum ones encode them

    def _router_observables(self, given: Sequence[Observable] | None) -> Callable[[], list[cirq.PauliSum]]:
        """The readouts a router circuit is read with, made only if one is needed (a PQC brings its own)."""
        if given is not None:
            return lambda: validate_observables(given, self.qubits, "router_observables")
        return lambda: router_readouts(self.qubits, self.n_experts)

    def _builtin_expert(self, index: int) -> ExpertPQC:
        return self.builtin_expert(index, self.expert_layers if isinstance(self.expert_layers, int)
                                   else self.expert_layers[index])

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
        n_features = None
        if self.encoder is not None or self._classical_parts():
            if input_shape.rank != 2 or input_shape[-1] is None:
                raise ValueError(f"{self.name} takes float features [batch, n_features] ({self._why_features()}), "
                                 f"got inputs of shape {input_shape}.")
            n_features = int(input_shape[-1])
            check_output_widths(self._every_expert, self.router, n_features, self.n_readouts, self.n_experts)
        if self.encoder is not None and not self.encoder.built:
            self.encoder.build(input_shape)
        self._inputs = InputReader(self.name, self.qubits, self._executor, self.encoder, n_features,
                                   self._why_features() if n_features else "")
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
            body, uploads = self.ansatz.reuploading(self.qubits, self.expert_layers, self.encoder.circuit,
                                                    EXPERT_PREFIX)
            bodies, data_names = [body] * len(bodies), [str(s) for s in uploads]
            self.input_scaling = self.add_weight(
                "input_scaling", shape=(len(bodies), self.expert_layers, self.encoder.n_features),
                initializer="ones", trainable=True)
        readouts = [e.readouts if q else None for q, e in zip(self._quantum, self._every_expert)]
        return dispatch.expert_table(bodies, readouts, data_names, self.qubits, self.noise, self.reuploading,
                                     self.policy.rows_per_sample + len(self.shared_experts))

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
        policy = self.policy
        custom = not all(self._builtin[:self.n_experts])
        serialize = keras.layers.serialize
        return {
            **super().get_config(), "n_experts": self.n_experts,
            "expert_layers": self.expert_layers, "router_layers": self.router_layers, "top_k": policy.top_k,
            "temperature": policy.temperature, "reuploading": self.reuploading,
            "experts": [QUANTUM if b else serialize(e) for b, e in zip(self._builtin, self.experts)] if custom else None,
            "shared_experts": len(self.shared_experts) if all(self._builtin[self.n_experts:]) else [
                QUANTUM if b else serialize(e) for b, e in zip(self._builtin[self.n_experts:], self.shared_experts)],
            "router": None if self._builtin_router else serialize(self.router),
            "router_observables": to_cirq_json(list(self.router.readouts))
            if self._builtin_router and self.quantum_router else None,
            "router_head": None if self.router_head is None else serialize(self.router_head),
            "router_noise": policy.router_noise, "capacity_factor": policy.capacity_factor,
            "load_balance_weight": policy.load_balance_weight, "z_loss_weight": policy.z_loss_weight,
            "routing": policy.routing, "balance": policy.balance, "bias_rate": policy.bias_rate,
            "metrics": policy.metrics,
        }

    @classmethod
    def from_config(cls, config: dict) -> QMoELayer | CoherentQMoELayer:
        config, execution, version = cls.read_config(config, cls.__name__, ("router_observables",))
        upgrade_qmoe_config(config, version, lambda: router_readouts(config["qubits"], config["n_experts"], "pauli"))
        if config.pop("aggregation", "classical") == "coherent":  # formats 1-3: a mode of this layer
            return CoherentQMoELayer(**coherent_arguments(config))
        for key in ("router", "router_head"):
            if config.get(key) is not None:
                config[key] = deserialize_part(config[key], execution)
        for key in ("experts", "shared_experts"):
            if isinstance(config.get(key), list):
                config[key] = [deserialize_part(entry, execution) for entry in config[key]]
        return cls(**config)
