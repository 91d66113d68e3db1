"""One run of a kernel's steps on batched states, forward, and backward by undoing it (adjoint differentiation).

A step is unitary: a layer of single-qubit matrices (applied as Kronecker blocks), a phase, a permutation. The
backward pass starts from the run's final states and the gradient of them, and takes the steps back one by one:
each step undone gives the states it started from, and with them the gradient of its matrices and phase and the
gradient of the states before it. Where a run is a loop (`Kernel.adjoint`), the forward pass therefore keeps
nothing (TF's gradient of a loop stacks every step's intermediates) and the backward pass does not run it again,
so each is its own small XLA computation; short unrolled runs are differentiated by TF.

>>> import cirq, sympy
>>> from qmoe_tfq.execution.kernel import Kernel
>>> a, (q0, q1) = sympy.Symbol("a"), cirq.LineQubit.range(2)
>>> kernel = Kernel(cirq.Circuit([cirq.rx(a)(q0), cirq.CZ(q0, q1)] * 5), [cirq.Z(q0)], ["a"])  # 5 steps: a loop
>>> kernel.adjoint
True
>>> values = tf.constant([[0.1]])
>>> with tf.GradientTape() as tape:  # q1 stays |0>, so <Z(q0)> = cos(5 a), of gradient -5 sin(5 a)
...     tape.watch(values)
...     readout = kernel(values)
>>> round(float(tape.gradient(readout, values)[0, 0]), 4), round(float(-5 * np.sin(0.5)), 4)
(-2.3971, -2.3971)
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from qmoe_tfq.execution.apply import (apply_block, block_gradient, chunks, dagger, gather_rows, layer_blocks, permute,
                                      take, take_fixed, take_fixed_unitaries)

UNROLL_MAX_STEPS = 4  # runs of at most this many steps are unrolled; longer ones run as a loop


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


class Steps:
    """A `StepTable` run on states <complex64>[R, 2**n]: `forward`, and `backward` from the final states.

    Each call takes the fused single-qubit matrices `fused` <complex64>[R, M, 2, 2], the values `values`
    <float32>[R, C + 1] (ending in the zero column) and each row's program `program_index` <int32>[R].
    """

    def __init__(self, table: StepTable, n: int, chunk: int) -> None:
        self.table, self.n, self.chunk = table, n, chunk
        self.length = table.single.shape[1]
        self._inverse = np.argsort(table.source, axis=2).astype(np.int32)  # <int32>[P, T, 2**n]

    @property
    def loops(self) -> bool:
        """Whether the run is a loop (else unrolled)."""
        return self.length > UNROLL_MAX_STEPS

    def _at(self, array: np.ndarray, t: int | tf.Tensor, program_index: tf.Tensor) -> tf.Tensor:
        """``array[:, t]`` <[P, T, ...]> for each row: [1, ...] for one program, else [R, ...]."""
        step_of_each = tf.gather(tf.constant(array), t, axis=1)
        return step_of_each if array.shape[0] == 1 else tf.gather(step_of_each, program_index)

    def _parameters(self, t: int | tf.Tensor, matrices: tf.Tensor, used: tf.Tensor,
                    program_index: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
        """(the layer's blocks <complex64>[R, 2**size, 2**size], the phase <complex64>[R or 1, 2**n]) of step `t`,
        from its single-qubit `matrices` <complex64>[R, n, 2, 2] and phase values `used` <float32>[R, G]."""
        angle = self._at(self.table.base, t, program_index)  # <float32>[R or 1, 2**n]
        if self.table.slopes.shape[2]:
            angle += tf.reduce_sum(used[:, :, None] * self._at(self.table.slopes, t, program_index), axis=1)
        return layer_blocks(matrices, self.n, self.chunk), tf.exp(tf.complex(tf.zeros_like(angle), angle))

    def _repeat(self, body: Callable[..., tuple], carried: tuple, backwards: bool) -> tuple:
        """`carried` through ``body(t, *carried)`` for every step t, in order or `backwards`: unrolled for a short
        run, else as a loop."""
        order = range(self.length - 1, -1, -1) if backwards else range(self.length)
        if not self.loops:
            for t in order:
                carried = body(t, *carried)
            return carried
        first, stride = order[0], order.step
        return tf.while_loop(lambda i, *_: i < self.length,
                             lambda i, *rest: (i + 1, *body(first + stride * i, *rest)),
                             (tf.constant(0), *carried), maximum_iterations=self.length)[1:]

    def forward(self, state: tf.Tensor, fused: tf.Tensor, values: tf.Tensor, program_index: tf.Tensor) -> tf.Tensor:
        """`state` <complex64>[R, 2**n] after the run (TF can differentiate it too: see `Kernel.adjoint`)."""
        def step(t: int | tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor]:
            blocks, phase = self._parameters(t, take(fused, self._at(self.table.single, t, program_index)),
                                             take(values, self._at(self.table.columns, t, program_index)),
                                             program_index)
            for (first, size), block in zip(chunks(self.n, self.chunk), blocks):
                state = apply_block(state, block, first, size, self.n)
            state *= phase
            if self.table.permutes:
                state = permute(state, self._at(self.table.source, t, program_index),
                                self._at(self._inverse, t, program_index))
            return (state,)
        return self._repeat(step, (state,), backwards=False)[0]

    def backward(self, state: tf.Tensor, upstream: tf.Tensor, fused: tf.Tensor, values: tf.Tensor,
                 program_index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """(the states before the run, their gradient, the gradient of `fused`, the gradient of `values`), from the
        states after the run `state` and their gradient `upstream` <complex64>[R, 2**n].

        Every step's matrices and phase values are gathered before the loop, each step's gradient of them is
        written out in it, and the gathers are differentiated once after it (`apply.take_fixed`, without a scatter).
        """
        if not self.length:  # an empty run: before or between general gates
            return state, upstream, tf.zeros_like(fused), tf.zeros_like(values)
        per_row = None if self.table.single.shape[0] == 1 else program_index
        with tf.GradientTape() as tape:
            tape.watch([fused, values])
            # the identity slot (the last) read as an empty one: no gradient for it
            matrices = take_fixed_unitaries(fused[:, :-1], self._per_program(self.table.single), per_row)
            used = take_fixed(values[:, :-1], self._per_program(self.table.columns), per_row)  # zero column: the zero
        # matrices <complex64>[R, T, n, 2, 2], used <float32>[R, T, G]
        d_matrices = tf.TensorArray(tf.complex64, self.length, element_shape=[None, self.n, 2, 2])
        d_used = tf.TensorArray(tf.float32, self.length, element_shape=[None, self.table.columns.shape[2]])

        def step(t: int | tf.Tensor, state: tf.Tensor, upstream: tf.Tensor, d_matrices: tf.TensorArray,
                 d_used: tf.TensorArray) -> tuple[tf.Tensor, tf.Tensor, tf.TensorArray, tf.TensorArray]:
            step_matrices, step_used = tf.gather(matrices, t, axis=1), tf.gather(used, t, axis=1)  # [R, n, 2, 2], [R, G]
            with tf.GradientTape() as tape:
                tape.watch([step_matrices, step_used])
                blocks, phase = self._parameters(t, step_matrices, step_used, program_index)
            if self.table.permutes:  # amplitude i came from source[i]: it goes back from inverse[i]
                inverse = self._at(self._inverse, t, program_index)
                state, upstream = gather_rows(state, inverse), gather_rows(upstream, inverse)
            state *= tf.math.conj(phase)
            targets, gradients = [], []
            if self.table.slopes.shape[2]:  # else the phase is fixed
                targets.append(phase)
                gradients.append(upstream * tf.math.conj(state))  # <complex64>[R, 2**n]
            upstream *= tf.math.conj(phase)
            for (first, size), block in reversed(list(zip(chunks(self.n, self.chunk), blocks))):
                undo = dagger(block)
                state = apply_block(state, undo, first, size, self.n)
                targets.append(block)
                gradients.append(block_gradient(upstream, state, first, size, self.n))
                upstream = apply_block(upstream, undo, first, size, self.n)
            of_matrices, of_used = tape.gradient(targets, [step_matrices, step_used], output_gradients=gradients,
                                                 unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return state, upstream, d_matrices.write(t, of_matrices), d_used.write(t, of_used)
        state, upstream, d_matrices, d_used = self._repeat(step, (state, upstream, d_matrices, d_used),
                                                           backwards=True)
        d_fused, d_values = tape.gradient(  # from [T, R, ...] to [R, T, ...]
            [matrices, used], [fused, values], unconnected_gradients=tf.UnconnectedGradients.ZERO,
            output_gradients=[tf.transpose(d_matrices.stack(), [1, 0, 2, 3, 4]), tf.transpose(d_used.stack(), [1, 0, 2])])
        return state, upstream, d_fused, d_values

    @staticmethod
    def _per_program(table: np.ndarray) -> np.ndarray:
        """`table` <[P, ...]> as `take_fixed` reads it: every row's ([...]) for one program, else each program's."""
        return table[0] if table.shape[0] == 1 else table
