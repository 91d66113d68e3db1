"""From a routing decision to outputs: routed rows, ONE executor call for every quantum row, combine.

A *row* is one routed (sample, expert) pair. Every quantum row of a step goes through a single
executor call, however different the experts are: TFQ takes a different program per row, so each
row carries its expert's program and its expert's weights as symbol values. Experts with
different programs get their own symbol names (`circuits.expert_symbol_prefix`), and the call
resolves the union. Shapes: B samples, R rows, E experts, P distinct programs, D data symbols,
S expert weight symbols (the union).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cirq
import numpy as np
import tensorflow as tf
import tf_keras as keras

from qmoe_tfq.execution.backends import Noise, apply_noise
from qmoe_tfq.execution.program import Inputs, Program, RowParts, Run, decode_strings, make_program
from qmoe_tfq.circuits import expert_symbol_prefix, on_qubits, rename_symbols, sorted_symbol_names
from qmoe_tfq.experts import ExpertPQC
from qmoe_tfq.inputs import Batch
from qmoe_tfq.routing import Routing


class ExpertTable(NamedTuple):
    """The quantum experts as one executor call sees them, built once in `QMoELayer.build`."""

    program: Program
    program_index: np.ndarray  # <int32>[E] each expert's program (0 for classical experts, never used)
    weight_columns: tuple[np.ndarray | None, ...]  # per expert, where its weights sit among the S columns
    n_weight_symbols: int  # S


class Rows(NamedTuple):
    """Routed (sample, expert) pairs."""

    sample_index: tf.Tensor  # <int32>[R]
    expert_index: tf.Tensor  # <int32>[R]
    weight: tf.Tensor  # <float32>[R] combine weight
    per_sample: int | None = None  # when known: every sample has this many rows, consecutive, in sample order

    @property
    def pairs(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The three per-row tensors (what `concat` and `select` act on)."""
        return self.sample_index, self.expert_index, self.weight


def single_program(circuit: cirq.Circuit, observables: Sequence[cirq.PauliSum], symbol_names: Sequence[str],
                   qubits: Sequence[cirq.Qid], noise: Noise | None, n_data: int = 0) -> Program:
    """A one-program table (the router's): `circuit` on all `qubits`, with `noise`."""
    return make_program([apply_noise(on_qubits(circuit, qubits), noise)], [observables], symbol_names, qubits, n_data)


def refuse_data_symbols(part: str, weight_names: Sequence[str], data_names: Sequence[str]) -> None:
    """A part's symbols are its trainable weights; one named like a feature symbol would take the feature's value."""
    clash = sorted(set(data_names) & set(weight_names))
    if clash:
        raise ValueError(f"{part} uses the symbols {clash}, which are the encoder's feature symbols; a part's "
                         "symbols are its trainable weights, so rename them (to re-encode features before each "
                         "expert layer, use reuploading=True).")


def expert_table(experts: Sequence[keras.layers.Layer], data_circuit: cirq.Circuit, data_symbols: Sequence[str],
                 qubits: Sequence[cirq.Qid], noise: Noise | None, rows_per_sample: float = 1.0,
                 reuploaded: cirq.Circuit | None = None) -> ExpertTable:
    """Groups the quantum experts (`ExpertPQC`s) with the same program and gives each group its own weight symbols.

    Args:
        experts: routed, then shared; each `ExpertPQC` runs its circuit behind `data_circuit` and reads its
            readouts, every other expert is classical (no program). Every non-data symbol is a weight, in
            sorted order as in its PQC.
        data_symbols: the data symbols shared by every program, in the order of the data values.
        rows_per_sample: rows a step evaluates per sample (see `Program`).
        reuploaded: re-uploading's circuit (the encoding before every layer, with `data_symbols`), which every
            expert runs instead; its data values carry gradients (scaled by trainable weights).
    """
    bodies, observables = [], []
    for index, expert in enumerate(experts):
        quantum = isinstance(expert, ExpertPQC)
        if quantum:
            refuse_data_symbols(f"experts[{index}] ({expert.name})", decode_strings(expert.symbol_names), data_symbols)
        bodies.append(None if not quantum else reuploaded or data_circuit + expert.model_circuit)
        observables.append(expert.readouts if quantum else None)
    keys, programs, operators, names, columns = [], [], [], [], []
    program_index = []
    for index, (body, readouts) in enumerate(zip(bodies, observables)):
        if body is None:
            program_index.append(0)
            columns.append(None)
            continue
        key = (body, tuple(readouts))
        if key not in keys:
            keys.append(key)
            renamed = rename_symbols(body, expert_symbol_prefix(index), keep=data_symbols)
            programs.append(apply_noise(on_qubits(renamed, qubits), noise))
            operators.append(list(readouts))
            names.append([n for n in sorted_symbol_names(renamed) if n not in data_symbols])
        group = keys.index(key)
        program_index.append(group)
        offset = sum(len(n) for n in names[:group])
        columns.append(np.arange(offset, offset + len(names[group]), dtype=np.int32))
    weight_names = [name for group in names for name in group]
    program = make_program(programs, operators, list(data_symbols) + weight_names, qubits,
                           0 if reuploaded is not None else len(data_symbols), rows_per_sample)
    return ExpertTable(program, np.array(program_index, np.int32), tuple(columns), len(weight_names))


