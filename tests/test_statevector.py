"""The TF statevector executor against TFQ and an exact float64 reference, and `auto`'s choice."""
import os
import subprocess
import sys

import cirq
import numpy as np
import pytest
import sympy
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

import qmoe_tfq as qmoe
from qmoe_tfq.execution import CircuitExecutor, StatevectorExecutor, make_program
from qmoe_tfq.execution import apply, xla
from qmoe_tfq.execution import steps as execution_steps
from qmoe_tfq.execution.kernel import Kernel
from qmoe_tfq.execution.ops import UnsupportedGate, stages
from qmoe_tfq.execution.singles import SingleMatrices

SYMBOLS = sympy.symbols("a b c d")
NAMES = [str(s) for s in SYMBOLS]


def every_gate(qubits, rng) -> list[cirq.Operation]:
    """One of each supported gate kind, each on random qubits with a random coefficient x symbol."""
    def angle():
        return float(rng.choice([1.0, -0.7, 2.3])) * SYMBOLS[rng.integers(len(SYMBOLS))]

    def pair():
        return [qubits[i] for i in rng.choice(len(qubits), 2, replace=False)]

    q = qubits[rng.integers(len(qubits))]
    return [cirq.rx(angle())(q), cirq.ry(angle())(q), cirq.rz(angle())(q), cirq.X(q) ** angle(), cirq.Y(q) ** angle(),
            cirq.Z(q) ** angle(), cirq.H(q) ** angle(), cirq.H(q), cirq.S(q), cirq.T(q),
            cirq.PhasedXPowGate(phase_exponent=0.3, exponent=angle())(q),
            cirq.CZ(*pair()) ** angle(), cirq.CNOT(*pair()) ** angle(), cirq.SWAP(*pair()) ** angle(),
            cirq.ISWAP(*pair()) ** angle(), cirq.ZZ(*pair()) ** angle(), cirq.XX(*pair()) ** angle(),
            cirq.YY(*pair()) ** angle(), cirq.CZ(*pair()), cirq.CNOT(*pair()), cirq.SWAP(*pair()),
            cirq.ISWAP(*pair()), cirq.FSimGate(0.3, 0.8)(*pair()),
            controlled(cirq.ry(angle()), *pair())]


def controlled(gate: cirq.Gate, control: cirq.Qid, target: cirq.Qid) -> cirq.Operation:
    return gate.on(target).controlled_by(control)


def random_circuit(n_qubits: int, seed: int) -> cirq.Circuit:
    rng = np.random.default_rng(seed)
    qubits = cirq.GridQubit.rect(1, n_qubits)
    operations = [op for _ in range(2) for op in every_gate(qubits, rng)]
    rng.shuffle(operations)
    return cirq.Circuit(cirq.ry(0.2 + i)(q) for i, q in enumerate(qubits)) + cirq.Circuit(operations)


def readouts(qubits) -> list[cirq.PauliSum]:
    first, last = qubits[0], qubits[-1]
    return [cirq.PauliSum.from_pauli_strings(cirq.Z(first)),
            cirq.X(first) * cirq.Y(last) + 0.5 * cirq.Z(last) - 0.25,
            cirq.X(first) * cirq.Z(last) + cirq.Y(first)]


def exact(circuit, observables, values: np.ndarray) -> np.ndarray:
    """<float64>[R, n_ops] by Cirq's complex128 simulator."""
    simulator = cirq.Simulator(dtype=np.complex128)
    return np.array([np.real(simulator.simulate_expectation_values(
        circuit, observables, cirq.ParamResolver(dict(zip(NAMES, row))), qubit_order=sorted(circuit.all_qubits())))
        for row in values])


