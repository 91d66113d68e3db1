"""Where circuits run: one differentiable TFQ expectation op per executor, for any backend.

`CircuitExecutor` wraps the three ways TFQ can evaluate a batch of parameterised programs:

* ``"noiseless"``: TFQ's state-vector simulator: exact expectations with the Adjoint differentiator
  (fastest), or shot-based ones (ParameterShift) when `repetitions` is given.
* ``"noisy"``: TFQ's trajectory simulator for circuits carrying Cirq noise channels, averaging
  `repetitions` trajectories; ParameterShift differentiator.
* a Cirq object: a `cirq.Sampler` with `repetitions` gives shot-based expectations (ParameterShift),
  a `cirq.SimulatesExpectationValues` without `repetitions` gives exact ones through Cirq.

Every executor evaluates *rows*: row ``r`` is ``programs[r]`` with ``symbol_values[r]``, measured
with every observable. The QMoE layer packs all routed (sample, expert) pairs into the rows of one
call, which is where its speed comes from.
"""
from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import cirq
import tensorflow as tf
import tensorflow_quantum as tfq

BACKEND_NAMES = ("auto", "statevector", "noiseless", "noisy")
EXACT = ("auto", "statevector", "noiseless")
MAX_REPETITIONS = 1_000_000  # shots or trajectories per row; TFQ keeps every sample in memory
Backend = str | cirq.Sampler | cirq.SimulatesExpectationValues
Noise = cirq.NoiseModel | cirq.Gate


class Program(NamedTuple):
    """Circuits, readouts and the symbol layout that every row's values follow: one contract.

    Made once (`make_program`) and compiled once per executor (`compile`)."""

    circuits: tf.Tensor  # <string>[P] serialized programs
    operators: tf.Tensor  # <string>[P, n_readouts] serialized observables of each program
    symbol_names: tf.Tensor  # <string>[N] data symbols first, then weight symbols
    sources: tuple[cirq.Circuit, ...]  # the P programs
    observables: tuple[tuple[cirq.PauliSum, ...], ...]  # [P][n_readouts]
    qubits: tuple[cirq.Qid, ...]  # every program acts on these (identities pad the rest)
    n_data: int  # leading symbols carrying data: values with no gradient, resolved first when sampling
    rows_per_sample: float  # rows a call evaluates per sample (router 1, top-k experts k, dense E): for `auto`


def make_program(circuits: Sequence[cirq.Circuit], observables: Sequence[Sequence[cirq.PauliSum]],
                 symbol_names: Sequence[str], qubits: Sequence[cirq.Qid], n_data: int = 0,
                 rows_per_sample: float = 1.0) -> Program:
    """A `Program` of circuits that already act on every one of `qubits`."""
    return Program(tfq.convert_to_tensor(list(circuits)), tfq.convert_to_tensor([list(o) for o in observables]),
                   tf.constant(list(symbol_names), tf.string), tuple(circuits),
                   tuple(tuple(cirq.PauliSum.wrap(x) for x in o) for o in observables), tuple(qubits), n_data,
                   rows_per_sample)


# run(values <float32>[R, N], program_index <int32>[R] | None (all program 0), circuits <string>[B] | None
#     (start from |0...0>), sample_index <int32>[R] | None (row r on circuits[r])) -> <float32>[R, n_readouts]
Run = Callable[..., tf.Tensor]


def validate_backend(backend: Backend, repetitions: int | None) -> None:
    """Checks a backend/repetitions pair, naming what is wrong and what is allowed."""
    if repetitions is not None and (
            isinstance(repetitions, bool) or not isinstance(repetitions, numbers.Integral)
            or repetitions < 1):
        raise ValueError(f"repetitions must be None or a positive integer, got {repetitions!r}.")
    if repetitions is not None and repetitions > MAX_REPETITIONS:
        raise ValueError(f"repetitions={repetitions} is more than {MAX_REPETITIONS:,} samples per circuit row, "
                         "which would take minutes and gigabytes per batch; use at most that.")
    if isinstance(backend, str):
        if backend not in BACKEND_NAMES:
            raise ValueError(
                f"backend={backend!r} is not allowed; use one of {BACKEND_NAMES}, a cirq.Sampler "
                "or a cirq.SimulatesExpectationValues simulator.")
        if backend == "statevector" and repetitions is not None:
            raise ValueError(f"backend='statevector' computes exact expectations; for repetitions={repetitions} "
                             "shots use backend='noiseless' or 'auto'.")
        if backend == "noisy" and repetitions is None:
            raise ValueError("backend='noisy' averages noise trajectories: give repetitions=N (e.g. 1000).")
        return
    if repetitions is not None and not isinstance(backend, cirq.Sampler):
        raise TypeError(f"backend={backend!r} with repetitions={repetitions} must be a cirq.Sampler.")
    if repetitions is None and not isinstance(backend, cirq.SimulatesExpectationValues):
        raise TypeError(
            f"backend={backend!r} without repetitions must be a cirq.SimulatesExpectationValues; "
            "for a cirq.Sampler (e.g. hardware) give repetitions=N shots.")