def weight_matrix(table: ExpertTable, weights: Sequence[tf.Tensor | None]) -> tf.Tensor:
    """<float32>[E, S] each expert's weights in its own columns, zero elsewhere (and for classical experts).

    One gather from all weights end to end (two ops, and one in the gradient, however many experts).
    """
    sizes = [0 if cols is None else len(cols) for cols in table.weight_columns]
    index = np.full([len(sizes), table.n_weight_symbols], sum(sizes))  # the zero after every weight by default
    for expert, (cols, start) in enumerate(zip(table.weight_columns, np.cumsum([0] + sizes))):
        if cols is not None:
            index[expert, cols] = start + np.arange(len(cols))
    every = tf.concat([w for w in weights if w is not None] + [tf.zeros([1])], axis=0)  # <float32>[sum(sizes) + 1]
    return _gather_dense(every, tf.constant(index, tf.int32))


@tf.custom_gradient
def _gather_dense(params: tf.Tensor, index: tf.Tensor):
    """``params[index]`` with a dense gradient: a gather's is `tf.IndexedSlices`, which the gradient of
    `tf.concat` splits in ~10 ops per input and the optimizer then applies as sparse updates."""
    def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, None]:
        return tf.math.unsorted_segment_sum(tf.convert_to_tensor(upstream), index, tf.shape(params)[0]), None
    return tf.gather(params, index), gradient


def reuploaded_values(table: ExpertTable, rows: Rows, angles: tf.Tensor, weights: Sequence[tf.Tensor | None],
                      input_scaling: tf.Tensor) -> tf.Tensor:
    """<float32>[R, L * F + S] each re-uploading row's values: its sample's angles scaled by its expert per layer
    (the table's data symbols are the L uploads), then its expert's weights.

    Args:
        angles: <float32>[B, F] data symbol values per sample.
        weights: per expert, its weights (None for a classical expert).
        input_scaling: <float32>[E, L, F] each expert's scaling of each upload.
    """
    data = tf.gather(angles, rows.sample_index)  # <float32>[R, F]
    scaling = tf.gather(input_scaling, rows.expert_index)  # <float32>[R, L, F]
    data = tf.reshape(scaling * data[:, None, :], [tf.shape(data)[0], -1])  # <float32>[R, L * F]
    return table.program.values(data, tf.gather(weight_matrix(table, weights), rows.expert_index))


def sample_of_each(batch: tf.Tensor, slots: int | tf.Tensor) -> tf.Tensor:
    """<int32>[B * slots] 0, 0, ..., 1, 1, ...: the sample of each of `slots` rows per sample, in sample order.
    (`tf.repeat` takes 13 ops to do this.)"""
    return tf.reshape(tf.broadcast_to(tf.range(batch)[:, None], tf.stack([batch, slots])), [-1])


def routed_rows(route: Routing, drops: bool) -> Rows:
    """One row per dispatched (sample, expert) pair that fits its expert's capacity; `drops` says whether a
    capacity can have left pairs out (`RoutingPolicy.drops`: otherwise every pair is a row)."""
    rows = Rows(sample_of_each(tf.shape(route.expert_index)[0], tf.shape(route.expert_index)[1]),
                tf.reshape(route.expert_index, [-1]), tf.reshape(route.combine_weights, [-1]),
                route.expert_index.shape[1])
    return select(rows, tf.reshape(route.kept, [-1])) if drops else rows


def shared_rows(batch: tf.Tensor, first: int, count: int) -> Rows:
    """Every sample on each of the `count` shared experts ``first, first + 1, ...``, with weight 1."""
    return Rows(sample_of_each(batch, count), tf.tile(tf.range(first, first + count), [batch]),
                tf.ones([batch * count]), count)


