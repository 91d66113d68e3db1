"""A TensorFlow statevector simulator for small circuits: each program compiled once into TF ops.

TFQ pays a fixed cost per circuit row (parse, resolve, fuse) that, below ~10 qubits, is larger
than the simulation itself. Here a `cirq.Circuit` is compiled once, when a layer is built, into a
short list of *stages* that act on a batched state <complex64>[rows, 2**n] where every row has its
own symbol values:

* single-qubit gates on a qubit, however many in a row, fuse into one 2x2 matrix per row, applied
  as an elementwise update of the two halves of that qubit's axis;
* diagonal gates (CZ, Rz, ZZ, controlled phases, ...) that can be moved next to each other merge
  into one phase vector per row, ``exp(i (values @ W + b))``: one matmul for a whole CZ layer;
* CNOT, XX and YY become diagonal gates between single-qubit basis changes, which fuse in turn;
* a qubit's first single-qubit gates act on |0>: the state starts as their product state;
* readouts: every Pauli string is a Z-string after a basis change, so each group of strings that
  needs the same basis change costs one matmul of |amplitude|^2 with a sign matrix.

Anything else with a unitary (ISWAP and SWAP powers, controlled gates, fixed matrices) applies its
<complex64>[rows, 2**k, 2**k] matrix to its k axes. Exponents may be ``coefficient * symbol +
constant``, as TFQ allows. Gradients come from TF autodiff; no differentiator is involved.

>>> a = sympy.Symbol("a")
>>> q0, q1 = cirq.LineQubit.range(2)
>>> kernel = Kernel(cirq.Circuit(cirq.rx(a)(q0), cirq.CNOT(q0, q1)), [cirq.Z(q0) * cirq.Z(q1), cirq.Z(q1)], ["a"])
>>> kernel(tf.constant([[0.0], [np.pi / 2]])).numpy().round(3)
array([[1., 1.],
       [1., 0.]], dtype=float32)
"""
from __future__ import annotations

import string
from collections.abc import Sequence

import cirq
import numpy as np
import tensorflow as tf
import tensorflow_quantum as tfq
from tensorflow_quantum.core.ops import tfq_simulate_ops

from qmoe_tfq.programs import check_input_circuits, qubit_ids
from qmoe_tfq.simulators.gates import Stage, gates, schedule

XLA_MIN_QUBITS = 6  # below, XLA's compile time per shape outweighs what it saves per step
KRON_MAX_QUBITS = 10  # a layer of single-qubit gates as two Kronecker halves up to here (see Kernel._apply_layer)
AUTO_MAX_QUBITS = 12  # training crossover with TFQ qsim measured at 12-14 qubits here (dense first)

_H = np.array([[1, 1], [1, -1]]) / np.sqrt(2)
_S_DAGGER = np.diag([1, -1j])
_BASIS_CHANGE = {"X": _H, "Y": _H @ _S_DAGGER}  # U with U P U^dagger = Z


def _full(local: np.ndarray, axes: Sequence[int], n: int) -> np.ndarray:
    """<float>[2**n] the value of `local` <float>[2**k] at each basis state, by the bits on `axes`."""
    index = np.arange(2 ** n)
    bits = [(index >> (n - 1 - a)) & 1 for a in axes]
    return local[sum(b << (len(axes) - 1 - i) for i, b in enumerate(bits))]


def _apply_single(state: tf.Tensor, matrix: tf.Tensor, axis: int, n: int) -> tf.Tensor:
    """`matrix` <complex64>[R, 2, 2] or [2, 2] on `axis` of `state` <complex64>[R, 2**n]: two halves, updated."""
    halves = tf.reshape(state, [-1, 2 ** axis, 2, 2 ** (n - axis - 1)])  # <complex64>[R, A, 2, B]
    low, high = halves[:, :, 0], halves[:, :, 1]  # <complex64>[R, A, B]
    m = matrix[:, :, :, None, None] if matrix.shape.rank == 3 else matrix[None, :, :, None, None]  # [R or 1, 2, 2, 1, 1]
    updated = tf.stack([m[:, 0, 0] * low + m[:, 0, 1] * high, m[:, 1, 0] * low + m[:, 1, 1] * high], axis=2)
    return tf.reshape(updated, [-1, 2 ** n])  # <complex64>[R, 2**n]


