"""The TF statevector executor: every program of a `Program` in one `kernel.Kernel`, run under XLA.

TFQ pays a fixed cost per circuit row (parse, resolve, fuse) that, below ~10 qubits, is larger
than the simulation itself; the kernel (see `kernel`) compiles a layer's programs once into a loop
of uniform steps on a batched state. Here it runs under XLA, forward and backward, on row counts
rounded to an `xla.bucket`, with input circuits (quantum data) simulated once per sample by TFQ's
state op.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import cirq
import tensorflow as tf
import tensorflow_quantum as tfq
from tensorflow_quantum.core.ops import tfq_simulate_ops
from tensorflow_quantum.core.serialize import serializer

from qmoe_tfq.execution.factored import Factored, pays
from qmoe_tfq.execution.kernel import Kernel
from qmoe_tfq.execution.program import NOMINAL_BATCH, Inputs, Program, RowParts, Run, decode_strings
from qmoe_tfq.execution.xla import in_halves, under_xla


class StatevectorExecutor:
    """Runs `Program`s with one `Kernel` for all their programs: exact expectations, gradients by TF autodiff.

    Input circuits (quantum data) are simulated once per sample by TFQ's state op and each row starts
    from its sample's state; without them the graph holds plain TF ops only (a SavedModel then needs
    no TFQ). The kernel runs `under_xla`: measured 1.1-1.5x faster than without at 4 qubits and more
    above, for a compile of 1-3 s. Runs also take rows by parts (``run.by_parts(RowParts, inputs)``, a layer's
    experts' and its quantum router's rows): by parts where the programs split into a shared data part and weight
    parts and that pays (`factored`), else row by row.
    """

    name = backend = "statevector"
    repetitions = None

    def compile(self, program: Program) -> Run:
        """The `Run` of `program`, its kernel built now (XLA compiles it on first use)."""
        names = decode_strings(program.symbol_names)
        kernel = Kernel(program.cirq_circuits, program.cirq_observables, names, program.qubits)
        compiled = under_xla(kernel, halves=in_halves(kernel, program.nominal_rows))

        @tf.autograph.experimental.do_not_convert
        def run(values: tf.Tensor, program_index: tf.Tensor | None = None, inputs: Inputs | None = None,
                sample_index: tf.Tensor | None = None) -> tf.Tensor:
            rows = tf.shape(values)[0]
            if inputs is None:
                initial = kernel.ground_states(rows)
            else:
                # <complex64>[R, 2**n]
                initial = inputs.states if sample_index is None else tf.gather(inputs.states, sample_index)
            if program_index is None:
                program_index = tf.zeros([rows], tf.int32)  # <int32>[R]
            return compiled(values, initial, program_index)
        run.kernel = kernel

        @functools.cache
        def factored() -> Factored | None:  # built where rows by parts first pay
            return Factored.of(program)

        @tf.autograph.experimental.do_not_convert
        def by_parts(parts: RowParts, inputs: Inputs | None = None) -> tf.Tensor:
            """<float32>[R, n_ops] the rows of `parts`: by parts where that `factored.pays` for this many samples and
            rows (if known when traced, else at Keras' default batch size) and the programs split, else row by row."""
            batch = parts.data.shape[0] or NOMINAL_BATCH  # as known when traced
            rows = parts.sample_index.shape[0] or round(program.rows_per_sample * batch)
            if not (pays(kernel, batch, rows, parts.weights.shape[0]) and factored()):
                return parts.row_by_row(run, inputs)
            samples = tf.shape(parts.data)[0]
            initial = kernel.ground_states(samples) if inputs is None else inputs.states  # <complex64>[B, 2**n]
            return factored()(parts, initial)
        run.by_parts = by_parts
        return run

    def prepare(self, circuits: tf.Tensor, qubits: Sequence[cirq.Qid]) -> Inputs:
        """`circuits` <string>[B] with their states on `qubits` (TFQ's state op, once per batch): every row of
        every run of the step starts from its sample's state. The circuits must act on `qubits` only
        (`input_checks.check_input_circuits`).

        A batch whose circuits all act on every qubit is simulated as it is. TFQ sizes each state to its circuit's
        qubits and pads narrower ones with -2, which no amplitude can be; then the batch is simulated again with an
        identity on every qubit appended. Appending is not free: for 16 8-qubit circuits it took ~3.5 ms, the
        simulation ~2.5 ms.
        """
        def simulate(programs: tf.Tensor) -> tf.Tensor:  # <complex64>[B, 2**m], m: the widest circuit's qubits
            return tfq_simulate_ops.tfq_simulate_state(programs, tf.constant([], tf.string),
                                                       tf.zeros([tf.shape(programs)[0], 0]))

        def widened() -> tf.Tensor:  # <complex64>[B, 2**n]
            identities = tf.fill([tf.shape(circuits)[0]], _identity(tuple(qubits)))  # <string>[B]
            return simulate(tfq.append_circuit(circuits, identities))

        states = simulate(circuits)
        whole = tf.logical_and(tf.equal(tf.shape(states)[1], 2 ** len(qubits)),
                               tf.reduce_all(tf.not_equal(states, -2)))
        return Inputs(circuits, tf.cond(whole, lambda: states, widened))


@functools.cache
def _identity(qubits: tuple[cirq.Qid, ...]) -> bytes:
    """An identity on `qubits`, serialized: appended, it sizes every input state to the programs' qubits. Made once per
    qubit set, not on every batch `prepare` sees (eager calls run it each time)."""
    return serializer.serialize_circuit(cirq.Circuit(cirq.I.on_each(*qubits))).SerializeToString()
