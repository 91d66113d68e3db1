"""The TF statevector kernel: a layer's programs compiled once into a loop of uniform steps.

TFQ pays a fixed cost per circuit row (parse, resolve, fuse) that, below ~10 qubits, is larger
than the simulation itself. Here the programs of a layer (every expert's, however different) are
compiled once, when the layer is built, into one `Kernel` acting on a batched state
<complex64>[rows, 2**n] in which every row has its own program and symbol values:

* gates are scheduled into stages (`ops.stages`): single-qubit gates on a qubit fuse into one
  2x2 matrix per row; diagonal gates (CZ, Rz, ZZ, controlled phases, ...) that can be moved next to
  each other merge into one phase vector; fixed gates that permute the basis states (SWAP, Toffoli,
  CNOT where that saves steps, ...) compose into one permutation, so a CNOT ring costs one gather;
  XX, YY and other CNOTs become diagonal gates between single-qubit basis changes, which fuse in turn;
* stages are packed into *steps* of one shape (`ops.segments`): a layer of single-qubit matrices
  (the identity where a qubit has none), applied as Kronecker products over chunks of at most
  `apply.CHUNK_QUBITS` qubits, then a phase ``exp(i (values[:, columns] . slopes + base))``, then a
  permutation of the amplitudes (where some step of the run has one). Every program
  becomes a table of steps, so the graph is one loop body however deep the circuits are and
  however many programs there are: building and compiling it costs about the same for a 10-gate
  and a 1000-gate circuit;
* other gates with a unitary (ISWAP and SWAP powers, controlled rotations, fixed matrices) split the
  steps and apply their <complex64>[rows, 2**k, 2**k] matrix to their k axes, on their program's rows;
* readouts: every Pauli string is a Z-string after a basis change, so each group of strings that
  needs the same basis change costs one product of |amplitude|^2 with a sign matrix.

Exponents may be ``coefficient * symbol + constant``, as TFQ allows. Gradients come from TF
autodiff; no differentiator is involved.

>>> a = sympy.Symbol("a")
>>> q0, q1 = cirq.LineQubit.range(2)
>>> kernel = Kernel(cirq.Circuit(cirq.rx(a)(q0), cirq.CNOT(q0, q1)), [cirq.Z(q0) * cirq.Z(q1), cirq.Z(q1)], ["a"])
>>> kernel(tf.constant([[0.0], [np.pi / 3]])).numpy().round(3)
array([[1. , 1. ],
       [1. , 0.5]], dtype=float32)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cirq
import numpy as np
import tensorflow as tf

from qmoe_tfq.execution.apply import (CHUNK_QUBITS, apply_general, apply_layer, apply_single, chunks, full,
                                      full_source, permute, take, take_fixed)
from qmoe_tfq.execution.ops import Stage, Step, segments, stages
from qmoe_tfq.execution.singles import SingleMatrices

UNROLL_MAX_STEPS = 4  # runs of at most this many steps are unrolled; longer ones run as a loop
MATMUL_MIN_QUBITS = 6  # readouts are a matrix product from here (summed products: level at 6, 4-7% slower at 8)

_H = np.array([[1, 1], [1, -1]]) / np.sqrt(2)
_S_DAGGER = np.diag([1, -1j])
_BASIS_CHANGE = {"X": _H, "Y": _H @ _S_DAGGER}  # U with U P U^dagger = Z


class StepTable(NamedTuple):
    """One run of steps of every program (identity steps pad the shorter ones)."""

    single: np.ndarray  # <int32>[P, T, n] each axis's fused single-qubit matrix (the last one is the identity)
    columns: np.ndarray  # <int32>[P, T, G] value columns of each step's phase (the zero column pads)
    slopes: np.ndarray  # <float32>[P, T, G, 2**n] phase per unit of each column's value
    base: np.ndarray  # <float32>[P, T, 2**n] constant phase
    source: np.ndarray  # <int32>[P, T, 2**n] where each amplitude comes from in the step's permutation

    @property
    def permutes(self) -> bool:
        """Whether a step of some program permutes the basis states."""
        return bool(np.any(self.source != np.arange(self.source.shape[2])))


class Kernel:
    """Programs compiled: row values <float32>[R, n_symbols] (and program indices, initial states) -> readouts.

    Args:
        circuits: one program, or the programs that rows choose from by `program_index`.
        observables: the readouts (`cirq.PauliSum`s or strings); for several programs, one list per
            program, all equally long.
        symbol_names: the names of the columns of the values the kernel will be called with.
        qubits: the qubits in state order (first = most significant); default: the circuits', sorted.
        chunk: at most this many qubits per Kronecker chunk of a layer (default `apply.CHUNK_QUBITS`).
    """

    MAX_QUBITS = 20

    def __init__(self, circuits: cirq.AbstractCircuit | Sequence[cirq.AbstractCircuit],
                 observables: Sequence[cirq.PauliSum] | Sequence[Sequence[cirq.PauliSum]],
                 symbol_names: Sequence[str], qubits: Sequence[cirq.Qid] | None = None, chunk: int | None = None) -> None:
        one = isinstance(circuits, cirq.AbstractCircuit)
        circuits, observables = ([circuits], [observables]) if one else (list(circuits), list(observables))
        self.qubits = sorted(set().union(*(c.all_qubits() for c in circuits))) if qubits is None else list(qubits)
        self.n = len(self.qubits)
        if self.n > self.MAX_QUBITS:
            raise ValueError(f"the statevector simulator holds at most {self.MAX_QUBITS} qubits, got {self.n}.")
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be a positive number of qubits, got {chunk}.")
        self.chunk = CHUNK_QUBITS if chunk is None else chunk
        self.n_programs = len(circuits)
        axes = {q: a for a, q in enumerate(self.qubits)}
        columns = {name: c for c, name in enumerate(symbol_names)}
        stage_lists = [stages(c, axes, columns) for c in circuits]
        every_gate = [g for scheduled in stage_lists for stage in scheduled for g in stage.gates]
        # The kernel reads only the columns its gates use, then a zero column that pads phases.
        self.columns = sorted({g.column for g in every_gate if g.column is not None})
        for g in every_gate:
            g.column = None if g.column is None else self.columns.index(g.column)
        self.singles = SingleMatrices([[stage for stage in scheduled if stage.kind == "single"]
                                       for scheduled in stage_lists], len(self.columns))
        runs = [segments(scheduled) for scheduled in stage_lists]
        count = max(len(steps) for steps, _ in runs)
        self.runs = [self._step_table([steps[j] if j < len(steps) else [] for steps, _ in runs])
                     for j in range(count)]
        # after run j: (program, general gate) pairs
        self.general = [[(p, general[j]) for p, (_, general) in enumerate(runs) if j < len(general)]
                        for j in range(count)]
        self.readouts = self._readout_groups(observables, axes)

    @property
    def step_count(self) -> int:
        """Steps a row goes through (the longest program's), general gates included."""
        return sum(table.single.shape[1] for table in self.runs) + len(self.runs) - 1

    @property
    def step_work(self) -> int:
        """Multiply-adds per amplitude of one step: the layer's Kronecker chunks, then each symbolic phase term
        (gathered per row when the programs differ), then a permutation's gather where there is one."""
        terms = max(table.columns.shape[2] for table in self.runs)
        permutes = any(table.permutes for table in self.runs)
        return (sum(2 ** size for _, size in chunks(self.n, self.chunk)) + terms * (2 if self.n_programs > 1 else 1)
                + permutes)

    def _step_table(self, programs: Sequence[Sequence[Step]]) -> StepTable:
        """The steps of each program (one run of them) as arrays, padded to the longest program."""
        size, zero = 2 ** self.n, len(self.columns)
        phases = [[self._phase(step.diagonal) for step in steps] for steps in programs]
        length = max(len(steps) for steps in programs)
        width = max([len(slopes) for steps in phases for slopes, _ in steps] + [0])
        table = StepTable(np.full((len(programs), length, self.n), self.singles.identity, np.int32),
                          np.full((len(programs), length, width), zero, np.int32),
                          np.zeros((len(programs), length, width, size), np.float32),
                          np.zeros((len(programs), length, size), np.float32),
                          np.tile(np.arange(size, dtype=np.int32), (len(programs), length, 1)))
        for p, steps in enumerate(programs):
            for t, step in enumerate(steps):
                for gate in step.permutation.gates if step.permutation is not None else []:
                    table.source[p, t] = table.source[p, t][full_source(gate.permutation(), gate.axes, self.n)]
                for axis, stage in step.layer.items():
                    table.single[p, t, axis] = self.singles.index[id(stage)]
                slopes, table.base[p, t] = phases[p][t]
                for g, (column, slope) in enumerate(slopes.items()):
                    table.columns[p, t, g], table.slopes[p, t, g] = column, slope
        return table

    def _phase(self, stage: Stage | None) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """({column: slope <float>[2**n]}, base <float>[2**n]) of a diagonal stage: angles ``sum values * slope + base``."""
        slopes, base = {}, np.zeros(2 ** self.n)
        for g in stage.gates if stage is not None else []:
            local_slope, local_offset = g.phases()
            base += full(local_offset, g.axes, self.n)
            if g.column is not None:
                slopes[g.column] = slopes.get(g.column, 0.0) + full(local_slope, g.axes, self.n)
        return slopes, base

    def _readout_groups(self, observables: Sequence[Sequence[cirq.PauliSum]], axes: dict[cirq.Qid, int]) -> dict:
        """{basis change ((axis, "X"|"Y"), ...): sign matrix <float32>[P, 2**n, n_ops]}."""
        groups: dict[tuple, np.ndarray] = {}
        index = np.arange(2 ** self.n)
        n_ops = len(observables[0])
        for p, program in enumerate(observables):
            for column, observable in enumerate(program):
                for term in cirq.PauliSum.wrap(observable):
                    basis = tuple(sorted((axes[q], str(x)) for q, x in term.items() if str(x) in _BASIS_CHANGE))
                    signs = np.ones(2 ** self.n)
                    for q in term.qubits:
                        signs *= 1 - 2 * ((index >> (self.n - 1 - axes[q])) & 1)
                    matrix = groups.setdefault(basis, np.zeros((self.n_programs, 2 ** self.n, n_ops)))
                    matrix[p, :, column] += np.real(term.coefficient) * signs
        return {basis: matrix.astype(np.float32) for basis, matrix in groups.items()}

    def _run(self, state: tf.Tensor, fused: tf.Tensor, values: tf.Tensor, table: StepTable,
             program_index: tf.Tensor) -> tf.Tensor:
        """`state` <complex64>[R, 2**n] after one run of steps; `values` <float32>[R, C + 1] end in the zero column."""
        length = table.single.shape[1]
        inverse = np.argsort(table.source, axis=2).astype(np.int32)  # <int32>[P, T, 2**n]

        def at(array: np.ndarray, t: int | tf.Tensor) -> tf.Tensor:  # array[:, t] <[P, T, ...]> -> [1 or R, ...]
            step_of_each = tf.gather(tf.constant(array), t, axis=1)
            return step_of_each if self.n_programs == 1 else tf.gather(step_of_each, program_index)

        def step(t: int | tf.Tensor, state: tf.Tensor) -> tf.Tensor:
            state = apply_layer(state, take(fused, at(table.single, t)), self.n, self.chunk)
            angle = at(table.base, t)  # <float32>[R or 1, 2**n]
            if table.slopes.shape[2]:
                used = take(values, at(table.columns, t))  # <float32>[R, G]
                angle += tf.reduce_sum(used[:, :, None] * at(table.slopes, t), axis=1)
            state *= tf.exp(tf.complex(tf.zeros_like(angle), angle))
            return permute(state, at(table.source, t), at(inverse, t)) if table.permutes else state

        if length <= UNROLL_MAX_STEPS:
            for t in range(length):
                state = step(t, state)
            return state
        _, state = tf.while_loop(lambda t, _: t < length, lambda t, s: (t + 1, step(t, s)),
                                 (tf.constant(0), state), maximum_iterations=length)
        return state

    def ground_states(self, rows: tf.Tensor) -> tf.Tensor:
        """<complex64>[rows, 2**n] copies of |0...0>."""
        return tf.cast(tf.one_hot(tf.zeros([rows], tf.int32), 2 ** self.n), tf.complex64)

    def __call__(self, values: tf.Tensor, initial: tf.Tensor | None = None,
                 program_index: tf.Tensor | None = None) -> tf.Tensor:
        """<float32>[R, n_ops] readouts of rows with `values` <float32>[R, n_symbols], from `initial`
        <complex64>[R, 2**n] states or (None) from |0...0>, each on program `program_index` <int32>[R]."""
        return self.measure(self.evolve(values, initial, program_index), program_index)

    def evolve(self, values: tf.Tensor, initial: tf.Tensor | None = None,
               program_index: tf.Tensor | None = None) -> tf.Tensor:
        """<complex64>[R, 2**n] the rows' states after their programs (arguments as `__call__`'s)."""
        values = take_fixed(tf.cast(values, tf.float32), np.array(self.columns, np.int32))  # <float32>[R, C]
        rows = tf.shape(values)[0]
        if self.n_programs > 1 and program_index is None:
            raise ValueError(f"a kernel of {self.n_programs} programs needs each row's program_index.")
        state = self.ground_states(rows) if initial is None else tf.cast(initial, tf.complex64)
        padded = tf.concat([values, tf.zeros([rows, 1])], axis=1)  # <float32>[R, C + 1]
        fused = self.singles(values, program_index)
        for table, general in zip(self.runs, self.general):
            state = self._run(state, fused, padded, table, program_index)
            for program, gate in general:
                applied = apply_general(state, gate.matrix(values), list(gate.axes), self.n)
                state = applied if self.n_programs == 1 else tf.where(
                    tf.equal(program_index, program)[:, None], applied, state)
        return state

    def _readout(self, probabilities: tf.Tensor, signs: np.ndarray) -> tf.Tensor:
        """<float32>[R, n_ops] `probabilities` <float32>[R, 2**n] times `signs` <float32>[2**n, n_ops]: below
        `MATMUL_MIN_QUBITS`, multiplied and summed in the computation's own loops, where XLA:CPU's call out to a
        matrix product cost more than the product (~15 us of a 4-qubit router's ~150 us, measured)."""
        if self.n < MATMUL_MIN_QUBITS:
            return tf.reduce_sum(probabilities[:, :, None] * signs, axis=1)
        return tf.matmul(probabilities, signs)

    def measure(self, state: tf.Tensor, program_index: tf.Tensor | None = None) -> tf.Tensor:
        """<float32>[R, n_ops] each row's observables on `state` <complex64>[R, 2**n], row r's of program
        `program_index[r]`."""
        readouts = 0.0
        for basis, signs in self.readouts.items():
            rotated = state
            for axis, pauli in basis:
                rotated = apply_single(rotated, tf.constant(_BASIS_CHANGE[pauli], tf.complex64), axis, self.n)
            probabilities = tf.math.real(rotated) ** 2 + tf.math.imag(rotated) ** 2  # <float32>[R, 2**n]
            if self.n_programs == 1:
                readouts += self._readout(probabilities, signs[0])  # <float32>[R, n_ops]
            else:
                every = tf.einsum("rd,pdo->rpo", probabilities, signs)  # <float32>[R, P, n_ops]
                readouts += tf.gather(every, program_index, axis=1, batch_dims=1)
        return readouts