def _apply_general(state: tf.Tensor, matrix: tf.Tensor, axes: Sequence[int], n: int) -> tf.Tensor:
    """`matrix` <complex64>[R, d, d] or [d, d] on `axes` of `state` <complex64>[R, 2**n]."""
    k, names = len(axes), string.ascii_lowercase
    before = names[:n]
    new = names[n:n + k]
    after = "".join(new[axes.index(a)] if a in axes else before[a] for a in range(n))
    row = "Z" if matrix.shape.rank == 3 else ""
    local = tf.reshape(matrix, [-1] * len(row) + [2] * (2 * k))  # <complex64>[R?, 2, ..., 2]
    spec = f"{row}{new}{''.join(before[a] for a in axes)},Z{before}->Z{after}"
    updated = tf.einsum(spec, local, tf.reshape(state, [-1] + [2] * n))  # <complex64>[R, 2, ..., 2]
    return tf.reshape(updated, [-1, 2 ** n])


def _kron(matrices: Sequence[tf.Tensor | None]) -> tf.Tensor | None:
    """<complex64>[R, 2**k, 2**k] the Kronecker product of per-row 2x2 matrices (None: identity), first
    most significant; None when all are identities."""
    if all(m is None for m in matrices):
        return None
    product = tf.ones([1, 1, 1], tf.complex64)
    for matrix in matrices:
        matrix = tf.eye(2, batch_shape=[1], dtype=tf.complex64) if matrix is None else matrix
        size = product.shape[1] * 2
        product = tf.reshape(product[:, :, None, :, None] * matrix[:, None, :, None, :], [-1, size, size])
    return product