class CircuitExecutor:
    """A differentiable expectation op: ``(programs, names, values, operators) -> [rows, n_ops]``.

    >>> q = cirq.LineQubit(0)
    >>> run = CircuitExecutor()
    >>> programs = tfq.convert_to_tensor([cirq.Circuit(cirq.rx(sympy.Symbol("a"))(q))])
    >>> operators = tfq.convert_to_tensor([[cirq.Z(q)]])
    >>> run(programs, tf.constant(["a"]), tf.constant([[np.pi]]), operators).numpy().round(3)
    array([[-1.]], dtype=float32)
    """

    name = "tfq"

    def __init__(self, backend: Backend = "noiseless", repetitions: int | None = None,
                 differentiator: tfq.differentiators.Differentiator | None = None) -> None:
        validate_backend(backend, repetitions)
        if backend in ("auto", "statevector"):
            raise ValueError(f"CircuitExecutor runs TFQ backends; for backend={backend!r} use make_executor.")
        if differentiator is not None and not isinstance(
                differentiator, tfq.differentiators.Differentiator):
            raise TypeError(
                f"differentiator={differentiator!r} must be a tfq.differentiators.Differentiator.")
        self.backend = backend
        self.repetitions = repetitions
        sampled = backend == "noisy" or repetitions is not None
        if differentiator is None:
            exact = backend == "noiseless" and not sampled
            differentiator = tfq.differentiators.Adjoint() if exact else tfq.differentiators.ParameterShift()
        # A differentiator instance binds to the one op it generated, so every executor gets a copy.
        differentiator = copy.copy(differentiator).refresh()
        if backend == "noisy":
            self._op = differentiator.generate_differentiable_op(sampled_op=tfq.noise.expectation)
        elif sampled:
            self._op = differentiator.generate_differentiable_op(
                sampled_op=tfq.get_sampled_expectation_op(backend=None if backend == "noiseless" else backend))
        else:
            self._op = differentiator.generate_differentiable_op(
                analytic_op=tfq.get_expectation_op(backend=None if backend == "noiseless" else backend))
        self._sampled = sampled
        self.name = backend if isinstance(backend, str) else type(backend).__name__

    def compile(self, program: Program) -> Run:
        """The `Run` of `program`'s rows: input circuits prepended, data symbols resolved first when sampling
        (so ParameterShift shifts only the weights: 2 x n_weights circuits per row, not 2 x all symbols)."""
        single = program.circuits.shape[0] == 1
        resolve = self._sampled and program.n_data > 0

        def run(values: tf.Tensor, program_index: tf.Tensor | None = None, circuits: tf.Tensor | None = None,
                sample_index: tf.Tensor | None = None) -> tf.Tensor:
            rows = tf.shape(values)[0]
            index = tf.zeros([rows], tf.int32) if program_index is None else program_index  # <int32>[R]
            if circuits is None:
                programs = tf.gather(program.circuits, index)  # <string>[R]
            elif single:
                # One program: append it once per sample, then copy rows (B appends instead of R).
                programs = tfq.append_circuit(circuits, tf.tile(program.circuits, [tf.shape(circuits)[0]]))
                programs = programs if sample_index is None else tf.gather(programs, sample_index)
            else:
                inputs = circuits if sample_index is None else tf.gather(circuits, sample_index)
                programs = tfq.append_circuit(inputs, tf.gather(program.circuits, index))
            names = program.symbol_names
            if resolve:
                programs = tfq.resolve_parameters(programs, names[:program.n_data], values[:, :program.n_data])
                names, values = names[program.n_data:], values[:, program.n_data:]
            return self(programs, names, values, tf.gather(program.operators, index))
        return run

    def __call__(self, programs: tf.Tensor, symbol_names: tf.Tensor, symbol_values: tf.Tensor,
                 operators: tf.Tensor) -> tf.Tensor:
        """Evaluates rows.

        Args:
            programs: <string>[rows] serialized circuits.
            symbol_names: <string>[n_symbols].
            symbol_values: <float32>[rows, n_symbols].
            operators: <string>[rows, n_ops] serialized Pauli sums per row, or [1, n_ops] for every row.

        Returns:
            <float32>[rows, n_ops] expectation values.
        """
        # operators <string>[rows, n_ops]
        operators = tf.broadcast_to(operators, [tf.shape(programs)[0], tf.shape(operators)[1]])
        if self._sampled:
            num_samples = tf.fill(tf.shape(operators), tf.constant(self.repetitions, tf.int32))
            return self._op(programs, symbol_names, symbol_values, operators, num_samples)
        return self._op(programs, symbol_names, symbol_values, operators)


