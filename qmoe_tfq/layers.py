"""Keras layers: `ExpertPQC` (a savable `tfq.layers.PQC`) and `QMoELayer` (router + experts).

One call of `QMoELayer` runs, left to right::

    inputs ──► programs ──► router (one op call) ──► Routing ──► dispatch rows ──► experts
    (one op call over every routed (sample, expert) pair) ──► combine ──► outputs [B, n_readouts]

Experts share one ansatz and one set of symbol names; each owns its weights. The layer stacks
those weights ``[E, n_symbols]`` and gathers one row per routed pair, so a single TFQ op serves
the whole batch and experts that no sample was routed to are never simulated.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cirq
import numpy as np
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq import routing
from qmoe_tfq.backends import Backend, CircuitExecutor, Noise, apply_noise, validate_noise
from qmoe_tfq.circuits import (
    Observable,
    ancilla_register,
    basis_bits,
    basis_projectors,
    controlled,
    default_readouts,
    rename_symbols,
    hardware_efficient_ansatz,
    reuploading_ansatz,
    router_readouts,
    validate_observables,
    validate_positive_int,
    validate_qubits,
    validate_rotations,
)
from qmoe_tfq.encoding import AngleEncoder
from qmoe_tfq.hybrid import QUANTUM, ClassicalExpert
from qmoe_tfq.serialization import FORMAT_VERSION, read_layer_config, to_cirq_json

EXPERT_PREFIX = "theta"
ROUTER_PREFIX = "route"
AGGREGATIONS = ("classical", "coherent")


def _execution_config(backend: Backend, repetitions: int | None, noise: Noise | None) -> dict:
    """The backend part of a layer config.

    Cirq samplers and simulators are run-time choices that do not travel in a config: a layer
    that ran on one reloads on the exact, noiseless simulator until it is given a backend again.
    """
    if not isinstance(backend, str):
        return {"backend": "noiseless", "repetitions": None, "noise": None}
    return {"backend": backend, "repetitions": repetitions,
            "noise": None if noise is None else to_cirq_json(noise)}


def _circuit_batch(inputs: tf.Tensor, layer: str) -> tf.Tensor:
    """Checks serialized circuits <string>[batch] (or [batch, 1]) and returns them as [batch]."""
    if inputs.dtype != tf.string:
        raise TypeError(
            f"{layer} expects serialized circuits <string>[batch] (from tfq.convert_to_tensor or "
            f"qmoe_tfq.encode), got a tensor of dtype {inputs.dtype.name}.")
    if inputs.shape.rank == 2 and inputs.shape[1] == 1:
        inputs = tf.squeeze(inputs, axis=1)
    if inputs.shape.rank != 1:
        raise ValueError(f"{layer} expects circuits of shape [batch] or [batch, 1], got {inputs.shape}.")
    return inputs


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class ExpertPQC(tfq.layers.PQC):
    """A `tfq.layers.PQC` that saves and reloads, and that `QMoELayer` can evaluate fused.

    It is a `tfq.layers.PQC` in every way a user sees (``symbols``, ``symbol_values()``, the
    ``parameters`` weight, same input and output), with three differences:

    * `get_config`/`from_config` work: the circuit and operators travel as Cirq JSON;
    * it evaluates through one differentiable TFQ op (`CircuitExecutor`) rather than TFQ's
      ``Expectation`` sub-layer, which cannot be exported as a SavedModel;
    * each instance gets a fresh initializer, so experts do not all start from the same weights
      (PQC's default initializer is one shared, unseeded instance).

    >>> qubits = cirq.GridQubit.rect(1, 2)
    >>> expert = ExpertPQC(hardware_efficient_ansatz(qubits, 1), default_readouts(qubits))
    >>> expert(qmoe_tfq.encode(np.array([[0.3, 0.7]]), qubits)).shape
    TensorShape([1, 2])

    Args:
        model_circuit: `cirq.Circuit` with sympy symbols; one trainable weight per symbol.
        operators: `cirq.PauliSum`/`cirq.PauliString` or a list of them, measured at the end.
        backend: ``"noiseless"``, ``"noisy"``, or a Cirq sampler/simulator (see `backends`).
        repetitions: shots (sampler) or trajectories (``"noisy"``); None for exact expectations.
        noise: a `cirq.NoiseModel` or channel (``cirq.depolarize(0.01)``) applied to the model
            circuit; needs ``backend="noisy"`` or a Cirq backend.
        differentiator: a `tfq.differentiators.Differentiator`; Adjoint when exact, else
            ParameterShift.
        initializer, regularizer, constraint: as for `tfq.layers.PQC`; the initializer defaults to
            a new ``RandomUniform(0, 2 pi)``.
    """

    def __init__(self, model_circuit: cirq.Circuit, operators: Observable | Sequence[Observable], *,
                 backend: Backend = "noiseless", repetitions: int | None = None,
                 differentiator: tfq.differentiators.Differentiator | None = None,
                 noise: Noise | None = None,
                 initializer: keras.initializers.Initializer | str | None = None,
                 regularizer: keras.regularizers.Regularizer | str | None = None,
                 constraint: keras.constraints.Constraint | str | None = None, **kwargs) -> None:
        validate_noise(noise, backend)
        if initializer is None:
            initializer = keras.initializers.RandomUniform(0.0, 2.0 * np.pi)
        # PQC creates its weight here, outside any layer's name scope; scoping by the layer name keeps
        # weight names unique (``expert_3/parameters``), which the HDF5 format requires.
        with tf.name_scope(kwargs.get("name") or "expert_pqc"):
            super().__init__(apply_noise(model_circuit, noise), operators, initializer=initializer,
                             regularizer=regularizer, constraint=constraint, **kwargs)
        self.model_circuit = model_circuit
        self.noise = noise
        self.readouts = tuple(validate_observables(operators, sorted(model_circuit.all_qubits()), "operators"))
        self.backend = backend
        self.repetitions = repetitions
        self.executor = CircuitExecutor(backend, repetitions, differentiator)

    @property
    def program(self) -> tf.Tensor:
        """<string>[1] the serialized model circuit (with its noise channels)."""
        return self._model_circuit

    @property
    def symbol_names(self) -> tf.Tensor:
        """<string>[n_symbols] symbol names, in the order of ``parameters``."""
        return self._symbols

    @property
    def operator_tensor(self) -> tf.Tensor:
        """<string>[1, n_operators] serialized readout operators."""
        return self._operators

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        inputs = _circuit_batch(inputs, self.name)
        batch = tf.shape(inputs)[0]
        programs = tfq.append_circuit(inputs, tf.tile(self._model_circuit, [batch]))
        values = tf.tile(self.parameters[None, :], [batch, 1])
        return self.executor(programs, self._symbols, values, self._operators)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "model_circuit": to_cirq_json(self.model_circuit),
            "operators": to_cirq_json(list(self.readouts)),
            **_execution_config(self.backend, self.repetitions, self.noise),
            "initializer": keras.initializers.serialize(self.initializer),
            "regularizer": keras.regularizers.serialize(self.regularizer),
            "constraint": keras.constraints.serialize(self.constraint),
            "format_version": FORMAT_VERSION,
        }

    @classmethod
    def from_config(cls, config: dict) -> ExpertPQC:
        config = read_layer_config(config, cls.__name__, ("model_circuit", "operators", "noise"))
        config["initializer"] = keras.initializers.deserialize(config["initializer"])
        config["regularizer"] = keras.regularizers.deserialize(config["regularizer"])
        config["constraint"] = keras.constraints.deserialize(config["constraint"])
        return cls(**config)


class _Programs(NamedTuple):
    """What the router and the experts evaluate for one batch (B samples, F data symbols)."""

    expert: tf.Tensor  # <string>[B] per-sample expert programs
    router: tf.Tensor  # <string>[B] per-sample router programs
    expert_names: tf.Tensor  # <string>[F + n_expert_symbols]
    router_names: tf.Tensor  # <string>[F + n_router_symbols]
    data_values: tf.Tensor  # <float32>[B, F] encoded angles (F = 0 for circuit inputs)
    features: tf.Tensor | None  # <float32>[B, F] raw features for classical parts (None for circuits)


def _check_coherent(n_experts: int, encoder: AngleEncoder | None, top_k: int | None,
                    capacity_factor: float | None, reuploading: bool) -> None:
    if n_experts < 2 or n_experts & (n_experts - 1):
        raise ValueError(f"aggregation='coherent' addresses experts by the basis states of a qubit "
                         f"register, so n_experts must be a power of two >= 2, got {n_experts}.")
    if encoder is None:
        raise ValueError("aggregation='coherent' uploads float features into the router register: "
                         "pass encoder=qmoe_tfq.AngleEncoder(qubits).")
    if top_k is not None or capacity_factor is not None or reuploading:
        raise ValueError("aggregation='coherent' mixes every expert in one circuit: it takes no top_k, "
                         "capacity_factor or reuploading.")


def _expert_kinds(experts: Sequence[str | keras.layers.Layer] | None,
                  n_experts: int | None) -> tuple[list[str | keras.layers.Layer], int]:
    """The expert list (``"quantum"`` or a classical layer per expert) and its length, checked."""
    if experts is None:
        n_experts = 4 if n_experts is None else n_experts
        return [QUANTUM] * validate_positive_int(n_experts, "n_experts"), n_experts
    if isinstance(experts, (str, keras.layers.Layer)) or not isinstance(experts, Sequence):
        raise TypeError(f"experts must be a list of 'quantum' or tf_keras layers, got {experts!r}.")
    experts = list(experts)
    if not experts:
        raise ValueError("experts is empty; give at least one expert ('quantum' or a tf_keras layer).")
    for index, expert in enumerate(experts):
        if isinstance(expert, ExpertPQC) or not (expert == QUANTUM or isinstance(expert, keras.layers.Layer)):
            raise TypeError(f"experts[{index}] = {expert!r} is neither 'quantum' (a PQC expert built from the "
                            "layer's ansatz options) nor a classical tf_keras layer.")
    if n_experts is not None and n_experts != len(experts):
        raise ValueError(f"n_experts={n_experts} but experts has {len(experts)} entries.")
    layers = [e for e in experts if e != QUANTUM]
    if len({id(e) for e in layers}) != len(layers):
        raise ValueError("experts contains the same layer object twice; give each expert its own layer.")
    return experts, len(experts)


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class QMoELayer(keras.layers.Layer):
    """Quantum mixture of experts: a PQC router weights PQC experts, per input.

    Each of the `n_experts` experts is an `ExpertPQC` (a `tfq.layers.PQC`) over the same
    hardware-efficient ansatz with its own weights; the router is an `ExpertPQC` over its own
    ansatz whose `n_experts` readouts, times a learned scale, are the gating logits::

        gates   = softmax(logit_scale * <router readouts> / temperature)        # [B, E]
        outputs = sum_e gates[:, e] * <expert_e readouts>                       # [B, n_readouts]

    With ``top_k=k`` only the k largest gates are kept (renormalised) and only those experts are
    simulated for that sample. Inputs are serialized circuits ``<string>[batch]`` (quantum data, or
    classical data through `qmoe_tfq.encode`), or float features ``[batch, n_features]`` when an
    `encoder` is given.

    >>> import qmoe_tfq as qmoe
    >>> qubits = cirq.GridQubit.rect(1, 4)
    >>> inputs = keras.Input(shape=(), dtype=tf.string)
    >>> moe = qmoe.QMoELayer(qubits, n_experts=4, expert_layers=2, router_layers=2, top_k=2)
    >>> outputs = keras.layers.Dense(2, activation="softmax")(moe(inputs))
    >>> model = keras.Model(inputs, outputs)
    >>> model(qmoe.encode(np.random.rand(3, 4), qubits)).shape
    TensorShape([3, 2])
    >>> moe.gate_weights(qmoe.encode(np.random.rand(3, 4), qubits)).shape  # [batch, n_experts]
    TensorShape([3, 4])

    Auxiliary terms go through `add_loss` (load balancing, router z-loss) and `add_metric`
    (those two and each expert's routed fraction), so they show in ``fit`` logs.

    Args:
        qubits: the qubits of the experts' and router's circuits.
        n_experts: number of experts, >= 1.
        expert_layers: ansatz depth of each expert.
        router_layers: ansatz depth of the router.
        top_k: None for dense routing (every expert, softmax gates), or k in 1..n_experts.
        temperature: softmax temperature of the gates (> 0); lower is sharper.
        observables: expert readouts, a list of `cirq.PauliSum`; Z on each qubit by default.
        rotations, entangler: ansatz options, see `hardware_efficient_ansatz`.
        encoder: an `AngleEncoder` to accept float features; its angles are fed to the simulator
            with the weights, so no circuit is built per sample.
        reuploading: QMoE+ data re-uploading experts: the encoder runs again before every expert
            layer, with a learnable scale per expert, layer and feature (the ``input_scaling``
            weight ``[E, expert_layers, n_features]``, initialised to 1). Needs `encoder`; the
            router still encodes once.
        aggregation: ``"classical"`` (default: gates weight the experts' readouts) or
            ``"coherent"`` (QMoE+): the router is a circuit on a register of log2(n_experts)
            extra qubits (features re-uploaded before each router layer), every expert acts
            controlled on its basis state of that register, and one circuit per sample measures
            ``sum_e p_e(x) <O>_e(x)`` with the register's Born probabilities ``p_e`` as gates.
            Needs `encoder`, dense routing, no capacity, and a power-of-two `n_experts`.
        router_noise: std of Gaussian noise added to the logits while training (exploration).
        capacity_factor: None (no limit), or each expert takes at most
            ``ceil(capacity_factor * B * k / E)`` (sample, expert) pairs per batch; pairs over
            capacity are dropped (first choices of all samples have priority over second choices,
            then batch order) and contribute nothing, without renormalising the others.
        load_balance_weight: weight of the Switch load-balancing loss (0 turns it off).
        z_loss_weight: weight of the router z-loss (0 turns it off).
        experts: hybrid mixtures: a list with one entry per expert, each ``"quantum"`` (an
            `ExpertPQC` built from the ansatz options) or any `tf_keras` layer mapping the float
            features to ``len(observables)`` outputs (e.g. `hybrid.ClassicalExpert`). Classical
            experts need float features. Default: `n_experts` quantum experts.
        router: None for the PQC router, or any `tf_keras` layer mapping the float features to
            `n_experts` logits (e.g. ``Dense(n_experts)``). Gates, top-k, noise, capacity and the
            auxiliary losses work the same way for every combination.
        backend, repetitions, differentiator: where circuits run, see `backends.CircuitExecutor`;
            a `hardware.DeviceSampler` runs them on a Google processor or its virtual machine.
        noise: a `cirq.NoiseModel` or channel applied to the router and expert circuits (and the
            encoder's), e.g. ``cirq.depolarize(0.01)``; needs ``backend="noisy"`` or a Cirq backend.
    """

    def __init__(self, qubits: Sequence[cirq.Qid], n_experts: int | None = None, expert_layers: int = 2,
                 router_layers: int = 2, *, top_k: int | None = None, temperature: float = 1.0,
                 observables: Sequence[Observable] | None = None,
                 rotations: Sequence[str] = ("ry", "rz"), entangler: str = "ring",
                 encoder: AngleEncoder | None = None, reuploading: bool = False,
                 aggregation: str = "classical",
                 router_noise: float = 0.0,
                 capacity_factor: float | None = None, load_balance_weight: float = 1e-2,
                 z_loss_weight: float = 1e-3, backend: Backend = "noiseless",
                 repetitions: int | None = None,
                 differentiator: tfq.differentiators.Differentiator | None = None,
                 noise: Noise | None = None,
                 experts: Sequence[str | keras.layers.Layer] | None = None,
                 router: keras.layers.Layer | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.qubits = validate_qubits(qubits)
        experts, n_experts = _expert_kinds(experts, n_experts)
        if router is not None and not isinstance(router, keras.layers.Layer):
            raise TypeError(f"router must be None (the PQC router) or a tf_keras layer, got {router!r}.")
        self.n_experts = validate_positive_int(n_experts, "n_experts")
        self.expert_layers = validate_positive_int(expert_layers, "expert_layers")
        self.router_layers = validate_positive_int(router_layers, "router_layers")
        self.rotations = validate_rotations(rotations)
        routing.validate_routing(n_experts, top_k, temperature, router_noise, capacity_factor,
                                 load_balance_weight, z_loss_weight)
        if encoder is not None and not isinstance(encoder, AngleEncoder):
            raise TypeError(f"encoder must be None or a qmoe_tfq.AngleEncoder, got {encoder!r}.")
        if encoder is not None and not set(encoder.qubits) <= set(self.qubits):
            raise ValueError(
                f"encoder qubits {[str(q) for q in encoder.qubits]} must be among the layer's "
                f"qubits {[str(q) for q in self.qubits]}.")
        if reuploading and encoder is None:
            raise ValueError("reuploading=True re-encodes float features before every expert layer: "
                             "pass encoder=qmoe_tfq.AngleEncoder(qubits) too.")
        self.reuploading = bool(reuploading)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation={aggregation!r} is not allowed; use one of {AGGREGATIONS}.")
        if aggregation == "coherent":
            _check_coherent(n_experts, encoder, top_k, capacity_factor, reuploading)
            if router is not None or any(kind != QUANTUM for kind in experts):
                raise ValueError("aggregation='coherent' controls quantum experts with a quantum router; "
                                 "it takes no classical experts or router.")
        self.aggregation = aggregation
        self.top_k = top_k
        self.temperature = float(temperature)
        self.entangler = entangler
        self.encoder = encoder
        self.router_noise = float(router_noise)
        self.capacity_factor = capacity_factor
        self.load_balance_weight = float(load_balance_weight)
        self.z_loss_weight = float(z_loss_weight)
        self.backend = backend
        self.repetitions = repetitions
        self.noise = noise
        self.observables = validate_observables(
            default_readouts(self.qubits) if observables is None else observables, self.qubits,
            "observables")

        expert_circuit = hardware_efficient_ansatz(self.qubits, expert_layers, EXPERT_PREFIX, rotations, entangler)
        router_qubits, router_observables = self.qubits, router_readouts(self.qubits, n_experts)
        if aggregation == "coherent":
            self.register = ancilla_register(self.qubits, n_experts.bit_length() - 1)
            router_qubits, router_observables = self.register, basis_projectors(self.register)
        router_circuit = hardware_efficient_ansatz(router_qubits, router_layers, ROUTER_PREFIX, rotations, entangler)
        executor_args = {"backend": backend, "repetitions": repetitions, "differentiator": differentiator}
        with tf.name_scope(self.name):
            self.experts = [
                ExpertPQC(expert_circuit, self.observables, name=f"expert_{i}", noise=noise, **executor_args)
                if kind == QUANTUM else kind for i, kind in enumerate(experts)]
            self.router = router or ExpertPQC(router_circuit, router_observables, name="router", noise=noise,
                                              **executor_args)
        # The experts' shared program parts, whichever experts are quantum (PQC sorts its symbols by name).
        self._expert_circuit = expert_circuit
        self._expert_symbol_names = tf.constant(sorted(str(s) for s in cirq.parameter_symbols(expert_circuit)))
        self._readout_tensor = tfq.convert_to_tensor([self.observables])
        self._quantum = [i for i, kind in enumerate(experts) if kind == QUANTUM]
        self._classical = [i for i, kind in enumerate(experts) if kind != QUANTUM]
        self._custom_parts = any(kind != QUANTUM for kind in experts) or router is not None
        # One executor for the fused expert rows; the router runs on its own.
        self._expert_executor = CircuitExecutor(**executor_args)

    @property
    def n_readouts(self) -> int:
        return len(self.observables)

    @property
    def quantum_router(self) -> bool:
        return isinstance(self.router, ExpertPQC)

    def _classical_parts(self) -> list[str]:
        parts = [f"experts[{i}] ({self.experts[i].name})" for i in self._classical]
        return parts + ([] if self.quantum_router else [f"router ({self.router.name})"])

    def _check_classical_widths(self, n_features: int) -> None:
        """Builds the classical parts on [batch, n_features] and checks their output widths."""
        probe = tf.zeros([1, n_features])
        for index in self._classical:
            width = self.experts[index](probe).shape[-1]
            if width != self.n_readouts:
                raise ValueError(
                    f"experts[{index}] ({self.experts[index].name}) outputs {width} values per sample, but "
                    f"every expert must output len(observables) = {self.n_readouts}.")
        if not self.quantum_router:
            width = self.router(probe).shape[-1]
            if width != self.n_experts:
                raise ValueError(f"router ({self.router.name}) outputs {width} logits per sample, but the "
                                 f"layer has n_experts = {self.n_experts}.")

    def build(self, input_shape: tf.TensorShape) -> None:
        input_shape = tf.TensorShape(input_shape)
        if self.aggregation == "classical" and self.quantum_router:
            self.logit_scale = self.add_weight(
                "logit_scale", shape=(), initializer=keras.initializers.Constant(3.0), trainable=True)
        if self._classical_parts() and input_shape.rank == 2 and input_shape[-1] is not None:
            self._check_classical_widths(int(input_shape[-1]))
        if self.encoder is not None and input_shape.rank == 2 and input_shape[-1] != 1:
            if not self.encoder.built:
                self.encoder.build(input_shape)
            expert_circuit = self.encoder.circuit + self._expert_circuit
            self._expert_data_names = self.encoder.symbol_names
            if self.reuploading:
                expert_circuit, uploads = reuploading_ansatz(
                    self.qubits, self.expert_layers, self.encoder.circuit, EXPERT_PREFIX, self.rotations,
                    self.entangler)
                self._expert_data_names = tf.constant([str(s) for s in uploads])
                self.input_scaling = self.add_weight(
                    "input_scaling", shape=(self.n_experts, self.expert_layers, self.encoder.n_features),
                    initializer="ones", trainable=True)
            self._fused_expert_program = tfq.convert_to_tensor([apply_noise(expert_circuit, self.noise)])
            if self.quantum_router:
                self._fused_router_program = tfq.convert_to_tensor(
                    [apply_noise(self.encoder.circuit + self.router.model_circuit, self.noise)])
            if self.aggregation == "coherent":
                self._build_coherent()
        super().build(input_shape)

    def _build_coherent(self) -> None:
        """Programs of coherent aggregation: the router on the register, then controlled experts."""
        n_features = self.encoder.n_features
        slots = -(-n_features // len(self.register))  # rotations per register qubit to hold every feature
        register_encoder = AngleEncoder(self.register, rotations=("ry", "rz") * (-(-slots // 2)),
                                        scale=self.encoder.scale, n_features=n_features)
        router_circuit, uploads = reuploading_ansatz(
            self.register, self.router_layers, register_encoder.circuit, ROUTER_PREFIX, self.rotations,
            self.entangler)
        width = len(self.register)
        experts = [controlled(rename_symbols(expert.model_circuit, f"e{index:02d}"), self.register,
                              basis_bits(index, width))
                   for index, expert in enumerate(self.experts)]
        self._fused_router_program = tfq.convert_to_tensor([apply_noise(router_circuit, self.noise)])
        self._router_upload_names = tf.constant([str(s) for s in uploads])
        self._coherent_program = tfq.convert_to_tensor(
            [apply_noise(self.encoder.circuit + router_circuit + sum(experts, cirq.Circuit()), self.noise)])
        expert_names = [f"e{index:02d}_{name}" for index in range(self.n_experts)
                        for name in self._expert_symbol_names.numpy().astype(str)]
        self._coherent_names = tf.concat(
            [self.encoder.symbol_names, self._router_upload_names, self.router.symbol_names,
             tf.constant(expert_names)], axis=0)

    def _programs(self, inputs: tf.Tensor) -> _Programs:
        """Per-sample programs and data symbol values, for circuit or float-feature inputs."""
        router = self.router
        if inputs.dtype == tf.string:
            if self._classical_parts():
                raise TypeError(
                    f"{self.name}: {', '.join(self._classical_parts())} are classical and need float features, "
                    "but the input is circuits; feed features (with an encoder for the quantum parts).")
            if self.reuploading or self.aggregation == "coherent":
                raise TypeError(f"{self.name} uploads float features more than once (reuploading or "
                                "coherent aggregation) and cannot take circuits; feed the features.")
            circuits = _circuit_batch(inputs, self.name)
            batch = tf.shape(circuits)[0]
            return _Programs(
                expert=tfq.append_circuit(circuits, tf.tile(self.experts[0].program, [batch])),
                router=tfq.append_circuit(circuits, tf.tile(router.program, [batch])),
                expert_names=self._expert_symbol_names, router_names=router.symbol_names,
                data_values=tf.zeros([batch, 0]), features=None)
        if not (inputs.dtype.is_floating or inputs.dtype.is_integer):
            raise TypeError(
                f"{self.name} expects serialized circuits <string>[batch] or float features "
                f"[batch, n_features], got a tensor of dtype {inputs.dtype.name}.")
        features = tf.cast(inputs, tf.float32)
        batch = tf.shape(inputs)[0]
        if self.encoder is None:
            if self._quantum or self.quantum_router:
                raise TypeError(
                    f"{self.name} got float features of shape {inputs.shape} but has no encoder: pass "
                    "encoder=qmoe_tfq.AngleEncoder(qubits), or feed circuits from qmoe_tfq.encode(x, qubits).")
            return _Programs(None, None, None, None, tf.zeros([batch, 0]), features)
        if inputs.shape.rank != 2 or inputs.shape[-1] != self.encoder.n_features:
            raise ValueError(
                f"{self.name} expects float features of shape [batch, {self.encoder.n_features}], "
                f"got {inputs.shape}.")
        if self.aggregation == "coherent":
            return _Programs(
                expert=self._coherent_program, router=tf.tile(self._fused_router_program, [batch]),
                expert_names=self._coherent_names,
                router_names=tf.concat([self._router_upload_names, router.symbol_names], 0),
                data_values=tf.tile(self.encoder.angles(inputs), [1, self.router_layers]), features=features)
        return _Programs(
            expert=tf.tile(self._fused_expert_program, [batch]),
            router=tf.tile(self._fused_router_program, [batch]) if self.quantum_router else None,
            expert_names=tf.concat([self._expert_data_names, self._expert_symbol_names], 0),
            router_names=tf.concat([self.encoder.symbol_names, router.symbol_names], 0)
            if self.quantum_router else None,
            data_values=self.encoder.angles(inputs), features=features)

    def _route(self, programs: _Programs, training: bool | None) -> routing.Routing:
        batch = tf.shape(programs.data_values)[0]
        if self.quantum_router:
            # router_values <float32>[B, F + n_router_symbols] (coherent: F per router layer)
            router_values = tf.concat(
                [programs.data_values, tf.tile(self.router.parameters[None, :], [batch, 1])], axis=1)
            readouts = self.router.executor(
                programs.router, programs.router_names, router_values, self.router.operator_tensor)
        if self.aggregation == "coherent":
            # readouts are the register's Born probabilities: they are the gates.
            probabilities = tf.maximum(readouts, 0.0)
            probabilities /= tf.reduce_sum(probabilities, axis=-1, keepdims=True)
            expert_index, combine_weights = routing.select_experts(probabilities, None)
            return routing.Routing(tf.math.log(probabilities + 1e-9), probabilities, expert_index,
                                   combine_weights, tf.ones_like(expert_index, dtype=tf.bool))
        # logits <float32>[B, E]
        logits = self.logit_scale * readouts if self.quantum_router else self.router(programs.features)
        if training and self.router_noise > 0:
            logits += self.router_noise * tf.random.normal(tf.shape(logits))
        probabilities = tf.nn.softmax(logits / self.temperature, axis=-1)
        # expert_index <int32>[B, k], combine_weights <float32>[B, k]
        expert_index, combine_weights = routing.select_experts(probabilities, self.top_k)
        if self.capacity_factor is None:
            kept = tf.ones_like(expert_index, dtype=tf.bool)
        else:
            capacity = routing.expert_capacity(
                batch, self.top_k or self.n_experts, self.n_experts, self.capacity_factor)
            kept = routing.capacity_mask(expert_index, self.n_experts, capacity)
            combine_weights *= tf.cast(kept, combine_weights.dtype)
        return routing.Routing(logits, probabilities, expert_index, combine_weights, kept)

    def _run_experts(self, programs: _Programs, route: routing.Routing) -> tf.Tensor:
        batch = tf.shape(route.expert_index)[0]
        slots = tf.shape(route.expert_index)[1]
        # One row per dispatched (sample, expert) pair: sample_index, expert_index, weight <[B * k]>
        sample_index = tf.repeat(tf.range(batch), slots)
        expert_index = tf.reshape(route.expert_index, [-1])
        weight = tf.reshape(route.combine_weights, [-1])
        if self.capacity_factor is not None:
            kept = tf.reshape(route.kept, [-1])
            sample_index, expert_index, weight = (
                tf.boolean_mask(t, kept) for t in (sample_index, expert_index, weight))
        # outputs <float32>[B, n_readouts]
        outputs = tf.zeros([batch, self.n_readouts])
        if self._quantum:
            outputs += self._run_quantum_experts(programs, sample_index, expert_index, weight, batch)
        for index in self._classical:
            # Only the samples routed to this expert go through it.
            mine = tf.equal(expert_index, index)
            rows, row_weight = tf.boolean_mask(sample_index, mine), tf.boolean_mask(weight, mine)
            readouts = self.experts[index](tf.gather(programs.features, rows))
            outputs += tf.math.unsorted_segment_sum(readouts * row_weight[:, None], rows, batch)
        return outputs

    def _run_quantum_experts(self, programs: _Programs, sample_index: tf.Tensor, expert_index: tf.Tensor,
                             weight: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        """All rows routed to PQC experts in one TFQ op call."""
        slot = expert_index  # the row of each routed expert in the stacked PQC weights
        if self._classical:
            mine = tf.gather(tf.constant([i in self._quantum for i in range(self.n_experts)]), expert_index)
            sample_index, expert_index, weight = (
                tf.boolean_mask(t, mine) for t in (sample_index, expert_index, weight))
            slot = tf.gather(tf.constant([self._quantum.index(i) if i in self._quantum else 0
                                          for i in range(self.n_experts)]), expert_index)
        # expert_weights <float32>[n_quantum_experts, n_expert_symbols]
        expert_weights = tf.stack([self.experts[i].parameters for i in self._quantum])
        # data <float32>[rows, F], or [rows, expert_layers * F] scaled per expert when re-uploading
        data = tf.gather(programs.data_values, sample_index)
        if self.reuploading:
            scaling = tf.gather(self.input_scaling, expert_index)  # [rows, expert_layers, F]
            data = tf.reshape(scaling * data[:, None, :], [tf.shape(data)[0], -1])
        values = tf.concat([data, tf.gather(expert_weights, slot)], axis=1)
        # readouts <float32>[rows, n_readouts]
        readouts = self._expert_executor(tf.gather(programs.expert, sample_index), programs.expert_names,
                                         values, self._readout_tensor)
        return tf.math.unsorted_segment_sum(readouts * weight[:, None], sample_index, batch)

    def _add_routing_terms(self, route: routing.Routing) -> None:
        # Dense routing dispatches to every expert; balance is then measured on each sample's top choice.
        assigned = route.expert_index if self.top_k else tf.argmax(
            route.probabilities, axis=-1, output_type=tf.int32)[:, None]
        balance = routing.load_balancing_loss(route.probabilities, assigned)
        z_loss = routing.router_z_loss(route.logits)
        if self.load_balance_weight > 0:
            self.add_loss(self.load_balance_weight * balance)
        if self.z_loss_weight > 0:
            self.add_loss(self.z_loss_weight * z_loss)
        self.add_metric(balance, name=f"{self.name}_load_balance")
        self.add_metric(z_loss, name=f"{self.name}_z_loss")
        fractions = routing.routing_fractions(assigned, self.n_experts)
        for index in range(self.n_experts):
            self.add_metric(fractions[index], name=f"{self.name}_expert_{index}_fraction")

    def _run_coherent(self, inputs: tf.Tensor) -> tf.Tensor:
        """One circuit per sample: router register + controlled experts, readouts already mixed."""
        angles = self.encoder.angles(inputs)
        batch = tf.shape(angles)[0]
        weights = tf.concat([self.router.parameters] + [expert.parameters for expert in self.experts], 0)
        # values <float32>[B, F + router_layers * F + n_router_symbols + E * n_expert_symbols]
        values = tf.concat([angles, tf.tile(angles, [1, self.router_layers]),
                            tf.tile(weights[None, :], [batch, 1])], axis=1)
        return self._expert_executor(tf.tile(self._coherent_program, [batch]), self._coherent_names,
                                     values, self._readout_tensor)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        programs = self._programs(inputs)
        route = self._route(programs, training)
        self._add_routing_terms(route)
        if self.aggregation == "coherent":
            return self._run_coherent(inputs)
        return self._run_experts(programs, route)

    def route(self, inputs: tf.Tensor, training: bool = False) -> routing.Routing:
        """The routing decision for a batch (logits, probabilities, selected experts, weights)."""
        inputs = tf.convert_to_tensor(inputs)
        if not self.built:
            self.build(inputs.shape)
        return self._route(self._programs(inputs), training)

    def gate_weights(self, inputs: tf.Tensor) -> tf.Tensor:
        """<float32>[batch, n_experts] weight of each expert in each sample's output (inference)."""
        return self.route(inputs).gate_matrix()

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape([tf.TensorShape(input_shape)[0], self.n_readouts])

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "qubits": to_cirq_json(self.qubits),
            "n_experts": self.n_experts,
            "expert_layers": self.expert_layers,
            "router_layers": self.router_layers,
            "top_k": self.top_k,
            "temperature": self.temperature,
            "observables": to_cirq_json(self.observables),
            "rotations": list(self.rotations),
            "entangler": self.entangler,
            "encoder": None if self.encoder is None else keras.layers.serialize(self.encoder),
            "reuploading": self.reuploading,
            "aggregation": self.aggregation,
            "experts": [QUANTUM if i in self._quantum else keras.layers.serialize(self.experts[i])
                        for i in range(self.n_experts)] if self._custom_parts else None,
            "router": None if self.quantum_router else keras.layers.serialize(self.router),
            "router_noise": self.router_noise,
            "capacity_factor": self.capacity_factor,
            "load_balance_weight": self.load_balance_weight,
            "z_loss_weight": self.z_loss_weight,
            **_execution_config(self.backend, self.repetitions, self.noise),
            "format_version": FORMAT_VERSION,
        }

    @classmethod
    def from_config(cls, config: dict) -> QMoELayer:
        config = read_layer_config(config, cls.__name__, ("qubits", "observables", "noise"))
        custom = {"ClassicalExpert": ClassicalExpert}
        if config.get("experts") is not None:
            config["experts"] = [kind if kind == QUANTUM else keras.layers.deserialize(kind, custom_objects=custom)
                                 for kind in config["experts"]]
        if config.get("router") is not None:
            config["router"] = keras.layers.deserialize(config["router"], custom_objects=custom)
        if config.get("encoder") is not None:
            config["encoder"] = keras.layers.deserialize(
                config["encoder"], custom_objects={"AngleEncoder": AngleEncoder})
        return cls(**config)
