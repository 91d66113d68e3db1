"""Rows by parts (`execution.factored`): the same readouts and gradients as row by row, and when it is used."""
import cirq
import numpy as np
import pytest
import sympy
import tensorflow as tf
import tf_keras as keras

import qmoe_tfq as qmoe
from qmoe_tfq.execution import StatevectorExecutor, make_program
from qmoe_tfq.execution.factored import Factored, data_part_length, pays
from qmoe_tfq.execution.kernel import Kernel
from qmoe_tfq.execution.program import RowParts

Q = cirq.LineQubit.range(3)
X = sympy.symbols("x0:3")
W = sympy.symbols("w0:4")
ENCODING = [cirq.ry(x)(q) for x, q in zip(X, Q)]


@pytest.mark.parametrize("programs,length", [
    ([ENCODING + [cirq.H(Q[0]), cirq.rx(W[0])(Q[0])]], 3),  # a fixed gate after the data gates joins the weight part
    ([ENCODING + [cirq.rx(W[0])(Q[0])], ENCODING + [cirq.CZ(*Q[:2]), cirq.rz(W[1])(Q[1])]], 3),
    ([[cirq.rx(W[0])(Q[0]), cirq.CZ(*Q[:2])]], 0),  # no data symbols (input circuits): no data part
    ([ENCODING + [cirq.rx(W[0])(Q[0]), cirq.ry(X[0])(Q[0])]], None),  # re-uploading: data after weights
    ([ENCODING, ENCODING[::-1]], None),  # data parts that differ between programs
    ([[cirq.rx(W[0])(Q[0])] + ENCODING], None),  # a weight before the data
])
def test_data_part_is_the_shared_prefix_holding_every_data_gate(programs, length):
    assert data_part_length(programs, {str(x) for x in X}) == length


def heterogeneous_program():
    """Two programs after one data part (with a fixed gate), observables needing X and Y basis changes."""
    data = cirq.Circuit(ENCODING, cirq.H(Q[0]), cirq.rz(X[2])(Q[0]))
    first = data + cirq.Circuit(cirq.rx(W[0])(Q[0]), cirq.CZ(Q[0], Q[1]), cirq.XX(Q[1], Q[2]) ** W[1])
    second = data + cirq.Circuit(cirq.CNOT(Q[2], Q[0]), cirq.ry(W[2])(Q[1]), cirq.ZZ(Q[0], Q[2]) ** (0.5 * W[3]))
    observables = [[cirq.Z(Q[0]), cirq.X(Q[1]) * cirq.Y(Q[2])], [cirq.Z(Q[1]), 0.5 * cirq.X(Q[0])]]
    return make_program([first, second], observables, [str(s) for s in X + W], Q, n_data=3)


def random_parts(rng):
    """5 samples, 3 units (two on program 0, one on program 1), 9 rows."""
    return RowParts(tf.constant(rng.uniform(0, 2, (5, 3)), tf.float32),
                    tf.constant(rng.uniform(-2, 2, (3, 4)), tf.float32),
                    tf.constant([0, 1, 0]), tf.constant([0, 1, 2, 3, 4, 0, 1, 4, 2]),
                    tf.constant([0, 0, 1, 2, 2, 1, 2, 0, 1]))


def test_by_parts_gives_the_row_by_row_readouts_and_gradients_from_any_initial_states():
    rng = np.random.default_rng(0)
    program = heterogeneous_program()
    kernel = Kernel(program.cirq_circuits, program.cirq_observables, [str(s) for s in X + W], Q)
    factored = Factored.of(program)
    parts = random_parts(rng)
    amplitudes = rng.normal(size=(5, 8)) + 1j * rng.normal(size=(5, 8))
    initial = tf.constant(amplitudes / np.linalg.norm(amplitudes, axis=1, keepdims=True), tf.complex64)
    upstream = tf.constant(rng.normal(size=(9, 2)), tf.float32)
    results = []
    for by_parts in (True, False):
        with tf.GradientTape() as tape:
            tape.watch([parts.data, parts.weights])
            if by_parts:
                readouts = factored(parts, initial)
            else:
                readouts = kernel(parts.values(), tf.gather(initial, parts.sample_index), parts.program_index())
            loss = tf.reduce_sum(readouts * upstream)
        gradients = tape.gradient(loss, [parts.data, parts.weights])
        results.append([readouts.numpy(), *(tf.convert_to_tensor(g).numpy() for g in gradients)])
    for mine, reference in zip(*results):
        np.testing.assert_allclose(mine, reference, atol=2e-5)
    assert np.abs(results[1][0]).max() > 0.1 and np.abs(results[1][2]).max() > 0.1  # not trivially zero


def benchmark_kernel(n_qubits: int) -> Kernel:
    """The benchmark's experts (3 layers of ry/rz + CZ ring) after an ry encoding, on `n_qubits`."""
    qubits = cirq.GridQubit.rect(1, n_qubits)
    data = sympy.symbols(f"x0:{n_qubits}")
    body = qmoe.Ansatz(entangler="ring", entangle_first=False).circuit(qubits, 3, "w")
    circuit = cirq.Circuit(cirq.ry(x)(q) for x, q in zip(data, qubits)) + body
    names = [str(s) for s in data] + sorted(str(s) for s in cirq.parameter_names(body))
    return Kernel(circuit, [cirq.Z(q) for q in qubits], names, qubits)