def validate_noise(noise: Noise | None, backend: Backend) -> None:
    """Noise channels need a simulator that can apply them: 'noisy' or a Cirq backend."""
    if noise is None:
        return
    if not isinstance(noise, (cirq.NoiseModel, cirq.Gate)):
        raise TypeError(f"noise must be a cirq.NoiseModel or a cirq channel such as cirq.depolarize(0.01), "
                        f"got {noise!r}.")
    if backend in EXACT:
        raise ValueError(
            f"noise={noise!r} needs a simulator of noisy circuits, not backend={backend!r}: use backend='noisy' with "
            "repetitions=N trajectories, or a Cirq simulator/sampler that applies noise.")


def apply_noise(circuit: cirq.Circuit, noise: Noise | None) -> cirq.Circuit:
    """`circuit` with `noise` after every moment on every qubit (or as the noise model says)."""
    return circuit if noise is None else circuit.with_noise(noise)


def runs_in_python(backend: Backend | CircuitExecutor) -> bool:
    """True for Cirq samplers and simulators: TFQ calls them back in Python (no SavedModel export)."""
    return not isinstance(backend.backend if isinstance(backend, CircuitExecutor) else backend, str)


def execution_config(backend: Backend | CircuitExecutor, repetitions: int | None, noise: Noise | None) -> dict:
    """The backend part of a layer config.

    Cirq samplers, simulators and executor objects are run-time choices that do not travel in a
    config: a layer that ran on one reloads on the exact, noiseless simulator until it is given a
    backend again.
    """
    if not isinstance(backend, str):
        return {"backend": "noiseless", "repetitions": None, "noise": None}
    return {"backend": backend, "repetitions": repetitions, "noise": None if noise is None else cirq.to_json(noise)}


def make_executor(backend: Backend | CircuitExecutor, repetitions: int | None,
                  differentiator: tfq.differentiators.Differentiator | None):
    """The executor for `backend`: `backend` itself when it is already one (e.g. a wrapped one in tests).

    ``"auto"`` with exact expectations and no differentiator is `simulators.auto.AutoExecutor`, which puts
    each program on the TF statevector kernel or on TFQ's qsim by their estimated costs; with shots or
    a differentiator it is TFQ.
    """
    from qmoe_tfq.simulators.auto import AutoExecutor
    from qmoe_tfq.simulators.statevector import StatevectorExecutor

    if not isinstance(backend, str):
        executor = isinstance(backend, (CircuitExecutor, StatevectorExecutor, AutoExecutor))
        return backend if executor else CircuitExecutor(backend, repetitions, differentiator)
    validate_backend(backend, repetitions)
    if backend == "auto":
        if repetitions is None and differentiator is None:
            return AutoExecutor()
        backend = "noiseless"
    if backend == "statevector":
        if differentiator is not None:
            raise ValueError("backend='statevector' differentiates by TF autodiff; it takes no differentiator "
                             f"(got {differentiator!r}); use backend='noiseless' for a TFQ differentiator.")
        return StatevectorExecutor()
    return CircuitExecutor(backend, repetitions, differentiator)
