"""The executor contract: a `Program` (circuits, observables, the symbol layout of every row's values)
and an `Executor` that compiles it once into a `Run` evaluating rows.

Every executor evaluates *rows*: row ``r`` is program ``program_index[r]`` with ``values[r]``,
measured with each of that program's observables. The QMoE layer packs every routed
(sample, expert) pair into the rows of one call, which is where its speed comes from.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import cirq
import tensorflow as tf
import tensorflow_quantum as tfq

NOMINAL_BATCH = 32  # Keras' default batch size: a layer's batch is not known when its programs are compiled


class Program(NamedTuple):
    """Circuits, observables and the symbol layout that every row's values follow: one contract.

    Made once (`make_program`) and compiled once per executor (`Executor.compile`). Values are laid
    out ``[data | weights]``: the first `n_data` symbols carry data (no gradient; resolved first
    when sampling), the rest are weights; `values` writes that layout.
    """

    circuits: tf.Tensor  # <string>[P] serialized programs
    observables: tf.Tensor  # <string>[P, n_observables] serialized observables of each program
    symbol_names: tf.Tensor  # <string>[N] data symbols first, then weight symbols
    cirq_circuits: tuple[cirq.Circuit, ...]  # the P programs
    cirq_observables: tuple[tuple[cirq.PauliSum, ...], ...]  # [P][n_observables]
    qubits: tuple[cirq.Qid, ...]  # every program acts on these (identities pad the rest)
    n_data: int  # leading symbols carrying data
    rows_per_sample: float  # rows a call evaluates per sample (router 1, top-k experts k, dense E): for `auto`

    @property
    def nominal_rows(self) -> int:
        """Rows a call evaluates at Keras' default batch size, for choices made before the batch is known."""
        return max(1, round(self.rows_per_sample * NOMINAL_BATCH))

    def values(self, data: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        """<float32>[R, N] rows' values: `data` <float32>[R, n_data], then `weights` <float32>[R, N - n_data]
        per row or [N - n_data] shared by every row."""
        if weights.shape.rank == 1:
            weights = tf.tile(weights[None, :], [tf.shape(data)[0], 1])  # <float32>[R, N - n_data]
        return tf.concat([data, weights], axis=1)


def make_program(circuits: Sequence[cirq.Circuit], observables: Sequence[Sequence[cirq.PauliSum]],
                 symbol_names: Sequence[str], qubits: Sequence[cirq.Qid], n_data: int = 0,
                 rows_per_sample: float = 1.0) -> Program:
    """A `Program` of circuits that already act on every one of `qubits`."""
    return Program(tfq.convert_to_tensor(list(circuits)), tfq.convert_to_tensor([list(o) for o in observables]),
                   tf.constant(list(symbol_names), tf.string), tuple(circuits),
                   tuple(tuple(cirq.PauliSum.wrap(x) for x in o) for o in observables), tuple(qubits), n_data,
                   rows_per_sample)


def decode_strings(strings: tf.Tensor) -> list[str]:
    """<string>[N] as Python text, UTF-8 (symbol names may be any sympy name: ``θ0``)."""
    return [value.decode("utf-8") for value in strings.numpy()]


class Inputs(NamedTuple):
    """One batch of input circuits (quantum data) as an executor reads them: made once per batch by
    `Executor.prepare`, then read by every `Run` of the step (router and experts)."""

    circuits: tf.Tensor  # <string>[B] serialized circuits, checked by the caller
    states: tf.Tensor | None  # <complex64>[B, 2**n] their states on the programs' qubits, for executors that start there


class RowParts(NamedTuple):
    """Rows' values by their parts: row r is ``data[sample_index[r]]`` then ``weights[unit_index[r]]``, laid out as
    `Program.symbol_names`, on program ``unit_program[unit_index[r]]``.

    A layer's rows repeat both parts (each sample's data on every expert it is routed to, each expert's
    weights on every sample routed to it); an executor may share work between them (`factored`).
    """

    data: tf.Tensor  # <float32>[B, n_data] per sample
    weights: tf.Tensor  # <float32>[U, N - n_data] per unit (an expert)
    unit_program: tf.Tensor  # <int32>[U] each unit's program
    sample_index: tf.Tensor  # <int32>[R]
    unit_index: tf.Tensor  # <int32>[R]

    @classmethod
    def shared(cls, data: tf.Tensor, weights: tf.Tensor) -> RowParts:
        """One row per sample of `data` <float32>[B, n_data], every row on one unit of `weights` <float32>[N - n_data]
        (a router's) and program 0."""
        samples = tf.shape(data)[0]
        return cls(data, weights[None, :], tf.zeros([1], tf.int32), tf.range(samples), tf.zeros([samples], tf.int32))

    def values(self) -> tf.Tensor:
        """<float32>[R, N] every row's values, as a `Run` takes them."""
        return tf.concat([tf.gather(self.data, self.sample_index), tf.gather(self.weights, self.unit_index)], axis=1)

    def program_index(self) -> tf.Tensor:
        """<int32>[R] every row's program."""
        return tf.gather(self.unit_program, self.unit_index)

    def row_by_row(self, run: Run, inputs: Inputs | None = None) -> tf.Tensor:
        """<float32>[R, n_observables] the rows on `run` one by one: what ``run.by_parts(self, inputs)`` equals."""
        return run(self.values(), self.program_index(), inputs, self.sample_index)


class Run(Protocol):
    """A compiled program: ``run(values, program_index, inputs, sample_index) -> <float32>[R, n_observables]``.

    A run may also offer ``run.by_parts(parts: RowParts, inputs) -> <float32>[R, n_observables]``, the same rows
    given by their parts, where it can share work between them (the statevector executor's does).

    Args:
        values: <float32>[R, N] each row's symbol values, laid out as ``Program.symbol_names``.
        program_index: <int32>[R] each row's program, or None (every row on program 0).
        inputs: the batch's input circuits (from the executor's `prepare`) the programs follow, or None
            (every row starts from ``|0...0>``).
        sample_index: <int32>[R] the input circuit of each row, or None (row r on input r).
    """

    def __call__(self, values: tf.Tensor, program_index: tf.Tensor | None = None,
                 inputs: Inputs | None = None, sample_index: tf.Tensor | None = None) -> tf.Tensor: ...


@runtime_checkable
class Executor(Protocol):
    """Compiles `Program`s into `Run`s. `name` says what runs the circuits (``"statevector"``, ``"noiseless"``...);
    `backend` and `repetitions` are the settings it was made from, as a layer's config stores them."""

    name: str
    backend: object
    repetitions: int | None

    def compile(self, program: Program) -> Run: ...

    def prepare(self, circuits: tf.Tensor, qubits: Sequence[cirq.Qid]) -> Inputs:
        """`circuits` <string>[B] as this executor's runs read them, for programs on `qubits`."""
        ...