@pytest.mark.parametrize("n_qubits,seed", [(2, 0), (3, 1), (4, 2), (6, 3)])
def test_random_circuits_match_tfq_values_and_exact_gradients(n_qubits, seed):
    circuit = random_circuit(n_qubits, seed)
    qubits = sorted(circuit.all_qubits())
    observables = readouts(qubits)
    values = tf.constant(np.random.default_rng(seed).uniform(-3, 3, (3, len(NAMES))), tf.float32)
    weights = tf.constant([1.0, -2.0, 0.5])
    compiled = Kernel(circuit, observables, NAMES)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(values)
        mine = compiled(values)  # <float32>[3, 3]
        theirs = tfq.layers.Expectation()(tfq.convert_to_tensor([circuit] * 3), symbol_names=NAMES,
                                           symbol_values=values, operators=observables)
        loss = tf.reduce_sum(mine * weights)
    np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, values).numpy(),
                               exact_gradient(circuit, observables, values.numpy(), weights.numpy()), atol=1e-4)


def exact_gradient(circuit, observables, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """<float64>[R, n_symbols] the gradient of each row's readouts times `weights`: central differences of Cirq's
    complex128 simulation (TFQ's Adjoint approximates some gate derivatives, e.g. HPowGate's, to ~1e-3)."""
    step, grid = 1e-5, values.astype(np.float64)
    reference = np.zeros_like(grid)
    for column in range(len(NAMES)):
        shift = np.zeros_like(grid)
        shift[:, column] = step
        reference[:, column] = ((exact(circuit, observables, grid + shift) - exact(circuit, observables, grid - shift))
                                @ weights) / (2 * step)
    return reference


def permuting_circuit(qubits, reverse: bool) -> cirq.Circuit:
    """Rotations and a CZ power between a CNOT ring, SWAP, Toffoli, CSWAP, a controlled X and a CNOT ladder."""
    a, b, c, d = SYMBOLS
    order = qubits[::-1] if reverse else qubits
    ring = [cirq.CNOT(order[i], order[(i + 1) % len(order)]) for i in range(len(order))]
    return cirq.Circuit([cirq.ry(a * (i + 1))(q) for i, q in enumerate(qubits)], ring, cirq.CZ(*qubits[::2]) ** b,
                        [cirq.rx(c)(q) for q in qubits], cirq.SWAP(qubits[0], qubits[3]), cirq.CCX(*order[:3]),
                        cirq.CSWAP(*order[1:]), cirq.X(order[3]).controlled_by(order[0]), cirq.rz(d)(qubits[1]),
                        [cirq.CNOT(order[i], order[i + 1]) for i in range(len(order) - 1)])


def test_permutations_compose_into_a_step_each_and_match_exact_values_and_gradients():
    qubits = cirq.GridQubit.rect(1, 4)
    programs = [permuting_circuit(qubits, reverse) for reverse in (False, True)]
    observables = readouts(qubits)
    # ry + ring; CZ; rx + SWAP, CCX, CSWAP, CX; rz + ladder. As H, CZ, H every CNOT took a step of its own.
    assert Kernel(programs[0], observables, NAMES).step_count == 4
    values = np.random.default_rng(5).uniform(-3, 3, (4, len(NAMES)))
    assert_rows_exact(Kernel(programs[0], observables, NAMES), programs[:1], observables, values)
    assert_rows_exact(Kernel(programs, [observables] * 2, NAMES), programs, observables, values, [0, 1, 1, 0])


def test_heterogeneous_programs_of_different_shapes_match_exact_values_and_gradients_row_by_row():
    programs = [random_circuit(3, seed) for seed in (6, 7, 8)]
    qubits = sorted(programs[0].all_qubits())
    observables = readouts(qubits)
    compiled = Kernel(programs, [observables] * 3, NAMES)
    alone = [Kernel(circuit, observables, NAMES).singles.identity for circuit in programs]  # each one's single stages
    assert len(set(alone)) > 1 and compiled.singles.identity == max(alone)  # a row makes only its own program's
    values = np.random.default_rng(9).uniform(-3, 3, (6, len(NAMES)))
    assert_rows_exact(compiled, programs, observables, values, [2, 0, 1, 1, 2, 0])


def assert_rows_exact(compiled: Kernel, programs, observables, values: np.ndarray, index=None) -> None:
    """Each row's readouts, and the gradient of their sum with fixed weights, against Cirq's exact ones for the row's
    program (`index`; None: the one program)."""
    weights = np.array([1.0, -2.0, 0.5])
    rows_values = tf.constant(values, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(rows_values)
        mine = compiled(rows_values, program_index=None if index is None else tf.constant(index))  # <float32>[R, 3]
        loss = tf.reduce_sum(mine * weights)
    gradient = tape.gradient(loss, rows_values).numpy()
    for p, circuit in enumerate(programs):
        rows = [r for r in range(len(values)) if index is None or index[r] == p]
        grid = rows_values.numpy()[rows]
        np.testing.assert_allclose(mine.numpy()[rows], exact(circuit, observables, grid), atol=1e-5)
        np.testing.assert_allclose(gradient[rows], exact_gradient(circuit, observables, grid, weights), atol=1e-4)


def test_layers_applied_in_chunks_of_any_size_agree():
    circuit = random_circuit(5, 7)
    observables = readouts(sorted(circuit.all_qubits()))
    values = tf.constant(np.random.default_rng(7).uniform(-3, 3, (3, len(NAMES))), tf.float32)
    whole = Kernel(circuit, observables, NAMES, chunk=5)(values)
    for chunk in (1, 2, 3):  # 3: chunks of 3 and 2 qubits
        np.testing.assert_allclose(Kernel(circuit, observables, NAMES, chunk=chunk)(values).numpy(), whole.numpy(),
                                   atol=1e-5)
    with pytest.raises(ValueError, match="chunk must be a positive number of qubits, got 0"):
        Kernel(circuit, observables, NAMES, chunk=0)


def test_deep_circuits_run_as_a_loop_under_xla_on_bucketed_rows_with_the_same_values_and_gradients():
    circuit = random_circuit(6, 8)
    qubits = sorted(circuit.all_qubits())
    values = tf.constant(np.random.default_rng(8).uniform(-3, 3, (5, len(NAMES))), tf.float32)
    run = StatevectorExecutor().compile(make_program([circuit], [readouts(qubits)], NAMES, qubits))
    assert max(steps.length for steps in run.kernel.runs) > execution_steps.UNROLL_MAX_STEPS
    reference = Kernel(circuit, readouts(qubits), NAMES)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(values)
        mine, eager = run(values), reference(values)  # 5 rows run as a bucket of 8
        losses = [tf.reduce_sum(out * [1.0, -2.0, 0.5]) for out in (mine, eager)]
    np.testing.assert_allclose(mine.numpy(), eager.numpy(), atol=1e-5)
    np.testing.assert_allclose(*(tape.gradient(loss, values).numpy() for loss in losses), atol=1e-4)


def test_deep_programs_are_differentiated_by_undoing_their_steps_to_central_differences_under_xla_too():
    circuits = [random_circuit(4, seed) for seed in (11, 12, 13)]  # general gates (ISWAP powers) between loops
    qubits = sorted(circuits[0].all_qubits())
    observable = readouts(qubits)
    compiled = Kernel(circuits, [observable] * 3, NAMES)
    assert compiled.adjoint and any(compiled.general)
    rng = np.random.default_rng(5)
    grid = rng.uniform(-3, 3, (5, len(NAMES)))
    program_index = np.array([0, 1, 2, 0, 1])
    initial = rng.normal(size=(5, 16)) + 1j * rng.normal(size=(5, 16))
    initial /= np.linalg.norm(initial, axis=1, keepdims=True)
    weights = np.array([1.0, -2.0, 0.5])
    values, states = tf.constant(grid, tf.float32), tf.constant(initial, tf.complex64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([values, states])
        losses = [tf.reduce_sum(run(values, states, tf.constant(program_index)) * weights)
                  for run in (compiled, xla.under_xla(compiled))]  # 5 rows, run under XLA as a bucket of 8
    weighted = sum(w * o.matrix(qubits) for w, o in zip(weights, observable))  # <complex128>[16, 16]

    def unitary(row: np.ndarray, program: int) -> np.ndarray:
        return cirq.unitary(cirq.resolve_parameters(circuits[program], dict(zip(NAMES, row))))

    def loss(row: np.ndarray, r: int) -> float:
        final = unitary(row, program_index[r]) @ initial[r]
        return float(np.real(final.conj() @ weighted @ final))

    step = 1e-5
    expected = np.array([[(loss(grid[r] + step * np.eye(4)[c], r) - loss(grid[r] - step * np.eye(4)[c], r)) / (2 * step)
                          for c in range(len(NAMES))] for r in range(5)])
    np.testing.assert_allclose(tape.gradient(losses[0], values).numpy(), expected, atol=2e-4)
    np.testing.assert_allclose(tape.gradient(losses[1], values).numpy(), expected, atol=2e-4)
    # TF's gradient of a real loss in a complex input z: 2 dL/d(conj z) = 2 U^H W U z
    of_initial = np.array([2 * unitary(grid[r], program_index[r]).conj().T @ weighted
                           @ unitary(grid[r], program_index[r]) @ initial[r] for r in range(5)])
    np.testing.assert_allclose(tape.gradient(losses[0], states).numpy(), of_initial, atol=2e-4)


def with_gradient(function, upstream):
    """`function` of a tensor p -> (its outputs, their gradient wrt p for `upstream`)."""
    def run(p):
        with tf.GradientTape() as tape:
            tape.watch(p)
            outputs = function(p)
        return outputs, tf.convert_to_tensor(tape.gradient(outputs, p, output_gradients=upstream))
    return run


@pytest.mark.parametrize("shared", [True, False])
def test_take_gathers_with_a_gathers_gradient_and_shared_indices_without_a_scatter_loop(shared):
    rng = np.random.default_rng(0)
    params = tf.constant(rng.normal(size=(5, 7, 2, 2)) + 1j * rng.normal(size=(5, 7, 2, 2)), tf.complex64)
    indices = np.array([[3, 0, 3]]) if shared else rng.integers(7, size=(5, 3))
    upstream = tf.constant(rng.normal(size=(5, 3, 2, 2)) + 1j * rng.normal(size=(5, 3, 2, 2)), tf.complex64)

    def gather(p):
        return tf.gather(p, indices[0], axis=1) if shared else tf.gather(p, indices, axis=1, batch_dims=1)

    ours, ours_gradient = with_gradient(lambda p: apply.take(p, indices), upstream)(params)
    theirs, their_gradient = with_gradient(gather, upstream)(params)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_allclose(ours_gradient.numpy(), their_gradient.numpy(), rtol=1e-6, atol=1e-6)
    hlo = {name: tf.function(with_gradient(f, upstream), jit_compile=True).experimental_get_compiler_ir(params)(
        stage="optimized_hlo") for name, f in (("take", lambda p: apply.take(p, indices)), ("gather", gather))}
    assert " while(" in hlo["gather"]
    assert (" while(" in hlo["take"]) is not shared  # per-row indices keep the gather's own gradient


def test_take_contracts_a_one_hot_only_up_to_its_size_limit(monkeypatch):
    params = tf.constant(np.arange(12.0).reshape(2, 6), tf.float32)
    indices = np.array([[5, 1, 5]])  # 3 indices into 6 columns: a one-hot of 18
    contracted = []
    monkeypatch.setattr(apply, "_take", lambda p, i: contracted.append(i.shape) or apply.gather_rows(p, i))
    apply.take(params, indices)
    monkeypatch.setattr(apply, "ONE_HOT_MAX", 17)
    taken = apply.take(params, indices)  # tf.gather and its own gradient
    assert contracted == [tf.TensorShape([1, 3])]
    assert taken.numpy().tolist() == [[5.0, 1.0, 5.0], [11.0, 7.0, 11.0]]


@pytest.mark.parametrize("per_program", [False, True])
def test_take_fixed_gathers_zeros_at_the_end_index_and_sums_each_entrys_reads_without_a_scatter_loop(per_program):
    rng = np.random.default_rng(1)
    params = tf.constant(rng.normal(size=(3, 5, 2)), tf.float32)
    # entry 4 read three times, 1-3 never, 5 = the zero; per program: rows 0 and 2 read program 1's, row 1 program 0's
    indices = np.array([[4, 0, 5], [4, 5, 4]])
    programs = np.stack([indices[::-1], indices]) if per_program else None  # <int>[P, 2, 3]
    program_index = tf.constant([1, 0, 1]) if per_program else None
    upstream = tf.constant(rng.normal(size=(3, 2, 3, 2)), tf.float32)

    def reference(p):
        with_zero = tf.concat([p, tf.zeros_like(p[:, :1])], axis=1)
        if not per_program:
            return tf.gather(with_zero, indices, axis=1)
        return tf.gather(with_zero, tf.gather(programs, program_index), axis=1, batch_dims=1)

    def ours(p):
        return apply.take_fixed(p, programs, program_index) if per_program else apply.take_fixed(p, indices)

    mine, my_gradient = with_gradient(ours, upstream)(params)
    theirs, their_gradient = with_gradient(reference, upstream)(params)
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    np.testing.assert_array_equal(mine.numpy()[[0, 2], 0, 2], 0.0)  # rows reading `indices`
    np.testing.assert_allclose(my_gradient.numpy(), their_gradient.numpy(), atol=1e-6)
    np.testing.assert_array_equal(my_gradient.numpy()[:, 1:4], 0.0)
    hlo = tf.function(with_gradient(ours, upstream), jit_compile=True).experimental_get_compiler_ir(params)(
        stage="optimized_hlo")
    assert " while(" not in hlo and " scatter(" not in hlo


def test_a_stage_of_single_qubit_gates_fuses_pairwise_to_their_product_in_order_with_its_gradient():
    rng = np.random.default_rng(2)
    q = cirq.LineQubit(0)
    symbols = sympy.symbols("s0:7")
    gates = [cirq.rx, cirq.ry, cirq.rz, lambda t: cirq.XPowGate(exponent=t), cirq.rx, cirq.ry, cirq.rz]
    circuit = cirq.Circuit(gate(s)(q) for gate, s in zip(gates, symbols))  # one stage of 7: an odd count
    (stage,) = [s for s in stages(circuit, {q: 0}, {str(s): c for c, s in enumerate(symbols)}) if s.kind == "single"]
    singles = SingleMatrices([[stage]], n_columns=len(symbols))
    values = rng.uniform(-2, 2, size=(4, len(symbols)))
    upstream = rng.normal(size=(4, 2, 2)) + 1j * rng.normal(size=(4, 2, 2))

    def reference(v: np.ndarray) -> np.ndarray:  # <complex128>[4, 2, 2] the gates' unitaries multiplied one by one
        return np.stack([np.linalg.multi_dot([cirq.unitary(cirq.resolve_parameters(op, dict(zip(symbols, row))))
                                              for op in reversed(list(circuit.all_operations()))]) for row in v])

    tensor = tf.constant(values, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        fused = singles(tensor, None)  # <complex64>[4, 2, 2, 2]: the stage, then the identity
        loss = tf.reduce_sum(tf.math.real(fused[:, 0] * tf.math.conj(tf.constant(upstream, tf.complex64))))
    np.testing.assert_allclose(fused.numpy()[:, 0], reference(values), atol=1e-5)
    np.testing.assert_allclose(fused.numpy()[:, 1], np.broadcast_to(np.eye(2), (4, 2, 2)), atol=1e-6)
    step = 1e-4
    numeric = [np.sum(np.real((reference(values + step * np.eye(len(symbols))[c]) -
                               reference(values - step * np.eye(len(symbols))[c])) / (2 * step) * np.conj(upstream)),
                      axis=(1, 2)) for c in range(len(symbols))]  # central differences, float64
    np.testing.assert_allclose(tape.gradient(loss, tensor).numpy(), np.stack(numeric, axis=1), atol=1e-4)


@pytest.mark.parametrize("rows,size", [(0, 0), (1, 1), (4, 4), (5, 5), (9, 10), (17, 20), (64, 64), (65, 80)])
def test_row_buckets_add_at_most_a_quarter(rows, size):
    assert int(xla.bucket(tf.constant(rows))) == size


def test_input_states_and_heterogeneous_programs_match_tfq():
    qubits = cirq.GridQubit.rect(1, 3)
    programs = [random_circuit(3, seed)[1:] for seed in (4, 5)]  # without the fixed ry layer
    program = make_program(programs, [readouts(qubits)] * 2, NAMES, qubits)
    values = tf.constant(np.random.default_rng(0).uniform(-2, 2, (5, len(NAMES))), tf.float32)
    index = tf.constant([1, 0, 0, 1, 1])
    circuits = qmoe.encode(np.random.default_rng(1).uniform(0, 1, (2, 3)), qubits)
    sample = tf.constant([0, 1, 1, 0, 1])
    mine, theirs = (executor.compile(program)(values, index, executor.prepare(circuits, qubits), sample)
                    for executor in (StatevectorExecutor(), CircuitExecutor()))
    np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=1e-5)


def test_input_states_of_circuits_on_every_qubit_or_on_fewer_are_on_every_qubit():
    qubits = cirq.GridQubit.rect(1, 3)
    every = [cirq.Circuit(cirq.H.on_each(*qubits), cirq.rx(0.3)(qubits[2])),
             cirq.Circuit(cirq.X(qubits[0]), cirq.I(qubits[1]), cirq.ry(0.7)(qubits[2]))]
    fewer = [cirq.Circuit(cirq.X(qubits[1])), cirq.Circuit(cirq.H(qubits[0]), cirq.CNOT(qubits[0], qubits[2]))]
    prepare = StatevectorExecutor().prepare
    for batch in (every, every + fewer, fewer):
        expected = [cirq.final_state_vector(circuit + cirq.I.on_each(*qubits), qubit_order=qubits) for circuit in batch]
        for call in (prepare, tf.function(prepare)):  # eager and traced
            states = call(tfq.convert_to_tensor(batch), qubits).states  # <complex64>[B, 8]
            np.testing.assert_allclose(states.numpy(), expected, atol=1e-6)


def test_a_noise_channel_is_refused_by_name():
    q = cirq.GridQubit(0, 0)
    with pytest.raises(UnsupportedGate, match=r"cannot run cirq\.depolarize\(p=0\.1\)"):
        Kernel(cirq.Circuit(cirq.rx(SYMBOLS[0])(q), cirq.depolarize(0.1)(q)), [cirq.Z(q)], NAMES)


def test_statevector_layer_names_a_gate_it_cannot_run():
    q = cirq.GridQubit.rect(1, 2)
    expert = cirq.Circuit(cirq.rx(SYMBOLS[0])(q[0]), cirq.amplitude_damp(0.1)(q[1]))
    layer = qmoe.QMoELayer(q, experts=[expert, "quantum"], backend="statevector", expert_layers=1)
    with pytest.raises(UnsupportedGate, match=r"cannot run cirq\.amplitude_damp\(gamma=0\.1\).*backend='noisy'"):
        layer(np.zeros((2, 2), np.float32))


def small_layer(backend, kind):
    keras.utils.set_random_seed(3)
    qubits = cirq.GridQubit.rect(1, 3)
    kwargs = {"dense": {"n_experts": 3, "encoder": qmoe.AngleEncoder(qubits)},
              "top1_circuits": {"experts": [qmoe.hardware_efficient_ansatz(qubits, 1, "p"), "quantum",
                                            qmoe.hardware_efficient_ansatz(qubits, 2, "r", ("rx", "rz"), "cnot_ring")],
                                "top_k": 1},
              "reuploading": {"n_experts": 2, "encoder": qmoe.AngleEncoder(qubits), "reuploading": True},
              "coherent": {"n_experts": 2, "encoder": qmoe.AngleEncoder(qubits)}}[kind]
    layer = qmoe.CoherentQMoELayer if kind == "coherent" else qmoe.QMoELayer
    return layer(qubits, expert_layers=2, backend=backend, **kwargs)


@pytest.mark.parametrize("kind", ["dense", "top1_circuits", "reuploading", "coherent"])
def test_qmoe_gives_the_same_outputs_and_gradients_on_statevector_and_tfq(kind):
    features = np.random.default_rng(0).uniform(0, 1, (6, 3)).astype(np.float32)
    inputs = qmoe.encode(features, cirq.GridQubit.rect(1, 3)) if kind == "top1_circuits" else features
    results = []
    for backend in ("statevector", "noiseless"):
        layer = small_layer(backend, kind)
        assert layer.simulator == backend
        with tf.GradientTape() as tape:
            outputs = layer(inputs)
            loss = tf.reduce_sum(outputs * tf.range(1.0, outputs.shape[1] + 1.0))
        gradients = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, layer.trainable_variables)]
        results.append((outputs.numpy(), gradients))
    (outputs, gradients), (tfq_outputs, tfq_gradients) = results
    np.testing.assert_allclose(outputs, tfq_outputs, atol=1e-5)
    for mine, theirs in zip(gradients, tfq_gradients):
        np.testing.assert_allclose(mine, theirs, atol=1e-4 * max(1.0, np.abs(theirs).max()))


TF_ONLY = """
import sys
import numpy as np
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(features=tf.constant(np.load(sys.argv[2])))["output"].numpy()
assert not any(name.startswith("tensorflow_quantum") for name in sys.modules), "TFQ was imported"
np.save(sys.argv[3], out)
"""


def test_a_statevector_saved_model_serves_with_tensorflow_alone(tmp_path):
    qubits = cirq.GridQubit.rect(1, 3)
    model = qmoe.build_qmoe_classifier(qubits, 2, n_features=3, n_experts=2, expert_layers=1, router_layers=1,
                                       backend="statevector")
    features = np.random.default_rng(0).uniform(0, 1, (4, 3)).astype(np.float32)
    qmoe.export_saved_model(model, tmp_path / "sm")
    np.save(tmp_path / "x.npy", features)
    env = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", TF_ONLY, str(tmp_path / "sm"), str(tmp_path / "x.npy"),
                             str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=300,
                            env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model.predict(features, verbose=0), atol=1e-6)


