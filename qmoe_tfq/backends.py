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

import cirq
import tensorflow as tf
import tensorflow_quantum as tfq

BACKEND_NAMES = ("noiseless", "noisy")
MAX_REPETITIONS = 1_000_000  # shots or trajectories per row; TFQ keeps every sample in memory
Backend = str | cirq.Sampler | cirq.SimulatesExpectationValues


Noise = cirq.NoiseModel | cirq.Gate


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

    def __init__(self, backend: Backend = "noiseless", repetitions: int | None = None,
                 differentiator: tfq.differentiators.Differentiator | None = None) -> None:
        validate_backend(backend, repetitions)
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
    if backend == "noiseless":
        raise ValueError(
            f"noise={noise!r} needs a simulator of noisy circuits: use backend='noisy' with "
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
                  differentiator: tfq.differentiators.Differentiator | None) -> CircuitExecutor:
    """`backend` itself when it is already an executor (e.g. a wrapped one in tests), else a new one."""
    if isinstance(backend, CircuitExecutor):
        return backend
    return CircuitExecutor(backend, repetitions, differentiator)
