"""Each row's single-qubit stages as fused 2x2 matrices, made only for the row's own program.

The kernel fuses consecutive single-qubit gates on a qubit into one stage; a step's layer then gathers
each axis's fused matrix per row. With several programs (different experts) every row makes only
its own program's matrices: each program's single stages sit in the slots of one grid.

>>> from qmoe_tfq.execution.ops import stages
>>> a = sympy.Symbol("a")
>>> q = cirq.LineQubit(0)
>>> columns = {"a": 0}
>>> programs = [[s for s in stages(circuit, {q: 0}, columns) if s.kind == "single"]
...             for circuit in (cirq.Circuit(cirq.rx(a)(q), cirq.X(q)), cirq.Circuit(cirq.H(q)))]
>>> singles = SingleMatrices(programs, n_columns=1)
>>> values = tf.constant([[np.pi], [np.pi]])
>>> np.abs(singles(values, tf.constant([0, 1])).numpy()).round(3)[:, 0]  # X rx(pi) ~ the identity; H
array([[[1.   , 0.   ],
        [0.   , 1.   ]],
<BLANKLINE>
       [[0.707, 0.707],
        [0.707, 0.707]]], dtype=float32)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from qmoe_tfq.execution.apply import dagger, take_fixed, take_fixed_unitaries
from qmoe_tfq.execution.ops import Stage


class SingleMatrices:
    """Each program's single-qubit gates in the slots of one grid <[P, S + 1, K]>: its single stages by S, their
    gates by K, the identity where a stage has fewer gates or a program fewer stages, and in the last slot. A row
    makes only its own program's matrices from the grid, and fuses them along K.

    One program keeps only its G gates' rows instead, and `_fusion` <int32>[S + 1, K] gathers their matrices into
    the grid (G: the identity): it has no other program's matrices to skip, and empty slots cost one each (at 4
    qubits, the benchmark ansatz's grid made inference ~12% slower).

    Args:
        singles: each program's single-qubit stages, in order.
        n_columns: the value columns the gates read.

    Attributes:
        index: {id(stage): its slot} (a slot number is the same stage's in its own program only).
        identity: the slot of the identity, after every program's stages.
    """

    def __init__(self, singles: Sequence[Sequence[Stage]], n_columns: int) -> None:
        self.n_programs = len(singles)
        self.index = {id(stage): s for program in singles for s, stage in enumerate(program)}
        self.identity = max(len(program) for program in singles)  # the fused table's last matrix
        gates = [g for program in singles for stage in program for g in stage.gates]
        depth = max([len(stage.gates) for program in singles for stage in program] + [1])
        width = max([len(g.projectors) for g in gates] + [1])  # eigencomponents J (2 for rotations)
        grid = (self.n_programs, self.identity + 1, depth)
        filled = np.zeros(grid, bool)
        self._columns = np.full(grid, n_columns, np.int32)  # fixed gates and empty slots: no column (a zero)
        self._slopes = np.zeros(grid + (width,), np.float32)
        self._offsets = np.zeros(grid + (width,), np.float32)
        self._projectors = np.zeros(grid + (width, 2, 2), np.complex64)
        self._fixed = np.tile(np.eye(2, dtype=np.complex64), grid + (1, 1))
        for p, program in enumerate(singles):
            for s, stage in enumerate(program):
                for k, g in enumerate(stage.gates):
                    terms = len(g.projectors)
                    filled[p, s, k] = True
                    self._columns[p, s, k] = n_columns if g.column is None else g.column
                    self._slopes[p, s, k, :terms], self._offsets[p, s, k, :terms] = g.slope, g.offset
                    self._projectors[p, s, k, :terms] = g.projectors.reshape(-1, 2, 2)
                    self._fixed[p, s, k] = g.fixed
        if self.n_programs == 1:
            slots = np.flatnonzero(filled)  # <int>[G] where each gate sits in the grid
            self._fusion = np.full(filled.size, len(slots), np.int32)
            self._fusion[slots] = np.arange(len(slots))
            self._fusion = self._fusion.reshape(grid[1:])
            self._columns, self._slopes, self._offsets, self._projectors, self._fixed = (
                table.reshape(filled.size, *table.shape[3:])[slots]
                for table in (self._columns, self._slopes, self._offsets, self._projectors, self._fixed))

    def __call__(self, values: tf.Tensor, program_index: tf.Tensor | None) -> tf.Tensor:
        """<complex64>[R, S + 1, 2, 2] each single-stage slot's fused matrix per row, of the row's program (the last:
        the identity), from `values` <float32>[R, C].

        2x2 products are written out elementwise: as batched matmuls they cost more than the rest of a step.
        """
        if self.n_programs == 1:
            angle = take_fixed(values, self._columns)[:, :, None] * self._slopes + self._offsets  # <float32>[R, G, J]
            projectors, fixed = self._projectors, self._fixed  # shared
        else:
            angle = take_fixed(values, self._columns)[..., None] * self._slopes + self._offsets  # [R, P, S + 1, K, J]
            # Angles are cheap for every program; the complex matrices and their products only for the row's own.
            own = tf.one_hot(program_index, self.n_programs)[:, :, None, None, None]  # <float32>[R, P, 1, 1, 1]
            angle = tf.reduce_sum(own * angle, axis=1)  # <float32>[R, S + 1, K, J]
            projectors = tf.gather(self._projectors, program_index)  # <complex64>[R, S + 1, K, J, 2, 2]
            fixed = tf.gather(self._fixed, program_index)  # <complex64>[R, S + 1, K, 2, 2]
        # exp, not cos and sin: XLA counts those cheap and fused them into a gather after them, which then computed
        # them once per element of the gathered matrices (~5.6x too often at 4 qubits); exp keeps a loop of its own.
        phases = tf.exp(tf.complex(tf.zeros_like(angle), angle))  # <complex64>[R, G, J] or [R, S + 1, K, J]
        # Summed term by term over the J eigencomponents: XLA ran a reduce over that short axis slower.
        terms = (phases[..., j, None, None] * projectors[..., j, :, :] for j in range(self._slopes.shape[-1]))
        matrices = sum(terms, fixed)  # <complex64>[R, G, 2, 2] or [R, S + 1, K, 2, 2]
        if self.n_programs == 1:  # empty slots: the identity
            matrices = take_fixed_unitaries(matrices, self._fusion)  # [R, S + 1, K, 2, 2]
        while matrices.shape[2] > 1:  # pairwise, each later gate on the left: log2(K) rounds, not K - 1 products
            pairs = matrices.shape[2] // 2
            # <complex64>[R, S + 1, K/2, 2 (earlier, later), 2, 2]
            paired = tf.reshape(matrices[:, :, :2 * pairs], [-1, matrices.shape[1], pairs, 2, 2, 2])
            product = _product(paired[:, :, :, 1], paired[:, :, :, 0])  # [R, S + 1, K/2, 2, 2]
            matrices = tf.concat([product, matrices[:, :, 2 * pairs:]], axis=2)  # [R, S + 1, ceil(K/2), 2, 2]
        return matrices[:, :, 0]


def _times(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """[..., 2, 2] ``a @ b``: row i is ``a[i, 0] b[0] + a[i, 1] b[1]``."""
    return a[..., :, 0, None] * b[..., None, 0, :] + a[..., :, 1, None] * b[..., None, 1, :]


@tf.custom_gradient
def _product(a: tf.Tensor, b: tf.Tensor):
    """[..., 2, 2] ``a @ b``, differentiated as a matmul is (TF's gradient of the products written out reduces over
    their broadcast axes: a larger graph, slower to compile and to run)."""
    def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _times(upstream, dagger(b)), _times(dagger(a), upstream)
    return _times(a, b), gradient
