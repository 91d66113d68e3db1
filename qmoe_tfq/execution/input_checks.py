"""Serialized TFQ programs read in-graph: their qubit ids and symbols, and the checks on input circuits (and the
assertion every in-graph check of inputs makes, `assert_in_graph`).

TFQ passes circuits as serialized `tfq.proto.Program` strings. `tf.io.decode_proto`, given TFQ's
own descriptors, reads them inside the graph (also in an exported SavedModel), so quantum data can
be checked per batch; `CheckedCircuits` skips the circuits that passed before.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import cirq
import tensorflow as tf
import tensorflow_quantum as tfq
from google.protobuf import descriptor_pb2
from tensorflow_quantum.core.proto import program_pb2


def _program_descriptors() -> bytes:
    """TFQ's program proto as a descriptor set, so `tf.io.decode_proto` can read it in-graph."""
    descriptors = descriptor_pb2.FileDescriptorSet()
    program_pb2.DESCRIPTOR.CopyToProto(descriptors.file.add())
    return b"bytes://" + descriptors.SerializeToString()


_PROGRAM_DESCRIPTORS = _program_descriptors()
# How every program `tfq.convert_to_tensor` writes begins: its language field, gate set "tfq_gate_set".
PROGRAM_HEADER = b"\n\x0e\n\x0ctfq_gate_set"


def assert_in_graph(condition: tf.Tensor, show: Callable[[], Sequence[str | tf.Tensor]],
                    summarize: int = 3) -> tf.Tensor | tf.Operation | None:
    """Raises `tf.errors.InvalidArgumentError` showing ``show()`` unless `condition` <bool>[] holds; what it shows
    is made only when the check fails, so a check that holds costs its condition and one ``If`` op.

    Put the outputs it guards under ``tf.control_dependencies([...])`` of what it returns. In a 4-qubit layer's
    inference call the shown data, made every step beside the data's other consumers, cost ~10% of a predict
    batch (one process, alternating rounds); made in the failing branch, nothing measurable. XLA drops assertions
    and cannot compile text: in an XLA computation this is a no-op.

    >>> @tf.function
    ... def positive(x):
    ...     with tf.control_dependencies([assert_in_graph(x > 0, lambda: ["x must be positive, got", x])]):
    ...         return tf.identity(x)
    >>> graph = positive.get_concrete_function(tf.constant(1.0)).graph
    >>> sorted({op.type for op in graph.get_operations()} & {"Assert", "If", "StatelessIf"})
    ['If']
    >>> try:
    ...     positive(tf.constant(-0.5))
    ... except tf.errors.InvalidArgumentError as error:
    ...     print(error.message.split("assertion failed: ")[1].splitlines()[0])
    [x must be positive, got] [-0.5]
    """
    if tf.__internal__.get_enclosing_xla_context() is not None:
        return tf.no_op()
    if tf.executing_eagerly():  # numbers read better as numbers
        return None if bool(condition) else tf.debugging.Assert(condition, show(), summarize=summarize)

    def fail() -> tf.Tensor:
        # Shown as text, so that the Assert is not put under a cond of its own.
        shown = [datum if isinstance(datum, str) or datum.dtype in (tf.string, tf.int32)
                 else tf.strings.as_string(datum, shortest=datum.dtype.is_floating) for datum in show()]
        with tf.control_dependencies([tf.debugging.Assert(False, shown, summarize=summarize)]):
            return tf.constant(False)
    return tf.cond(condition, lambda: tf.constant(True), fail)


def _submessages(messages: tf.Tensor, message_type: str, field: str) -> tf.Tensor:
    """<string>[N'] every `field` of the serialized `message_type`s <string>[N], flattened."""
    sizes, (values,) = tf.io.decode_proto(messages, f"tfq.proto.{message_type}", [field], [tf.string],
                                          descriptor_source=_PROGRAM_DESCRIPTORS)
    return tf.boolean_mask(values, tf.sequence_mask(sizes[:, 0], tf.shape(values)[1]))


class Contents(NamedTuple):
    """What the operations of serialized programs hold, read in-graph, each field decoded once."""

    qubit_ids: tf.Tensor  # <string>[n] TFQ's id of every qubit of every operation
    symbols: tf.Tensor  # <string>[m] the sympy symbol names gate arguments use
    numbers: tf.Tensor  # <float32>[k] every numeric gate argument (exponents, shifts)