@pytest.mark.parametrize("n_qubits,samples,rows,expected", [
    (4, 64, 512, True),  # dense, batch 64, 8 experts: 2.0x faster measured
    (4, 16, 128, True),  # batch 16: as many rows as basis states, 1.17x
    (4, 8, 64, False),  # batch 8: 16% slower
    (4, 64, 64, False),  # top-1, batch 64: 17% slower
    (4, 1024, 1024, False),  # top-1, batch 1024: a product for all 8 experts per row outweighs its 3 steps
    (6, 512, 4096, False),  # a pair's 64 x 64 product costs more than a row's 3 steps (level at batch 64)
])
def test_parts_are_used_where_they_were_measured_faster(n_qubits, samples, rows, expected):
    assert pays(benchmark_kernel(n_qubits), samples, rows, 8) is expected


class Recording(StatevectorExecutor):
    """The statevector executor, keeping each program's kernel (by rows per sample: router 1, dense E)."""

    def __init__(self):
        self.kernels = {}

    def compile(self, program):
        run = super().compile(program)
        self.kernels[program.rows_per_sample] = run.kernel
        return run


def test_a_dense_layer_by_parts_matches_tfq_in_outputs_and_gradients():
    qubits = cirq.GridQubit.rect(1, 4)
    features = np.random.default_rng(1).uniform(0, 1, (32, 4)).astype(np.float32)
    results, recording = [], Recording()
    for backend in (recording, "noiseless"):
        keras.utils.set_random_seed(5)
        layer = qmoe.QMoELayer(qubits, n_experts=8, expert_layers=3, encoder=qmoe.AngleEncoder(qubits), backend=backend)
        with tf.GradientTape() as tape:
            outputs = layer(features)
            loss = tf.reduce_sum(outputs * tf.range(1.0, 5.0))
        gradients = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, layer.trainable_variables)]
        results.append((outputs.numpy(), gradients))
    assert pays(recording.kernels[8], 32, 32 * 8, 8)  # the experts' 256 rows ran by parts
    (outputs, gradients), (tfq_outputs, tfq_gradients) = results
    np.testing.assert_allclose(outputs, tfq_outputs, atol=1e-5)
    for mine, theirs in zip(gradients, tfq_gradients):
        np.testing.assert_allclose(mine, theirs, atol=1e-4 * max(1.0, np.abs(theirs).max()))


@pytest.mark.parametrize("n_qubits,samples,expected", [
    (4, 64, True),  # 16 basis states for 64 rows: measured 0.95-0.96x the training step, 0.97-0.99x inference
    (4, 8, False),  # fewer rows than basis states
    (8, 64, False),  # 256 basis states for 64 rows
])
def test_a_router_one_unit_for_every_sample_runs_by_parts_where_its_basis_states_are_fewer(n_qubits, samples,
                                                                                          expected):
    assert pays(benchmark_kernel(n_qubits), samples, samples, 1) is expected


def test_a_top1_layers_router_runs_by_parts_and_matches_tfq_in_outputs_and_gradients(monkeypatch):
    units = []  # every by-parts call's number of units
    by_parts = Factored.__call__

    def recording(self, parts, initial):
        units.append(parts.weights.shape[0])
        return by_parts(self, parts, initial)
    monkeypatch.setattr(Factored, "__call__", recording)
    qubits = cirq.GridQubit.rect(1, 4)
    features = np.random.default_rng(2).uniform(0, 1, (32, 4)).astype(np.float32)
    results = []
    for backend in ("statevector", "noiseless"):
        keras.utils.set_random_seed(7)
        layer = qmoe.QMoELayer(qubits, n_experts=4, expert_layers=2, router_layers=2, top_k=1,
                               encoder=qmoe.AngleEncoder(qubits), backend=backend)
        with tf.GradientTape() as tape:
            outputs = layer(features, training=True)
            loss = tf.reduce_sum(outputs * tf.range(1.0, 5.0)) + tf.add_n(layer.losses)
        gradients = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, layer.trainable_variables)]
        results.append((outputs.numpy(), layer(features, training=False).numpy(), gradients))
    assert units == [1, 1]  # the router's 32 rows, training and inference; top-1's experts row by row
    (outputs, inferred, gradients), (tfq_outputs, tfq_inferred, tfq_gradients) = results
    np.testing.assert_allclose(outputs, tfq_outputs, atol=1e-5)
    np.testing.assert_allclose(inferred, tfq_inferred, atol=1e-5)
    router = [v.name for v in layer.trainable_variables].index(layer.router.parameters.name)
    assert np.abs(tfq_gradients[router]).max() > 1e-3  # the router's weights are trained through its readouts
    for mine, theirs in zip(gradients, tfq_gradients):
        np.testing.assert_allclose(mine, theirs, atol=1e-4 * max(1.0, np.abs(theirs).max()))
