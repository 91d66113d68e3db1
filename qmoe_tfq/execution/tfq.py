"""The TFQ executor: one differentiable TFQ expectation op, for any backend TFQ can drive.

`CircuitExecutor` wraps the three ways TFQ can evaluate a batch of parameterised programs:

* ``"noiseless"``: TFQ's state-vector simulator: exact expectations with the Adjoint differentiator
  (fastest), or shot-based ones (ParameterShift) when `repetitions` is given.
* ``"noisy"``: TFQ's trajectory simulator for circuits carrying Cirq noise channels, averaging
  `repetitions` trajectories; ParameterShift differentiator.
* a Cirq object: a `cirq.Sampler` with `repetitions` gives shot-based expectations (ParameterShift),
  a `cirq.SimulatesExpectationValues` without `repetitions` gives exact ones through Cirq.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import cirq
import tensorflow as tf
import tensorflow_quantum as tfq

from qmoe_tfq.execution.backends import Backend, validate_backend
from qmoe_tfq.execution.program import Inputs, Program, Run


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

        def run(values: tf.Tensor, program_index: tf.Tensor | None = None, inputs: Inputs | None = None,
                sample_index: tf.Tensor | None = None) -> tf.Tensor:
            rows = tf.shape(values)[0]
            index = tf.zeros([rows], tf.int32) if program_index is None else program_index  # <int32>[R]
            circuits = None if inputs is None else inputs.circuits  # <string>[B]
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
            return self(programs, names, values, tf.gather(program.observables, index))
        return run

    def prepare(self, circuits: tf.Tensor, qubits: Sequence[cirq.Qid]) -> Inputs:
        """TFQ appends each row's program to its input circuit and simulates the whole: nothing to prepare."""
        return Inputs(circuits, None)

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