def contents(programs: tf.Tensor) -> Contents:
    """The `Contents` of `programs` <string>[B].

    >>> contents(tfq.convert_to_tensor([cirq.Circuit(cirq.X(cirq.GridQubit(0, 1)))])).qubit_ids.numpy().tolist()
    [b'0_1']
    """
    operations = programs
    for message_type, field in (("Program", "circuit"), ("Circuit", "moments"), ("Moment", "operations")):
        operations = _submessages(operations, message_type, field)  # <string>[n_ops] at the end
    ids = _submessages(_submessages(operations, "Operation", "qubits"), "Qubit", "id")  # <string>[n]
    arguments = _submessages(_submessages(operations, "Operation", "args"), "Operation.ArgsEntry",
                             "value")  # <string>[n_args]
    symbols = _submessages(arguments, "Arg", "symbol")  # <string>[m]
    sizes, (numbers,) = tf.io.decode_proto(_submessages(arguments, "Arg", "arg_value"), "tfq.proto.ArgValue",
                                           ["float_value"], [tf.float32], descriptor_source=_PROGRAM_DESCRIPTORS)
    numbers = tf.boolean_mask(numbers, tf.sequence_mask(sizes[:, 0], tf.shape(numbers)[1]))  # <float32>[k]
    return Contents(ids, symbols, numbers)


def qubit_ids(qubits: Sequence[cirq.Qid]) -> tf.Tensor:
    """<string>[n] the ids TFQ gives `qubits` in serialized circuits."""
    return tf.constant(sorted(set(contents(tfq.convert_to_tensor([cirq.Circuit(cirq.I.on_each(*qubits))]))
                                  .qubit_ids.numpy())))


def check_programs(programs: tf.Tensor, layer: str) -> tf.Tensor:
    """`programs` <string>[B], once each string is checked to begin as a TFQ program does (in-graph).

    Anything else (text, an empty string, a serialized PauliSum) would stop TFQ's or our parsing with
    a bare ``DataLossError``; raises `tf.errors.InvalidArgumentError` naming the rows and their beginnings.
    """
    not_programs = tf.not_equal(tf.strings.substr(programs, 0, len(PROGRAM_HEADER)), PROGRAM_HEADER)  # <bool>[B]

    def show() -> list[str | tf.Tensor]:
        shown = tf.strings.unicode_transcode(tf.boolean_mask(programs, not_programs)[:3], "UTF-8", "UTF-8",
                                             errors="replace")  # <string>[<=3] an error message must be text
        return [f"{layer}: inputs must be circuits serialized by tfq.convert_to_tensor (or qmoe_tfq.encode); these "
                "strings are not: rows", tf.where(not_programs)[:, 0], "beginning",
                tf.strings.substr(shown, 0, 24, "UTF8_CHAR")]
    programs_only = assert_in_graph(tf.logical_not(tf.reduce_any(not_programs)), show, summarize=3)
    with tf.control_dependencies([programs_only]):  # before any parsing
        return tf.identity(programs)


# One graph function per layer name, traced once: Keras traces a first training step twice (the second time
# once the optimizer has made its slots), and this parsing takes 10 decode ops of ~12 ms each to build.
@tf.function(autograph=False, reduce_retracing=True)
def check_input_circuits(programs: tf.Tensor, allowed: tf.Tensor, layer: str) -> tf.Tensor:
    """`programs` <string>[B], after in-graph checks: only the `allowed` qubit ids, no symbols, finite numbers.

    A circuit on other qubits (LineQubits for a GridQubit layer, an extra qubit) would not raise in
    TFQ: its state would not reach the layer's readouts, and every sample would give the same
    output. A symbol would be resolved with the layer's value of the same name, or fail deep in TFQ.
    A NaN angle (``rx(nan)``) would make every output NaN. Raises `tf.errors.InvalidArgumentError`
    naming the strings that are not programs (`check_programs`), the foreign qubit ids, the symbols
    or the non-finite numbers.
    """
    programs = check_programs(programs, layer)
    ids, symbols, numbers = contents(programs)
    # each distinct id compared, not each operation's: comparing strings [n, n_qubits] took ~1.3 ms of a 16-circuit,
    # 8-qubit batch
    distinct = tf.unique(ids).y  # <string>[u]
    foreign = tf.boolean_mask(distinct, tf.logical_not(tf.reduce_any(tf.equal(distinct[:, None], allowed[None, :]),
                                                                     axis=1)))  # <string>[<=u]
    checks = [
        assert_in_graph(tf.size(foreign) == 0, lambda: [
            f"{layer}: input circuits act on qubits outside the layer's qubits (TFQ ids", allowed,
            "); foreign ids:", foreign[:8]], summarize=16),
        assert_in_graph(tf.size(symbols) == 0, lambda: [
            f"{layer}: input circuits must have every parameter resolved, but they use the symbols",
            symbols[:8]], summarize=8),
        assert_in_graph(tf.reduce_all(tf.math.is_finite(numbers)), lambda: [
            f"{layer}: input circuits hold gate parameters that are not finite numbers:",
            tf.boolean_mask(numbers, tf.logical_not(tf.math.is_finite(numbers)))[:8]], summarize=8)]
    with tf.control_dependencies(checks):
        return tf.identity(programs)


