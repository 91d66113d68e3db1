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


HALVES_MIN_WORK = 2e6  # multiply-adds of a kernel call from which its rows run in two halves at once (`in_halves`)


def in_halves(kernel: Kernel, rows: int) -> bool:
    """Whether `rows` rows of `kernel` are worth two launches at once, one per core (`under_xla`'s `halves`): from
    `HALVES_MIN_WORK` multiply-adds a call. Whole training steps of peers.py's model, split always against never,
    one process each, in turns: 4 qubits top-1 (64 rows of 3 steps, ~2e4) 1.10x the time, dense 1.08x; 8 qubits
    top-1 (~1e6) level. With this threshold: 4 qubits level (not split), 8 qubits dense 0.78x, 10 qubits top-1
    0.85x, 12 qubits 0.82x; benchmarks/user_models.py's experts (~1e7 dense, ~3e6 top-1, 8 qubits) trained 1.32x
    and 1.06x the samples/s of the user_models.md run before it."""
    return rows * kernel.step_count * kernel.step_work * 2 ** kernel.n >= HALVES_MIN_WORK


def under_xla(kernel: Kernel, readouts: bool = True, halves: bool = False) -> RowFunction:
    """`kernel` (its readouts, or with `readouts` False its states) as two XLA computations on rows padded to a
    `bucket`, forward and backward; the gradient is the values' (none for the initial states or program indices).
    With `halves`, the rows run as two halves, each its own launch of the same computations: TF runs the two at
    once, one on each core, where XLA:CPU runs a small computation on one thread. On the kernels alone (one process,
    alternating rounds), forward and backward: 4 qubits, 64 rows of 3 steps, 0.82x the time of one launch; 8
    qubits 0.71x; benchmarks/user_models.py's three experts (33 steps, 48 rows) 0.59x; in whole training steps
    less, or nothing where the call is small (`in_halves`). Inside another XLA computation (a layer's inference
    step) the rows are one piece.

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
        pieces = 2 if halves and tf.__internal__.get_enclosing_xla_context() is None else 1  # inlined there: one
        total = bucket(rows) if pieces == 1 else (bucket(rows) + 1) // 2 * 2  # splits into equal pieces
        extra = total - rows
        padded = (tf.pad(values, [[0, extra], [0, 0]]), tf.pad(initial, [[0, extra], [0, 0]]),
                  tf.pad(program_index, [[0, extra]]))  # [total, ...]
        parts = zip(*(tf.split(t, pieces) for t in padded)) if pieces > 1 else (padded,)  # [total / pieces, ...] each
        return tf.concat([differentiable(*part) for part in parts], axis=0)[:rows]  # [rows, ...]
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
