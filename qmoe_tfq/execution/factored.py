"""Rows simulated by parts: each sample's data circuit once, each expert's weight circuit once, as a unitary.

A layer's programs are a data part (the encoding, the same for every program) followed by a weight
part (an expert's circuit). Row r, sample s on expert e, ends in ``U_e psi_s``: `psi_s` the data part's
state of sample s, `U_e` the weight part's unitary with e's weights. Dense routing evaluates every
(sample, expert) pair, so B samples on E experts are B * E rows, each through every gate; by parts they
are B rows through the data part, E * 2**n basis states through the weight part (the columns of
each `U_e`), and one <2**n x 2**n> matrix-vector product per (sample, expert) pair. At a few qubits
and many rows that is less work; `pays` says when. A quantum router is one unit whose weights every sample shares
(`RowParts.shared`): at 4 qubits its batch of 64 becomes 16 basis states through its layers.

>>> from qmoe_tfq.execution.program import make_program
>>> q0, q1 = cirq.LineQubit.range(2)
>>> x, w = sympy.symbols("x w")
>>> program = make_program([cirq.Circuit(cirq.ry(x)(q0), cirq.CNOT(q0, q1), cirq.rx(w)(q1))], [[cirq.Z(q1)]],
...                        ["x", "w"], [q0, q1], n_data=1)
>>> parts = RowParts(tf.constant([[0.0], [np.pi]]), tf.constant([[0.0], [np.pi / 2]]), tf.constant([0, 0]),
...                  tf.constant([0, 1, 1]), tf.constant([0, 0, 1]))
>>> initial = tf.one_hot([0, 0], 4, dtype=tf.complex64)  # both samples start in |00>
>>> Factored.of(program)(parts, initial).numpy().round(3)  # rows: (x=0, w=0), (x=pi, w=0), (x=pi, w=pi/2)
array([[ 1.],
       [-1.],
       [ 0.]], dtype=float32)
"""
from __future__ import annotations

from collections.abc import Sequence

import cirq
import tensorflow as tf

from qmoe_tfq.execution.kernel import Kernel
from qmoe_tfq.execution.program import Program, RowParts, decode_strings
from qmoe_tfq.execution.xla import under_xla


def data_part_length(programs: Sequence[Sequence[cirq.Operation]], data: set[str]) -> int | None:
    """How many leading operations form the programs' shared data part, or None if they do not split.

    The data part ends with the last operation reading a data symbol in any program; up to there every
    program must hold the same operations and no weight symbol (re-uploading interleaves them: no split).
    """
    def symbols(op: cirq.Operation) -> set[str]:
        return set(cirq.parameter_names(op))

    length = max((i + 1 for ops in programs for i, op in enumerate(ops) if symbols(op) & data), default=0)
    first = programs[0][:length]
    if any(list(ops[:length]) != list(first) for ops in programs) or any(symbols(op) - data for op in first):
        return None
    return length


def pays(kernel: Kernel, samples: int, rows: int, units: int) -> bool:
    """Whether `rows` rows of `samples` samples on `units` units, which `kernel` runs row by row, run faster by
    parts: the products of every (sample, unit) pair (2**n multiply-adds per amplitude each) must cost less than
    the rows' kernel steps, and the units' basis states must not outnumber the rows. Measured (training steps of
    peers.py's model at 4 qubits, 8 experts, one run): dense 2.0x faster by parts at batch 64 (512 rows), 1.35x
    at 32, 1.17x at 16 (128 rows, as many as the basis states), 16% slower at 8; top-1 at batch 64 17% slower;
    dense at 6 qubits, where a pair's product costs more than a row's 3 steps, level. A router (one unit) by parts,
    4 qubits, batch 64: top-1 training steps 0.95-0.96x the time, inference batches 0.97-0.99x; dense 0.95-1.00x and
    0.96-0.97x."""
    size = 2 ** kernel.n
    return samples * units * size < rows * kernel.step_count * kernel.step_work and rows >= units * size


class Factored:
    """A `Program`'s rows by parts (see the module): ``self(parts, initial)`` runs them."""

    def __init__(self, data_part: Kernel | None, weight_part: Kernel) -> None:
        self.weight_part = weight_part
        self._data = None if data_part is None else under_xla(data_part, readouts=False)
        self._weights = under_xla(weight_part, readouts=False)
        self._size = 2 ** weight_part.n

    @classmethod
    def of(cls, program: Program) -> Factored | None:
        """`program` by parts, or None when its programs do not split into a shared data part and weight parts."""
        names = decode_strings(program.symbol_names)
        data, weights = names[:program.n_data], names[program.n_data:]
        operations = [list(circuit.all_operations()) for circuit in program.cirq_circuits]
        length = data_part_length(operations, set(data))
        if length is None or any(not ops[length:] for ops in operations):
            return None
        data_part = Kernel(cirq.Circuit(operations[0][:length]), [], data, program.qubits) if length else None
        weight_part = Kernel([cirq.Circuit(ops[length:]) for ops in operations], program.cirq_observables, weights,
                             program.qubits)
        return cls(data_part, weight_part)

    def __call__(self, parts: RowParts, initial: tf.Tensor) -> tf.Tensor:
        """<float32>[R, n_ops] the rows' readouts, each sample starting from `initial` <complex64>[B, 2**n]."""
        samples = tf.shape(parts.data)[0]
        states = initial if self._data is None else self._data(
            parts.data, initial, tf.zeros([samples], tf.int32))  # <complex64>[B, 2**n]
        units, size = tf.shape(parts.weights)[0], self._size
        basis = tf.tile(tf.eye(size, dtype=tf.complex64), [units, 1])  # <complex64>[U * 2**n, 2**n]
        columns = self._weights(tf.repeat(parts.weights, size, axis=0), basis,
                                tf.repeat(parts.unit_program, size))  # <complex64>[U * 2**n, 2**n]
        unitaries = tf.reshape(columns, [units, size, size])  # <complex64>[U, 2**n (column j), 2**n (row i)]
        # Every (sample, unit) pair in one product: gathering each row's unitary would hold R * 4**n amplitudes.
        pairs = tf.einsum("bj,uji->bui", states, unitaries)  # <complex64>[B, U, 2**n]
        rows = tf.gather_nd(pairs, tf.stack([parts.sample_index, parts.unit_index], axis=1))  # <complex64>[R, 2**n]
        return self.weight_part.measure(rows, parts.program_index())