class Kernel:
    """One program compiled: row values <float32>[R, n_symbols] (and optionally initial states) -> readouts.

    Args:
        circuit: the program.
        observables: the readouts, `cirq.PauliSum`s (or strings) on the circuit's qubits.
        symbol_names: the names of the columns of the values the kernel will be called with.
        qubits: the qubits in state order (first = most significant); default: the circuit's, sorted.
    """

    MAX_QUBITS = 20

    def __init__(self, circuit: cirq.AbstractCircuit, observables: Sequence[cirq.PauliSum],
                 symbol_names: Sequence[str], qubits: Sequence[cirq.Qid] | None = None) -> None:
        self.qubits = sorted(circuit.all_qubits()) if qubits is None else list(qubits)
        self.n = n = len(self.qubits)
        if n > self.MAX_QUBITS:
            raise ValueError(f"the statevector simulator holds at most {self.MAX_QUBITS} qubits, got {n}.")
        axes = {q: a for a, q in enumerate(self.qubits)}
        gate_list = gates(circuit, axes, {name: c for c, name in enumerate(symbol_names)})
        # The kernel reads only the columns its gates use.
        self.columns = sorted({g.column for g in gate_list if g.column is not None})
        for g in gate_list:
            g.column = None if g.column is None else self.columns.index(g.column)
        self.stages = schedule(gate_list)
        self.diagonals = {id(s): self._phase_table(s) for s in self.stages if s.kind == "diagonal"}
        # On |0...0>, each qubit's first stage, if single, is folded into a product state.
        first = {}
        for stage in self.stages:
            for a in stage.axes:
                first.setdefault(a, stage)
        self.leading = {a: s for a, s in first.items() if s.kind == "single"}
        self._single_tables()
        self.readouts = self._readout_groups(observables, axes)

    def _single_tables(self) -> None:
        """Every single-qubit gate as rows of one table, so all their matrices are made in a few ops."""
        singles = [stage for stage in self.stages if stage.kind == "single"]
        self.single_index = {id(stage): i for i, stage in enumerate(singles)}
        gate_list = [g for stage in singles for g in stage.gates]
        width = max([len(g.projectors) for g in gate_list] + [1])  # eigencomponents J (2 for rotations)
        pad = [width - len(g.projectors) for g in gate_list]
        # Fixed gates read the zero column appended after the used ones, with slope 0.
        self._columns = np.array([len(self.columns) if g.column is None else g.column for g in gate_list], np.int32)
        self._slopes = np.array([np.pad(g.slope, (0, p)) for g, p in zip(gate_list, pad)], np.float32).reshape(-1, width)
        self._offsets = np.array([np.pad(g.offset, (0, p)) for g, p in zip(gate_list, pad)], np.float32).reshape(
            -1, width)
        self._projectors = np.array([np.concatenate([g.projectors.reshape(-1, 2, 2), np.zeros((p, 2, 2))])
                                     for g, p in zip(gate_list, pad)], np.complex64).reshape(-1, width, 2, 2)
        self._fixed = np.array([g.fixed for g in gate_list], np.complex64).reshape(-1, 2, 2)
        depth = max([len(stage.gates) for stage in singles] + [1])
        starts = np.cumsum([0] + [len(stage.gates) for stage in singles])
        # fusion[s, k]: the k-th gate of single stage s, or the identity appended after the G gates.
        self._fusion = np.array([[starts[i] + k if k < len(stage.gates) else len(gate_list) for k in range(depth)]
                                 for i, stage in enumerate(singles)], np.int32).reshape(-1, depth)

    def _phase_table(self, stage: Stage) -> tuple[np.ndarray | None, np.ndarray]:
        """(W <float32>[n_columns, 2**n] or None, b <float32>[2**n]): phase angles ``values @ W + b``."""
        slope, base = np.zeros((len(self.columns), 2 ** self.n)), np.zeros(2 ** self.n)
        for g in stage.gates:
            local_slope, local_offset = g.phases()
            base += _full(local_offset, g.axes, self.n)
            if g.column is not None:
                slope[g.column] += _full(local_slope, g.axes, self.n)
        symbolic = any(g.column is not None for g in stage.gates)
        return (slope.astype(np.float32) if symbolic else None), base.astype(np.float32)

    def _readout_groups(self, observables: Sequence[cirq.PauliSum], axes: dict[cirq.Qid, int]) -> dict:
        """{basis change ((axis, "X"|"Y"), ...): sign matrix <float32>[2**n, n_ops]}."""
        groups: dict[tuple, np.ndarray] = {}
        index = np.arange(2 ** self.n)
        for column, observable in enumerate(observables):
            for term in cirq.PauliSum.wrap(observable):
                basis = tuple(sorted((axes[q], str(p)) for q, p in term.items() if str(p) in _BASIS_CHANGE))
                signs = np.ones(2 ** self.n)
                for q in term.qubits:
                    signs *= 1 - 2 * ((index >> (self.n - 1 - axes[q])) & 1)
                groups.setdefault(basis, np.zeros((2 ** self.n, len(observables))))[:, column] += (
                    np.real(term.coefficient) * signs)
        return {basis: matrix.astype(np.float32) for basis, matrix in groups.items()}

    def _fused(self, values: tf.Tensor) -> tf.Tensor:
        """<complex64>[R, S, 2, 2] each single stage's fused matrix per row."""
        rows = tf.shape(values)[0]
        padded = tf.concat([values, tf.zeros([rows, 1])], axis=1)  # <float32>[R, C + 1]
        angle = tf.gather(padded, self._columns, axis=1)[:, :, None] * self._slopes + self._offsets  # <float32>[R, G, J]
        phases = tf.complex(tf.cos(angle), tf.sin(angle))  # <complex64>[R, G, J]
        matrices = tf.einsum("rgj,gjab->rgab", phases, self._projectors) + self._fixed  # <complex64>[R, G, 2, 2]
        identity = tf.broadcast_to(tf.eye(2, dtype=tf.complex64), [rows, 1, 2, 2])
        stacked = tf.gather(tf.concat([matrices, identity], axis=1), self._fusion, axis=1)  # <complex64>[R, S, K, 2, 2]
        fused = stacked[:, :, 0]  # <complex64>[R, S, 2, 2]
        for k in range(1, self._fusion.shape[1]):
            fused = tf.matmul(stacked[:, :, k], fused)
        return fused

    def _start(self, fused: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        """<complex64>[R, 2**n] the product state of the leading single-qubit stages on |0...0>."""
        state = tf.ones([1, 1], tf.complex64)
        for axis in range(self.n):
            column = tf.constant([[1, 0]], tf.complex64)  # <complex64>[1, 2]
            if axis in self.leading:
                column = fused[:, self.single_index[id(self.leading[axis])], :, 0]  # <complex64>[R, 2]
            state = tf.reshape(state[:, :, None] * column[:, None, :], [-1, 2 ** (axis + 1)])
        return tf.broadcast_to(state, [rows, 2 ** self.n])

    def _apply_layer(self, state: tf.Tensor, fused: tf.Tensor, layer: dict[int, int]) -> tf.Tensor:
        """Single stages on distinct axes (`layer`: axis -> stage index) applied to `state` <complex64>[R, 2**n].

        Up to `KRON_MAX_QUBITS`, as two Kronecker products over the halves of the axes, so a whole layer
        is two batched matmuls (same flops as axis by axis at 8 qubits, a tenth of the ops); above, axis by axis.
        """
        if self.n > KRON_MAX_QUBITS:
            for axis, index in layer.items():
                state = _apply_single(state, fused[:, index], axis, self.n)
            return state
        half = self.n // 2
        sides = [_kron([fused[:, layer[a]] if a in layer else None for a in axes])
                 for axes in (range(half), range(half, self.n))]
        block = tf.reshape(state, [-1, 2 ** half, 2 ** (self.n - half)])  # <complex64>[R, 2**h, 2**(n-h)]
        if sides[0] is not None:
            block = tf.matmul(sides[0], block)
        if sides[1] is not None:
            block = tf.matmul(block, sides[1], transpose_b=True)
        return tf.reshape(block, [-1, 2 ** self.n])

    def __call__(self, values: tf.Tensor, initial: tf.Tensor | None = None) -> tf.Tensor:
        """<float32>[R, n_ops] readouts of rows with `values` <float32>[R, n_symbols], from `initial`
        <complex64>[R, 2**n] states or (None) from |0...0>."""
        values = tf.gather(tf.cast(values, tf.float32), self.columns, axis=1)  # <float32>[R, used columns]
        fused = self._fused(values)
        if initial is None:
            state, done = self._start(fused, tf.shape(values)[0]), {id(s) for s in self.leading.values()}
        else:
            state, done = tf.cast(initial, tf.complex64), set()  # <complex64>[R, 2**n]
        layer: dict[int, int] = {}  # consecutive single stages (on distinct axes), applied together
        for stage in [s for s in self.stages if id(s) not in done] + [None]:
            if stage is not None and stage.kind == "single":
                layer[next(iter(stage.axes))] = self.single_index[id(stage)]
                continue
            if layer:
                state, layer = self._apply_layer(state, fused, layer), {}
            if stage is None:
                break
            if stage.kind == "diagonal":
                slope, base = self.diagonals[id(stage)]
                angle = tf.constant(base) if slope is None else tf.matmul(values, slope) + base  # <float32>[R or 1, 2**n]
                state = state * tf.complex(tf.cos(angle), tf.sin(angle))
            else:
                (g,) = stage.gates
                state = _apply_general(state, g.matrix(values), list(g.axes), self.n)
        readouts = 0.0
        for basis, signs in self.readouts.items():
            rotated = state
            for axis, pauli in basis:
                rotated = _apply_single(rotated, tf.constant(_BASIS_CHANGE[pauli], tf.complex64), axis, self.n)
            probabilities = tf.math.real(rotated) ** 2 + tf.math.imag(rotated) ** 2  # <float32>[R, 2**n]
            readouts += tf.matmul(probabilities, signs)  # <float32>[R, n_ops]
        return readouts


class StatevectorExecutor:
    """Runs `Program`s with `Kernel`s: exact expectations, gradients by TF autodiff.

    Rows are grouped by program, each group through its program's kernel. Input circuits (quantum
    data) are simulated once per sample by TFQ's state op and each row starts from its sample's
    state; without them the graph holds plain TF ops only (a SavedModel then needs no TFQ).
    """

    name = backend = "statevector"
    repetitions = None

    def compile(self, program) -> callable:
        """The `backends.Run` of `program` (a `backends.Program`), its kernels compiled now."""
        names = list(program.symbol_names.numpy().astype(str))
        kernels = [Kernel(circuit, observables, names, program.qubits)
                   for circuit, observables in zip(program.sources, program.observables)]
        # XLA measured ~1.3x faster for training and 2-3x for inference at 8 qubits. It compiles per row
        # count (about a second each), so it is kept to one program (several split rows into counts that
        # vary from batch to batch) and to widths where a step's simulation is worth a compile.
        if len(kernels) == 1 and len(program.qubits) >= XLA_MIN_QUBITS:
            kernels = [tf.function(kernels[0].__call__, jit_compile=True)]
        identity = tfq.convert_to_tensor([cirq.Circuit(cirq.I.on_each(*program.qubits))])  # <string>[1]
        allowed = qubit_ids(program.qubits)  # <string>[n]

        def run(values: tf.Tensor, program_index: tf.Tensor | None = None, circuits: tf.Tensor | None = None,
                sample_index: tf.Tensor | None = None) -> tf.Tensor:
            initial = None
            if circuits is not None:
                circuits = check_input_circuits(circuits, allowed, "the statevector simulator")
                padded = tfq.append_circuit(circuits, tf.tile(identity, [tf.shape(circuits)[0]]))  # <string>[B]
                states = tfq_simulate_ops.tfq_simulate_state(padded, tf.constant([], tf.string),
                                                             tf.zeros([tf.shape(circuits)[0], 0]))
                initial = states if sample_index is None else tf.gather(states, sample_index)  # <complex64>[R, 2**n]
            if len(kernels) == 1:
                return kernels[0](values, initial)
            rows = tf.range(tf.shape(values)[0])  # <int32>[R]
            positions = tf.dynamic_partition(rows, program_index, len(kernels))
            parts = tf.dynamic_partition(values, program_index, len(kernels))
            starts = [None] * len(kernels) if initial is None else tf.dynamic_partition(
                initial, program_index, len(kernels))
            return tf.dynamic_stitch(positions, [k(v, s) for k, v, s in zip(kernels, parts, starts)])
        return run
