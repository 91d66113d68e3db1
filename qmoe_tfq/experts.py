"""Experts as layers: `ExpertPQC` (a savable `tfq.layers.PQC`) and what each entry of `QMoELayer`'s
``experts=`` (and a quantum ``router=``, see `routers`) becomes.

An entry is the built-in ansatz (``"quantum"``), a `cirq.Circuit` (its symbols are the weights), a
`tfq.layers.PQC` or `ExpertPQC` (its own circuit and operators), or any `tf_keras` layer (a
classical part on the float features). Every quantum entry becomes an `ExpertPQC`, so the layer
can fuse them into one executor call and save them as Cirq JSON.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import cirq
import numpy as np
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq.execution import StatevectorExecutor, make_executor, make_program
from qmoe_tfq.execution.input_checks import CheckedCircuits, check_programs
from qmoe_tfq.execution.program import decode_strings
from qmoe_tfq.execution.backends import (Backend, Noise, apply_noise, execution_config, read_differentiator,
                                         validate_noise)
from qmoe_tfq.circuits import Ansatz, Observable, check_circuit_qubits, on_qubits, validate_observables
from qmoe_tfq.encoding import AngleEncoder, CircuitEncoder
from qmoe_tfq.gating import DenseGate, ExpertChoice, TopK
from qmoe_tfq.qcnn import BUILTINS, QCNN, builtin_from_config
from qmoe_tfq.hybrid import ClassicalExpert
from qmoe_tfq.inputs import circuit_batch
from qmoe_tfq.serialization import FORMAT_VERSION, read_layer_config, to_cirq_json

QUANTUM = "quantum"
Part = str | Ansatz | QCNN | cirq.Circuit | keras.layers.Layer


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class ExpertPQC(tfq.layers.PQC):
    """A `tfq.layers.PQC` that saves and reloads, and that `QMoELayer` can evaluate fused.

    It is a `tfq.layers.PQC` in every way a user sees (``symbols``, ``symbol_values()``, the
    ``parameters`` weight, same input and output), with three differences:

    * `get_config`/`from_config` work: the circuit and operators travel as Cirq JSON;
    * it evaluates through this package's executors (``backend="auto"`` by default: the TF
      statevector simulator up to 10 qubits, TFQ above) rather than TFQ's ``Expectation``
      sub-layer, which cannot be exported as a SavedModel;
    * each instance gets a fresh initializer, so experts do not all start from the same weights
      (PQC's default initializer is one shared, unseeded instance).

    >>> import qmoe_tfq
    >>> qubits = cirq.GridQubit.rect(1, 2)
    >>> expert = ExpertPQC(qmoe_tfq.hardware_efficient_ansatz(qubits, 1), qmoe_tfq.default_readouts(qubits))
    >>> expert(qmoe_tfq.encode(np.array([[0.3, 0.7]]), qubits)).shape
    TensorShape([1, 2])

    Args:
        model_circuit: `cirq.Circuit` with sympy symbols; one trainable weight per symbol.
        operators: `cirq.PauliSum`/`cirq.PauliString` or a list of them, measured at the end.
        backend: ``"auto"``, ``"statevector"``, ``"noiseless"``, ``"noisy"``, or a Cirq
            sampler/simulator (see `backends`).
        repetitions: shots (sampler) or trajectories (``"noisy"``); None for exact expectations.
        noise: a `cirq.NoiseModel` or channel (``cirq.depolarize(0.01)``) applied to the model
            circuit; needs ``backend="noisy"`` or a Cirq backend.
        differentiator: a `tfq.differentiators.Differentiator`; Adjoint when exact, else
            ParameterShift.
        initializer, regularizer, constraint: as for `tfq.layers.PQC`; the initializer defaults to
            a new ``RandomUniform(0, 2 pi)``.
    """

    def __init__(self, model_circuit: cirq.Circuit, operators: Observable | Sequence[Observable], *,
                 backend: Backend = "auto", repetitions: int | None = None,
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
        self.backend, self.repetitions, self.differentiator = backend, repetitions, differentiator
        # Alone, like tfq.layers.PQC, it takes circuits on any superset of its qubits, which only TFQ can size at
        # run time; "auto" is TFQ here. Inside a QMoELayer the layer's executor runs it and "auto" may mean statevector.
        self.executor = make_executor("noiseless" if backend == "auto" else backend, repetitions, differentiator)
        self._run = None
        # tfq.layers.PQC's runner layers: `call` runs the circuit here, so they would be exported unbuilt.
        self._executor = self._append_layer = None

    def _trackable_children(self, save_type: str = "checkpoint", **kwargs) -> dict:
        children = super()._trackable_children(save_type, **kwargs)
        return {name: child for name, child in children.items() if name not in ("_executor", "_append_layer")}

    @property
    def symbol_names(self) -> tf.Tensor:
        """<string>[n_symbols] symbol names, in the order of ``parameters``."""
        return self._symbols

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        if self._run is None:  # compiled when first called alone (in a mixture layer, its circuit runs with the others')
            with tf.init_scope():  # outside the graph being traced, as Keras builds
                self._qubits = sorted(self.model_circuit.all_qubits())
                self._run = self.executor.compile(make_program(
                    [apply_noise(self.model_circuit, self.noise)], [self.readouts],
                    decode_strings(self._symbols), self._qubits))
                # The statevector kernel's states hold exactly these qubits; TFQ sizes any superset.
                self._checked = (CheckedCircuits(self._qubits, self.name)
                                 if isinstance(self.executor, StatevectorExecutor) else None)
        circuits = circuit_batch(inputs, self.name)  # <string>[B]
        if self._checked is None:  # TFQ sizes any superset of the qubits, and checks the rest itself
            circuits = check_programs(circuits, self.name)
        else:
            circuits = self._checked(circuits)
        values = tf.tile(self.parameters[None, :], [tf.shape(circuits)[0], 1])  # <float32>[B, n_symbols]
        return self._run(values, inputs=self.executor.prepare(circuits, self._qubits))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "model_circuit": to_cirq_json(self.model_circuit),
            "operators": to_cirq_json(list(self.readouts)),
            **execution_config(self.backend, self.repetitions, self.noise, self.differentiator),
            "initializer": keras.initializers.serialize(self.initializer),
            "regularizer": keras.regularizers.serialize(self.regularizer),
            "constraint": keras.constraints.serialize(self.constraint),
            "format_version": FORMAT_VERSION,
        }

    @classmethod
    def from_config(cls, config: dict) -> ExpertPQC:
        config = read_layer_config(config, cls.__name__, ("model_circuit", "operators", "noise"))
        config["differentiator"] = read_differentiator(config.get("differentiator"), f"{cls.__name__}.differentiator")
        config["initializer"] = keras.initializers.deserialize(config["initializer"])
        config["regularizer"] = keras.regularizers.deserialize(config["regularizer"])
        config["constraint"] = keras.constraints.deserialize(config["constraint"])
        return cls(**config)


def as_expert_pqc(pqc: tfq.layers.PQC, **executor_args) -> ExpertPQC:
    """`pqc` itself if it is an `ExpertPQC`, else an `ExpertPQC` with its circuit, operators and weights."""
    if isinstance(pqc, ExpertPQC):
        return pqc
    circuit = tfq.from_tensor(pqc._model_circuit)[0]  # PQC keeps its circuit and operators only as tensors
    operators = list(tfq.from_tensor(pqc._operators)[0])
    initializer = keras.initializers.deserialize(keras.initializers.serialize(pqc.initializer))  # unused by the PQC
    expert = ExpertPQC(circuit, operators, name=pqc.name, initializer=initializer,
                       regularizer=pqc.regularizer, constraint=pqc.constraint, **executor_args)
    expert.parameters.assign(pqc.parameters)
    return expert


def quantum_part(part: cirq.Circuit | tfq.layers.PQC, argument: str, qubits: Sequence[cirq.Qid],
                 observables: Sequence[cirq.PauliSum], name: str, **executor_args) -> ExpertPQC:
    """An `ExpertPQC` from a circuit (reading `observables`) or a PQC (its own operators).

    Circuits are widened to all of `qubits` with identities, so the layer's observables can be
    read on any of them.
    """
    if isinstance(part, cirq.Circuit):
        check_circuit_qubits(part, qubits, argument)
        if not cirq.parameter_symbols(part):
            raise ValueError(f"{argument} is a circuit without sympy symbols; its symbols are its trainable "
                             "weights, so give it at least one.")
        return ExpertPQC(on_qubits(part, qubits), observables, name=name, **executor_args)
    pqc = as_expert_pqc(part, **executor_args)
    check_circuit_qubits(pqc.model_circuit, qubits, argument)
    return pqc


def is_quantum_part(part: object) -> bool:
    """True for entries that become an `ExpertPQC`: ``"quantum"``, an `Ansatz` or `QCNN`, a circuit or a PQC."""
    return isinstance(part, (*BUILTINS, cirq.Circuit, tfq.layers.PQC)) or (isinstance(part, str) and part == QUANTUM)


def expert_list(experts: Sequence[Part] | None, n_experts: int | None) -> list[Part]:
    """The ``experts=`` argument as a list with one entry per expert, each checked for its kind."""
    if experts is None:
        n_experts = 4 if n_experts is None else n_experts
        if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
            raise ValueError(f"n_experts must be a positive integer, got {n_experts!r}.")
        return [QUANTUM] * n_experts
    if isinstance(experts, (str, cirq.Circuit, keras.layers.Layer)) or not isinstance(experts, Sequence):
        raise TypeError(f"experts must be a list with one entry per expert, got {experts!r}.")
    experts = list(experts)
    if not experts:
        raise ValueError("experts is empty; give at least one expert.")
    for index, expert in enumerate(experts):
        if not (is_quantum_part(expert) or isinstance(expert, keras.layers.Layer)):
            raise TypeError(f"experts[{index}] = {expert!r} is not an expert: use 'quantum' (the built-in "
                            "ansatz), a qmoe_tfq.Ansatz or QCNN, a cirq.Circuit, a tfq.layers.PQC / qmoe_tfq.ExpertPQC, or a tf_keras layer.")
    if n_experts is not None and n_experts != len(experts):
        raise ValueError(f"n_experts={n_experts} but experts has {len(experts)} entries.")
    layers = [e for e in experts if isinstance(e, keras.layers.Layer)]
    if len({id(e) for e in layers}) != len(layers):
        raise ValueError("experts contains the same layer object twice; give each expert its own layer.")
    return experts


def shared_list(shared_experts: int | Sequence[Part]) -> list[Part]:
    """The ``shared_experts=`` argument (a count of built-in experts, or entries as for ``experts=``) as a list."""
    if isinstance(shared_experts, bool) or isinstance(shared_experts, int) and shared_experts < 0:
        raise ValueError(f"shared_experts must be a count >= 0 or a list of experts, got {shared_experts!r}.")
    if isinstance(shared_experts, int):
        return [] if shared_experts == 0 else expert_list(None, shared_experts)
    return expert_list(shared_experts, None)


def check_output_widths(experts: Sequence[keras.layers.Layer], router: keras.layers.Layer, n_features: int,
                        n_readouts: int, n_experts: int) -> None:
    """Builds the classical parts on [batch, n_features] and checks they output n_readouts / n_experts values."""
    probe = tf.zeros([1, n_features])  # <float32>[1, F]
    for index, expert in enumerate(experts):
        if not isinstance(expert, ExpertPQC) and expert(probe).shape[-1] != n_readouts:
            raise ValueError(f"experts[{index}] ({expert.name}) outputs {expert(probe).shape[-1]} values per "
                             f"sample, but every expert must output len(observables) = {n_readouts}.")
    if not isinstance(router, ExpertPQC) and router(probe).shape[-1] != n_experts:
        raise ValueError(f"router ({router.name}) outputs {router(probe).shape[-1]} logits per "
                         f"sample, but the layer has n_experts = {n_experts}.")


def make_experts(experts: Sequence[Part], builtin: Callable[[int, Ansatz | QCNN | None], ExpertPQC],
                 qubits: Sequence[cirq.Qid], observables: Sequence[cirq.PauliSum],
                 **executor_args) -> list[keras.layers.Layer]:
    """One layer per expert: a built-in `ExpertPQC` (``"quantum"``, an `Ansatz` or `QCNN`), one from a circuit or PQC,
    or the classical layer.

    Quantum experts must read as many values as `observables`; a mismatch names the expert.
    """
    layers = []
    for index, expert in enumerate(experts):
        if isinstance(expert, (str, *BUILTINS)):
            layer = builtin(index, None if isinstance(expert, str) else expert)
        elif is_quantum_part(expert):
            layer = quantum_part(expert, f"experts[{index}]", qubits, observables, f"expert_{index}", **executor_args)
            if len(layer.readouts) != len(observables):
                raise ValueError(
                    f"experts[{index}] ({layer.name}) reads {len(layer.readouts)} operators, but every expert "
                    f"must output len(observables) = {len(observables)} values.")
        else:
            layer = expert
        layers.append(layer)
    return layers


def serialize_entries(entries: Sequence[Part | None], layers: Sequence[keras.layers.Layer]) -> list[str | dict]:
    """Expert entries as a config holds them: a built-in's name or shape (``entries``), else its layer's config."""
    return [entry if isinstance(entry, str) else {"ansatz": entry.get_config()} if isinstance(entry, BUILTINS)
            else keras.layers.serialize(layer) for entry, layer in zip(entries, layers)]


def deserialize_part(entry: str | dict, execution: dict) -> str | Ansatz | QCNN | keras.layers.Layer:
    """A part (expert, router, gate, encoder, head) from its config entry; `ExpertPQC`s run on `execution`'s backend.

    `execution` holds the layer config's stored ``backend``, ``repetitions`` and ``noise`` (Cirq JSON).
    """
    if isinstance(entry, str):
        return entry
    if "ansatz" in entry:
        return builtin_from_config(entry["ansatz"])
    if entry.get("class_name", "").endswith("ExpertPQC"):
        entry = {**entry, "config": {**entry["config"], **execution}}
    # The HDF5 format stores bare class names; the registry knows ours only as "qmoe_tfq>Name".
    parts = {cls.__name__: cls for cls in (ExpertPQC, AngleEncoder, CircuitEncoder, ClassicalExpert, TopK,
                                           ExpertChoice, DenseGate)}
    return keras.layers.deserialize(entry, custom_objects=parts)
