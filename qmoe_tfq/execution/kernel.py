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

Exponents may be ``coefficient * symbol + constant``, as TFQ allows. No differentiator is involved:
programs with a loop are differentiated by the adjoint method (`evolve_gradient`: undone step by step
from the final states, each step's own gradient from TF autodiff), short ones by TF autodiff.

>>> a = sympy.Symbol("a")
>>> q0, q1 = cirq.LineQubit.range(2)
>>> kernel = Kernel(cirq.Circuit(cirq.rx(a)(q0), cirq.CNOT(q0, q1)), [cirq.Z(q0) * cirq.Z(q1), cirq.Z(q1)], ["a"])
>>> kernel(tf.constant([[0.0], [np.pi / 3]])).numpy().round(3)
array([[1. , 1. ],
       [1. , 0.5]], dtype=float32)
"""
from __future__ import annotations

from collections.abc import Sequence

import cirq
import numpy as np
import tensorflow as tf

from qmoe_tfq.execution.apply import (CHUNK_QUBITS, apply_general, apply_single, chunks, dagger, full, full_source,
                                      take_fixed)
from qmoe_tfq.execution.ops import Stage, Step, Unitary, segments, stages
from qmoe_tfq.execution.singles import SingleMatrices
from qmoe_tfq.execution.steps import Steps, StepTable

MATMUL_MIN_QUBITS = 6  # readouts are a matrix product from here (summed products: level at 6, 4-7% slower at 8)

_H = np.array([[1, 1], [1, -1]]) / np.sqrt(2)
_S_DAGGER = np.diag([1, -1j])
_BASIS_CHANGE = {"X": _H, "Y": _H @ _S_DAGGER}  # U with U P U^dagger = Z


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
        self.runs = [Steps(self._step_table([steps[j] if j < len(steps) else [] for steps, _ in runs]), self.n,
                           self.chunk) for j in range(count)]
        # after run j: (program, general gate) pairs
        self.general = [[(p, general[j]) for p, (_, general) in enumerate(runs) if j < len(general)]
                        for j in range(count)]
        self.readouts = self._readout_groups(observables, axes)

    @property
    def step_count(self) -> int:
        """Steps a row goes through (the longest program's), general gates included."""
        return sum(steps.length for steps in self.runs) + len(self.runs) - 1

    @property
    def step_work(self) -> int:
        """Multiply-adds per amplitude of one step: the layer's Kronecker chunks, then each symbolic phase term
        (gathered per row when the programs differ), then a permutation's gather where there is one."""
        terms = max(steps.table.columns.shape[2] for steps in self.runs)
        permutes = any(steps.table.permutes for steps in self.runs)
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

    def ground_states(self, rows: tf.Tensor) -> tf.Tensor:
        """<complex64>[rows, 2**n] copies of |0...0>."""
        return tf.cast(tf.one_hot(tf.zeros([rows], tf.int32), 2 ** self.n), tf.complex64)

    def __call__(self, values: tf.Tensor, initial: tf.Tensor | None = None,
                 program_index: tf.Tensor | None = None) -> tf.Tensor:
        """<float32>[R, n_ops] readouts of rows with `values` <float32>[R, n_symbols], from `initial`
        <complex64>[R, 2**n] states or (None) from |0...0>, each on program `program_index` <int32>[R]."""
        return self.measure(self.evolve(values, initial, program_index), program_index)

    @property
    def adjoint(self) -> bool:
        """Whether `evolve` is differentiated by `evolve_gradient` (where some run is a loop, whose intermediates TF
        would stack), else by TF autodiff of its straight-line steps, which XLA fuses. Kernel alone, one process,
        alternating rounds: the user-style experts (3 programs, 33 steps, 16 rows) trained as fast by undoing
        (0.97-0.99x) and compiled in 1.7 instead of 2.2 s; 3-step 8-qubit programs at 64 rows trained 0.76-0.81x as
        fast by undoing."""
        return any(steps.loops for steps in self.runs)

    def evolve(self, values: tf.Tensor, initial: tf.Tensor | None = None,
               program_index: tf.Tensor | None = None) -> tf.Tensor:
        """<complex64>[R, 2**n] the rows' states after their programs (arguments as `__call__`'s)."""
        values = tf.cast(values, tf.float32)
        rows = tf.shape(values)[0]
        if self.n_programs > 1 and program_index is None:
            raise ValueError(f"a kernel of {self.n_programs} programs needs each row's program_index.")
        program_index = tf.zeros([rows], tf.int32) if program_index is None else program_index  # <int32>[R]
        initial = self.ground_states(rows) if initial is None else tf.cast(initial, tf.complex64)
        if not self.adjoint:
            return self._forward(values, initial, program_index)

        @tf.custom_gradient
        def evolved(values: tf.Tensor, initial: tf.Tensor):
            final = self._forward(values, initial, program_index)

            def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                return self.evolve_gradient(values, final, upstream, program_index)
            return final, gradient
        return evolved(values, initial)

    def _forward(self, values: tf.Tensor, initial: tf.Tensor, program_index: tf.Tensor) -> tf.Tensor:
        """<complex64>[R, 2**n] `initial` after the programs."""
        picked, padded, fused = self._prepared(values, program_index)
        state = initial
        for steps, general in zip(self.runs, self.general):
            state = steps.forward(state, fused, padded, program_index)
            for program, gate in general:
                state = self._apply_general(state, gate, gate.matrix(picked), program, program_index)
        return state

    def evolve_gradient(self, values: tf.Tensor, final: tf.Tensor, upstream: tf.Tensor,
                        program_index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(<float32>[R, n_symbols] the gradient of `values`, <complex64>[R, 2**n] that of the initial states), given
        the states after `evolve` `final` and their gradient `upstream` <complex64>[R, 2**n]: the programs undone
        from `final` backwards (`steps.Steps.backward`), nothing of the forward pass kept or run again."""
        with tf.GradientTape() as tape:
            tape.watch(values)
            picked, padded, fused = self._prepared(values, program_index)
            matrices = [[gate.matrix(picked) for _, gate in general] for general in self.general]
        targets, gradients = [fused, padded], [tf.zeros_like(fused), tf.zeros_like(padded)]
        state = final
        for steps, general, run_matrices in reversed(list(zip(self.runs, self.general, matrices))):
            for (program, gate), matrix in reversed(list(zip(general, run_matrices))):  # few: applied again, taped
                state = self._apply_general(state, gate, dagger(matrix), program, program_index)
                with tf.GradientTape() as inner:
                    inner.watch([state, matrix])
                    after = self._apply_general(state, gate, matrix, program, program_index)
                upstream, d_matrix = inner.gradient(after, [state, matrix], output_gradients=upstream,
                                                    unconnected_gradients=tf.UnconnectedGradients.ZERO)
                targets.append(matrix)
                gradients.append(d_matrix)
            state, upstream, d_fused, d_padded = steps.backward(state, upstream, fused, padded, program_index)
            gradients[:2] = gradients[0] + d_fused, gradients[1] + d_padded
        d_values = tape.gradient(targets, values, output_gradients=gradients,
                                 unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return d_values, upstream

    def _prepared(self, values: tf.Tensor, program_index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(the columns the gates read <float32>[R, C], the same with the zero column [R, C + 1], the fused
        single-qubit matrices <complex64>[R, M, 2, 2]) of `values` <float32>[R, n_symbols]."""
        picked = take_fixed(values, np.array(self.columns, np.int32))  # <float32>[R, C]
        padded = tf.concat([picked, tf.zeros([tf.shape(picked)[0], 1])], axis=1)  # <float32>[R, C + 1]
        return picked, padded, self.singles(picked, program_index)

    def _apply_general(self, state: tf.Tensor, gate: Unitary, matrix: tf.Tensor, program: int,
                       program_index: tf.Tensor) -> tf.Tensor:
        """`matrix` (`gate`'s or its inverse) applied to the rows of `state` <complex64>[R, 2**n] on `program`."""
        applied = apply_general(state, matrix, list(gate.axes), self.n)  # <complex64>[R, 2**n]
        return applied if self.n_programs == 1 else tf.where(tf.equal(program_index, program)[:, None], applied, state)

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
