"""A kernel's readouts or states as XLA computations, forward and backward, on row counts
rounded to a `bucket`; and a function of a batch (a layer's whole inference step) as one XLA computation on a batch
padded to a bucket."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import tensorflow as tf

from qmoe_tfq.execution.kernel import Kernel

RowFunction = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]  # (values, initial, program_index) -> [R, ...]
Terms = TypeVar("Terms")  # what a batch function returns beside its per-sample outputs (batch-level tensors)
BatchFunction = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, Terms]]


def bucket(rows: tf.Tensor) -> tf.Tensor:
    """<int32>[] `rows` rounded up to 4, 5, 6 or 7 times a power of two (at most 25% more), so XLA compiles
    a few row counts per octave rather than one per routed group size."""
    octave = tf.math.floor(tf.math.log(tf.cast(tf.maximum(rows, 4), tf.float32)) / np.log(2.0))
    unit = tf.cast(2.0 ** (octave - 2.0), tf.int32)
    return (rows + unit - 1) // unit * unit


def under_xla(kernel: Kernel, readouts: bool = True) -> RowFunction:
    """`kernel` (its readouts, or with `readouts` False its states) as two XLA computations on rows padded to a
    `bucket`, forward and backward; the gradient is the values' (none for the initial states or program indices).

    Where the kernel is differentiated by undoing its steps (`Kernel.adjoint`), the forward computation also
    returns the final states and the backward computation starts from them; else the backward computation runs
    the forward pass again, as TF differentiates it: the forward pass's intermediates cannot leave one XLA
    computation for another. Each takes only the tensors it reads: a backward computation that ran the forward
    pass again, also handed the final states it did not read, trained 0.75-0.78x as fast (3-step 8-qubit
    programs at 64 rows, one process, alternating rounds).
    """
    def result(final: tf.Tensor, program_index: tf.Tensor) -> tf.Tensor:
        return kernel.measure(final, program_index) if readouts else final

    @tf.function(jit_compile=True, autograph=False)
    def forward(values: tf.Tensor, initial: tf.Tensor, program_index: tf.Tensor) -> tf.Tensor | tuple[tf.Tensor, ...]:
        final = kernel.evolve(values, initial, program_index)  # <complex64>[R', 2**n]
        return (result(final, program_index), final) if kernel.adjoint else result(final, program_index)

    @tf.function(jit_compile=True, autograph=False)
    def rerun(values: tf.Tensor, initial: tf.Tensor, program_index: tf.Tensor, upstream: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(values)
            outputs = result(kernel.evolve(values, initial, program_index), program_index)
        return tape.gradient(outputs, values, output_gradients=upstream)  # <float32>[R', n_symbols]

    @tf.function(jit_compile=True, autograph=False)
    def undo(values: tf.Tensor, final: tf.Tensor, program_index: tf.Tensor, upstream: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(final)
            outputs = result(final, program_index)
        of_final = tape.gradient(outputs, final, output_gradients=upstream)  # <complex64>[R', 2**n]
        return kernel.evolve_gradient(values, final, of_final, program_index)[0]  # <float32>[R', n_symbols]

    @tf.custom_gradient
    def differentiable(values: tf.Tensor, initial: tf.Tensor, program_index: tf.Tensor):
        # Stopped, so that an eager tape does not ask for the forward computation's intermediates (a loop's: TF
        # cannot take them out of XLA), also where it watches the initial states.
        computed = forward(tf.stop_gradient(values), tf.stop_gradient(initial), program_index)
        outputs, final = computed if kernel.adjoint else (computed, None)

        def gradient(upstream: tf.Tensor):
            if kernel.adjoint:
                return undo(values, final, program_index, upstream), None, None
            return rerun(values, initial, program_index, upstream), None, None
        return outputs, gradient

    def run(values: tf.Tensor, initial: tf.Tensor, program_index: tf.Tensor) -> tf.Tensor:
        rows = tf.shape(values)[0]
        extra = bucket(rows) - rows
        padded = differentiable(tf.pad(values, [[0, extra], [0, 0]]), tf.pad(initial, [[0, extra], [0, 0]]),
                                tf.pad(program_index, [[0, extra]]))  # [R', ...]
        return padded[:rows]
    return run


def on_padded_batch(function: BatchFunction) -> Callable[[tf.Tensor], tuple[tf.Tensor, Terms]]:
    """`function(angles, valid)` -> (outputs [B, ...], terms) as one XLA computation, on a batch of angles padded
    with zeros to a `bucket` of samples; `valid` <bool>[B'] marks the samples, so that `terms` (batch means,
    counts) leave the padding out, and the outputs are cut back to the B samples.

    TF differentiates it, but layers use it for inference: a whole layer's backward pass under XLA, in this
    computation or in one of its own, trained slower than TF's ops around the kernel's XLA calls (measured at 4
    qubits). The launch grows with every tensor the computation takes (a variable too) and hands out (inside a
    `tf.function`, a trivial computation of three tensors took 81 us with two results, 100 us with nine): `function`
    should make its constants in its own graph, and take and hand out no more than it must.
    """
    compiled = tf.function(function, jit_compile=True, autograph=False)

    def run(angles: tf.Tensor) -> tuple[tf.Tensor, Terms]:
        size = tf.shape(angles)[0]
        extra = bucket(size) - size
        valid = tf.range(size + extra) < size  # <bool>[B']
        outputs, terms = compiled(tf.pad(angles, [[0, extra], [0, 0]]), valid)  # [B', ...], terms
        return outputs[:size], terms
    return run