class _UnsavedTable(tf.lookup.experimental.MutableHashTable):
    """A `MutableHashTable` that a SavedModel holds empty (TF2's object-based saving writes a table's contents
    whatever its `checkpoint`, which only concerns TF1's graph collections)."""

    def _serialize_to_tensors(self) -> dict:
        return {}

    def _restore_from_tensors(self, restored_tensors: dict) -> tf.Operation:
        return tf.no_op()


class CheckedCircuits(tf.Module):
    """`check_input_circuits` for one layer, skipped for batches of circuits that all passed it before.

    Quantum data comes back epoch after epoch, and the check parses every operation of every circuit: on a
    16-circuit batch of 8-qubit cluster states it took longer than TFQ's simulation of them (1.7 against 1.6 ms),
    and a user-style QCNN model trained 1.16-1.18x and inferred 1.19-1.30x as fast without it (two runs, one
    process, alternating rounds). The circuits that passed are kept, as the serialized strings themselves (a
    hash of them could be matched by a crafted circuit), until `BUDGET` bytes are; a batch of circuits all kept
    costs one lookup, and one with any other circuit is checked whole. The table is left out of checkpoints and
    saved empty in SavedModels: what data a model saw stays out of its files.

    Args:
        qubits: the only qubits input circuits may act on.
        layer: the layer's name, for messages.

    >>> q = cirq.LineQubit.range(2)
    >>> checked = CheckedCircuits(q, "qmoe")
    >>> circuits = tfq.convert_to_tensor([cirq.Circuit(cirq.X(q[0])), cirq.Circuit(cirq.H(q[1]))])
    >>> int(checked.remembered()), int(checked(circuits).shape[0]), int(checked.remembered())
    (0, 2, 2)
    >>> try:
    ...     checked(tfq.convert_to_tensor([cirq.Circuit(cirq.X(cirq.LineQubit(5)))]))
    ... except tf.errors.InvalidArgumentError as error:
    ...     print(error.message.split("assertion failed: [")[1].split(" the layer")[0])
    qmoe: input circuits act on qubits outside
    >>> int(checked.remembered())
    2
    """

    BUDGET = 2 ** 26  # bytes of serialized circuits kept (64 MB: ~19,000 8-qubit cluster states)

    def __init__(self, qubits: Sequence[cirq.Qid], layer: str) -> None:
        super().__init__()
        self.allowed, self.layer = qubit_ids(qubits), layer  # <string>[n_qubits]
        self._passed = _UnsavedTable(tf.string, tf.int32, default_value=0, checkpoint=False)  # circuit -> 1
        self._bytes = _UnsavedTable(tf.int64, tf.int64, default_value=0, checkpoint=False)  # 0 -> bytes kept

    def _trackable_children(self, save_type: str = "checkpoint", **kwargs) -> dict:
        # A SavedModel's functions read the tables, so it must hold them (empty); a checkpoint need not, and one
        # written before they existed still restores with every object matched.
        return super()._trackable_children(save_type, **kwargs) if save_type == "savedmodel" else {}

    def remembered(self) -> tf.Tensor:
        """<int64>[] how many circuits are kept as checked."""
        return self._passed.size()

    def __call__(self, programs: tf.Tensor) -> tf.Tensor:
        """`programs` <string>[B] once checked (`check_input_circuits`), or at once if every one passed before."""
        # a MutableHashTable's lookup has no static shape in a graph: the shapes are restored
        known = tf.reshape(self._passed.lookup(programs) == 1, [-1])  # <bool>[B] kept as checked

        def check() -> tf.Tensor:
            checked = check_input_circuits(programs, self.allowed, self.layer)  # <string>[B]
            with tf.control_dependencies([checked]):  # only circuits that passed are kept
                total = tf.reshape(self._bytes.lookup(tf.zeros([1], tf.int64)), [1])  # <int64>[1] bytes kept so far
                new = tf.cast(tf.logical_not(known), tf.int64)  # <int64>[B] 1 for a circuit not kept
                ends = total + tf.cumsum(tf.cast(tf.strings.length(programs), tf.int64) * new)  # <int64>[B]
                fits = ends <= self.BUDGET  # <bool>[B] the circuits, in order, that the budget still holds
                kept = tf.boolean_mask(programs, fits)  # <string>[<=B]
                after = tf.reduce_max(tf.concat([total, tf.boolean_mask(ends, fits)], 0),
                                      keepdims=True)  # <int64>[1] bytes kept then
                remember = [self._passed.insert(kept, tf.ones_like(kept, tf.int32)),
                            self._bytes.insert(tf.zeros([1], tf.int64), after)]
            with tf.control_dependencies(remember):
                return tf.identity(checked)
        return tf.cond(tf.reduce_all(known), lambda: tf.identity(programs), check)