def concat(first: Rows, second: Rows) -> Rows:
    """Both sets of rows: sample by sample where each has a known number per sample (so has the result), else
    one set after the other."""
    if first.per_sample is None or second.per_sample is None:
        return Rows(*(tf.concat([a, b], axis=0) for a, b in zip(first.pairs, second.pairs)))

    def interleave(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:  # [B * (k1 + k2)]
        return tf.reshape(tf.concat([tf.reshape(a, [-1, first.per_sample]), tf.reshape(b, [-1, second.per_sample])],
                                    axis=1), [-1])
    return Rows(*(interleave(a, b) for a, b in zip(first.pairs, second.pairs)), first.per_sample + second.per_sample)


def select(rows: Rows, mask: tf.Tensor) -> Rows:
    """The rows where `mask` <bool>[R] holds."""
    return Rows(*(tf.boolean_mask(t, mask) for t in rows.pairs))


def run_experts(run: Run, table: ExpertTable, rows: Rows, angles: tf.Tensor, weights: Sequence[tf.Tensor | None],
                inputs: Inputs | None, input_scaling: tf.Tensor | None = None) -> tf.Tensor:
    """<float32>[R, n_readouts]: every row on its expert's program, in ONE executor call (by parts where the run
    offers it: each row is its sample's angles and its expert's weights).

    Args:
        run: the executor's compiled run of ``table.program``.
        angles: <float32>[B, D] data symbol values per sample.
        weights: per expert, its weights (None for a classical expert).
        inputs: the batch's input circuits that each row's program follows, or None when the
            programs encode the data themselves.
        input_scaling: <float32>[E, L, F] for re-uploading experts, whose rows' data differ per expert: row by row.
    """
    # <int32>[E] made in the graph being traced: one made in build would be an input of every XLA computation
    program_index = tf.constant(table.program_index)
    if input_scaling is not None:
        values = reuploaded_values(table, rows, angles, weights, input_scaling)  # <float32>[R, L * F + S]
        return run(values, tf.gather(program_index, rows.expert_index), inputs, rows.sample_index)
    parts = RowParts(angles, weight_matrix(table, weights), program_index, rows.sample_index, rows.expert_index)
    if hasattr(run, "by_parts"):
        return run.by_parts(parts, inputs)
    return parts.row_by_row(run, inputs)


def combine(readouts: tf.Tensor, rows: Rows, batch: tf.Tensor) -> tf.Tensor:
    """<float32>[B, n_readouts]: each sample's rows' readouts, weighted and summed."""
    weighted = readouts * rows.weight[:, None]  # <float32>[R, n_readouts]
    if rows.per_sample is not None:  # XLA:CPU runs a segment sum as a loop of one dispatched iteration per row
        return tf.reduce_sum(tf.reshape(weighted, [batch, rows.per_sample, readouts.shape[1] or -1]), axis=1)
    return tf.math.unsorted_segment_sum(weighted, rows.sample_index, batch)


class ExpertBank:
    """A layer's experts (routed, then `n_shared` shared ones) behind `outputs`: every quantum row in ONE
    executor call of the table's program, each classical expert on its own rows.

    Built once in `QMoELayer.build`; the experts' weights (and `input_scaling`) are read at every call.
    """

    def __init__(self, experts: Sequence[keras.layers.Layer], table: ExpertTable, run: Run | None, n_readouts: int,
                 n_shared: int = 0, input_scaling: tf.Variable | None = None) -> None:
        self.experts, self.table, self.run, self.n_readouts = list(experts), table, run, n_readouts
        self.n_shared, self.input_scaling = n_shared, input_scaling
        self.quantum = [columns is not None for columns in table.weight_columns]

    def outputs(self, rows: Rows, batch: Batch) -> tf.Tensor:
        """<float32>[B, n_readouts]: each sample's routed rows and its shared experts, evaluated, weighted, summed."""
        size = tf.shape(batch.angles)[0]
        if self.n_shared:
            rows = concat(rows, shared_rows(size, len(self.experts) - self.n_shared, self.n_shared))
        outputs = tf.zeros([size, self.n_readouts])  # <float32>[B, n_readouts]
        if any(self.quantum):
            quantum = rows if all(self.quantum) else select(
                rows, tf.gather(tf.constant(self.quantum), rows.expert_index))
            weights = [e.parameters if q else None for q, e in zip(self.quantum, self.experts)]
            readouts = run_experts(self.run, self.table, quantum, batch.angles, weights, batch.inputs,
                                   self.input_scaling)  # <float32>[R, n_readouts]
            outputs += combine(readouts, quantum, size)
        for index, expert in enumerate(self.experts):
            if not self.quantum[index]:  # only the samples routed to this expert go through it
                mine = select(rows, tf.equal(rows.expert_index, index))
                outputs += combine(expert(tf.gather(batch.features, mine.sample_index)), mine, size)
        return outputs