class NameRecorder(CircuitExecutor):
    """Records the symbol names each call differentiates."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.names = []

    def __call__(self, programs, names, values, operators):
        self.names.append(list(names.numpy().astype(str)))
        return super().__call__(programs, names, values, operators)


def test_shots_resolve_the_data_first_so_parameter_shift_sees_only_weights():
    qubits = cirq.GridQubit.rect(1, 2)
    x, w = sympy.symbols("x w")
    circuit = cirq.Circuit(cirq.ry(x)(qubits[0]), cirq.ry(w)(qubits[0]), cirq.I(qubits[1]))
    program = make_program([circuit], [[cirq.Z(qubits[0])]], ["x", "w"], qubits, n_data=1)
    values = tf.constant([[0.3, 0.4], [1.0, -0.2]])
    sampled = NameRecorder(repetitions=20_000)
    estimates = sampled.compile(program)(values)
    assert sampled.names == [["w"]]
    np.testing.assert_allclose(estimates.numpy()[:, 0], np.cos(values.numpy().sum(axis=1)), atol=0.03)
    exact = NameRecorder()
    exact.compile(program)(values)
    assert exact.names == [["x", "w"]]  # exact expectations keep every symbol (Adjoint costs the same)


def test_rows_in_halves_equal_one_piece_outputs_and_gradients():
    """Two launches of half the rows each (`under_xla(halves=True)`) give what one launch gives, for an odd row count
    (padded), forward and backward; `in_halves` splits only calls of much work."""
    a, b = sympy.symbols("a b")
    q = cirq.LineQubit.range(3)
    circuit = cirq.Circuit([cirq.rx(a)(q[0]), cirq.CNOT(q[0], q[1]), cirq.ry(b)(q[2]), cirq.CZ(q[1], q[2])] * 3)
    kernel = Kernel(circuit, [cirq.Z(q[1]), cirq.X(q[2])], ["a", "b"])
    values = tf.constant(np.random.default_rng(0).uniform(0, 6, (7, 2)), tf.float32)
    initial, index = kernel.ground_states(7), tf.zeros([7], tf.int32)
    results = []
    for halves in (False, True):
        with tf.GradientTape() as tape:
            tape.watch(values)
            readouts = xla.under_xla(kernel, halves=halves)(values, initial, index)
            loss = tf.reduce_sum(readouts * tf.constant([[1.0, -2.0]]))
        results.append((readouts.numpy(), tape.gradient(loss, values).numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], atol=1e-5)
    np.testing.assert_allclose(results[1][1], results[0][1], atol=1e-4)
    assert results[0][0].shape == (7, 2)
    assert not xla.in_halves(kernel, 64) and xla.in_halves(kernel, 10 ** 6)
