"""How matrices act on a batched state <complex64>[R, 2**n] (first axis = most significant qubit)."""
from __future__ import annotations

import math
import string
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

# A layer is applied as Kronecker products of at most this many qubits' matrices: smaller chunks cost fewer
# multiply-adds, larger ones fewer ops. 3 was within 5% of the fastest size at every width from 4 to 12 qubits
# (benchmarks/chunks.md); 4 was up to 24% slower at 4-8 qubits.
CHUNK_QUBITS = 3
# Up to this many qubits a layer's chunks act as broadcast products summed, which XLA fuses into one loop, rather
# than batched matmuls, which XLA:CPU runs as one tiny product per row: at 4 qubits the benchmark model inferred
# 0.89x and trained 0.85x the time (top-1, with the combine's reshape); at 5 qubits 1.06x and 0.99x, at 6 1.26x
# and 1.17x, at 8 1.58x and 1.72x (one process, the model built twice, alternating rounds).
BROADCAST_MAX_QUBITS = 4


def full(local: np.ndarray, axes: Sequence[int], n: int) -> np.ndarray:
    """<float>[2**n] the value of `local` <float>[2**k] at each basis state, by the bits on `axes`."""
    index = np.arange(2 ** n)
    bits = [(index >> (n - 1 - a)) & 1 for a in axes]
    return local[sum(b << (len(axes) - 1 - i) for i, b in enumerate(bits))]


def full_source(local: np.ndarray, axes: Sequence[int], n: int) -> np.ndarray:
    """<int>[2**n] the source of each basis state under a permutation of the basis states of `axes` that takes local
    state ``local[j]`` to j (`local` <int>[2**k]); the other bits stay."""
    moved = full(local, axes, n)  # <int>[2**n] each state's source, as a local index on `axes`
    source = np.arange(2 ** n)
    for i, axis in enumerate(axes):
        bit = 1 << (n - 1 - axis)
        source = source & ~bit | ((moved >> (len(axes) - 1 - i)) & 1) * bit
    return source


def chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    """(first axis, size) of the balanced chunks of at most `chunk` axes that a layer on `n` qubits is applied in."""
    count = math.ceil(n / chunk)
    sizes = [n // count + (i < n % count) for i in range(count)]
    return [(sum(sizes[:i]), size) for i, size in enumerate(sizes)]


def kron(matrices: tf.Tensor) -> tf.Tensor:
    """<complex64>[R, 2**k, 2**k] the Kronecker product of `matrices` <complex64>[R, k, 2, 2], first most significant."""
    product = matrices[:, 0]
    for i in range(1, matrices.shape[1]):
        size = product.shape[1] * 2
        product = tf.reshape(product[:, :, None, :, None] * matrices[:, i, None, :, None, :], [-1, size, size])
    return product


def layer_blocks(matrices: tf.Tensor, n: int, chunk: int) -> list[tf.Tensor]:
    """The blocks <complex64>[R, 2**size, 2**size] of a layer of `matrices` <complex64>[R, n, 2, 2] (one per axis),
    the Kronecker product of each of `chunks(n, chunk)`."""
    return [kron(matrices[:, first:first + size]) for first, size in chunks(n, chunk)]


def apply_block(state: tf.Tensor, block: tf.Tensor, first: int, size: int, n: int) -> tf.Tensor:
    """`block` <complex64>[R, 2**size, 2**size] on axes ``first .. first + size - 1`` of `state` <complex64>[R, 2**n]."""
    view = tf.reshape(state, [-1, 2 ** first, 2 ** size, 2 ** (n - first - size)])  # <complex64>[R, A, 2**size, B]
    if n <= BROADCAST_MAX_QUBITS:
        applied = tf.reduce_sum(block[:, None, :, :, None] * view[:, :, None], axis=3)  # <complex64>[R, A, 2**size, B]
    else:
        applied = tf.einsum("rij,rajb->raib", block, view)
    return tf.reshape(applied, [-1, 2 ** n])


def block_gradient(upstream: tf.Tensor, state: tf.Tensor, first: int, size: int, n: int) -> tf.Tensor:
    """<complex64>[R, 2**size, 2**size] the gradient of a block applied (`apply_block`) to `state` <complex64>[R, 2**n],
    given the gradient `upstream` <complex64>[R, 2**n] of the result: ``upstream state^H`` over the other axes, as TF
    differentiates a matrix product."""
    shape = [-1, 2 ** first, 2 ** size, 2 ** (n - first - size)]
    after, before = tf.reshape(upstream, shape), tf.math.conj(tf.reshape(state, shape))  # <complex64>[R, A, 2**size, B]
    if n <= BROADCAST_MAX_QUBITS:
        return tf.reduce_sum(after[:, :, :, None] * before[:, :, None], axis=[1, 4])
    return tf.einsum("raib,rajb->rij", after, before)


def dagger(matrices: tf.Tensor) -> tf.Tensor:
    """[..., d, d] each matrix's conjugate transpose."""
    return tf.math.conj(tf.linalg.matrix_transpose(matrices))


def apply_single(state: tf.Tensor, matrix: tf.Tensor, axis: int, n: int) -> tf.Tensor:
    """A fixed `matrix` <complex64>[2, 2] on `axis` of `state` <complex64>[R, 2**n]."""
    view = tf.reshape(state, [-1, 2 ** axis, 2, 2 ** (n - axis - 1)])  # <complex64>[R, A, 2, B]
    return tf.reshape(tf.einsum("ij,rajb->raib", matrix, view), [-1, 2 ** n])


def apply_general(state: tf.Tensor, matrix: tf.Tensor, axes: Sequence[int], n: int) -> tf.Tensor:
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


# A gather's gradient through the indices' one-hot costs (indices x gathered size) multiply-adds per row and
# element; a scatter costs one XLA:CPU loop iteration (~1-2 us of dispatch) per index. Up to this product
# the one-hot is cheaper. `take` serves the gathers of each step in the kernel's loop, whose indices are
# tensors; gathers whose indices are fixed when the kernel is built, which can be far larger (an 8-qubit
# QCNN's 2,400 angles from 141 columns), go through `take_fixed`, whose gradient needs neither.
ONE_HOT_MAX = 2 ** 15


def take(params: tf.Tensor, indices: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Per row r, ``params[r, indices[r]]``; `indices` <int32>[1, ...] (one program) serve every row.

    Where the indices are shared and indices x ``params.shape[1]`` is at most `ONE_HOT_MAX`, its gradient
    contracts the upstream gradient with the indices' one-hot instead of scattering it: XLA:CPU runs a
    scatter as a loop of separately dispatched iterations, one per index. Per-row indices (several programs) keep the gather's own gradient: their one-hot,
    made anew in every step of the kernel's loop, made an 8-qubit QCNN model's training ~20% slower.
    """
    indices = tf.convert_to_tensor(indices, tf.int32)
    size, count = params.shape[1], indices.shape[1:].num_elements()
    if indices.shape[0] != 1 or size is None or count is None or size * count > ONE_HOT_MAX:
        return gather_rows(params, indices)
    return _take(params, indices)


def gather_rows(params: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """[R, K...] per row r, ``params[r, indices[r]]`` (or ``params[r, indices[0]]`` for shared indices)."""
    if indices.shape[0] == 1:
        return tf.gather(params, indices[0], axis=1)
    return tf.gather(params, indices, axis=1, batch_dims=1)


@tf.custom_gradient
def _take(params: tf.Tensor, indices: tf.Tensor):
    """`gather_rows` of shared `indices` <int32>[1, ...], differentiated through their one-hot."""
    def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, None]:
        flat = tf.reshape(indices, [-1])  # <int32>[K]
        one_hot = tf.cast(tf.one_hot(flat, tf.shape(params)[1]), upstream.dtype)  # [K, N]
        per_index = tf.reshape(upstream, [tf.shape(upstream)[0], tf.shape(flat)[0], -1])  # [R, K, M]
        spread = tf.einsum("kn,rkm->rnm", one_hot, per_index)  # [R, N, M]
        return tf.reshape(spread, tf.shape(params)), None
    return gather_rows(params, indices), gradient


def take_fixed(params: tf.Tensor, indices: np.ndarray, program_index: tf.Tensor | None = None) -> tf.Tensor:
    """<[R, *indices.shape, ...]> ``params[:, indices]`` for `indices` fixed when traced (every row's), 0 where an
    index is ``params.shape[1]`` (the zero). With `program_index` <int32>[R], `indices` <int>[P, ...] hold each
    program's, and row r reads those of its program ``program_index[r]`` (<[R, *indices.shape[1:], ...]>).

    Differentiated as a sum of each entry's reads: a gather of them (a table <int32>[C, M] per program, the M reads
    of the most read entry, padded with a zero), where a gather's own gradient is a scatter, which XLA:CPU runs as one
    dispatched loop iteration per index (the single-qubit gates of an 8-qubit QCNN read their angles at 2,400
    indices: ~3 ms a backward pass). Where ``params.shape[1]`` is not known when traced (re-uploaded values),
    every index must be an entry's, and the gather keeps its own gradient.
    """
    size = params.shape[1]
    if size is None:
        return tf.gather(params, indices, axis=1) if program_index is None else gather_rows(
            params, tf.gather(tf.constant(indices, tf.int32), program_index))
    programs = np.asarray(indices, np.int32).reshape(1 if program_index is None else len(indices), -1)  # [P, N]
    count = programs.shape[1]
    tables = [_reads(flat, size) for flat in programs]
    width = max(table.shape[1] for table in tables)
    tables = np.stack([np.pad(table, [(0, 0), (0, width - table.shape[1])], constant_values=count)
                       for table in tables])  # <int32>[P, C, M]; count: the zero

    def per_row(table: np.ndarray) -> tf.Tensor:  # <int32>[R, ...] each row's program's
        return tf.gather(tf.constant(table), program_index)

    def zero_after(tensor: tf.Tensor) -> tf.Tensor:  # [R, K, ...] -> [R, K + 1, ...], K may be 0
        return tf.pad(tensor, [[0, 0], [0, 1]] + [[0, 0]] * (params.shape.rank - 2))

    @tf.custom_gradient
    def gathered(params: tf.Tensor):
        def gradient(upstream: tf.Tensor) -> tf.Tensor:
            shape = tf.concat([tf.shape(params)[:1], [count], tf.shape(params)[2:]], 0)  # N may be 0
            per_read = zero_after(tf.reshape(upstream, shape))  # [R, N + 1, ...]
            reads = tf.gather(per_read, tables[0], axis=1) if program_index is None else gather_rows(
                per_read, per_row(tables))  # [R, C, M, ...]
            return tf.reduce_sum(reads, axis=2)  # [R, C, ...]
        with_zero = zero_after(params)  # [R, C + 1, ...]
        if program_index is None:
            return tf.gather(with_zero, indices, axis=1), gradient
        return gather_rows(with_zero, per_row(np.asarray(indices, np.int32))), gradient
    return gathered(params)


def take_fixed_unitaries(matrices: tf.Tensor, indices: np.ndarray, program_index: tf.Tensor | None = None) -> tf.Tensor:
    """`take_fixed` of 2x2 `matrices` <complex64>[R, C, 2, 2], the identity (not 0) where an index is C: empty slots,
    and no gradient for them."""
    identity = tf.eye(2, dtype=matrices.dtype)
    return take_fixed(matrices - identity, indices, program_index) + identity


def _reads(flat: np.ndarray, size: int) -> np.ndarray:
    """<int32>[size, M] where in `flat` <int32>[N] each entry below `size` is read, by rank, padded with N."""
    order = np.argsort(flat, kind="stable")  # the reads, entry by entry
    order = order[flat[order] < size]  # not the zero's
    entries = flat[order]
    table = np.full((size, max(np.bincount(entries, minlength=1).max(), 1)), flat.size, np.int32)
    table[entries, np.arange(len(order)) - np.searchsorted(entries, entries)] = order  # column: the read's rank
    return table


@tf.custom_gradient
def permute(state: tf.Tensor, source: tf.Tensor, inverse: tf.Tensor):
    """`state` <complex64>[R, 2**n] with amplitude i taken from ``source[i]``, `source` and its `inverse` <int32>[1 or R,
    2**n] shared or per row; differentiated as the gather at `inverse` (TF's own gradient would scatter)."""
    def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, None, None]:
        return gather_rows(upstream, inverse), None, None
    return gather_rows(state, source), gradient
