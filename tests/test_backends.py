import cirq
import numpy as np
import pytest
import sympy
import tensorflow as tf
import tensorflow_quantum as tfq

import qmoe_tfq as qmoe
from qmoe_tfq.execution import CircuitExecutor
from qmoe_tfq.hardware import (
    DeviceCompilationError,
    circuit_stats,
    compile_for_device,
    google_virtual_machine,
)

QUBITS = cirq.GridQubit.rect(1, 2)
X = np.array([[0.2, 0.7], [0.9, 0.1], [0.5, 0.5]], np.float32)


@pytest.fixture(scope="module")
def qvm():
    return google_virtual_machine("weber")


def exact_and(backend_kwargs, **layer_kwargs):
    """(exact outputs, outputs of the same weights on another backend) for a small QMoE layer."""
    circuits = qmoe.encode(X, QUBITS)
    exact = qmoe.QMoELayer(QUBITS, 2, expert_layers=1, router_layers=1, **layer_kwargs)
    other = qmoe.QMoELayer(QUBITS, 2, expert_layers=1, router_layers=1, **layer_kwargs, **backend_kwargs)
    exact(circuits[:1]), other(circuits[:1])
    other.set_weights(exact.get_weights())
    return exact(circuits).numpy(), other(circuits).numpy()


@pytest.mark.parametrize("backend_kwargs", [
    {"backend": "noiseless", "repetitions": 3000},
    {"backend": "noisy", "repetitions": 500, "noise": cirq.depolarize(0.005)},
    {"backend": cirq.Simulator(), "repetitions": 3000},
    {"backend": cirq.DensityMatrixSimulator()},
], ids=["tfq-shots", "tfq-trajectories", "cirq-sampler", "cirq-exact"])
def test_every_backend_gives_right_shape_and_close_values(backend_kwargs):
    # Dense routing: with top_k=1, shot noise in the router could flip a sample near a tie to the other
    # expert, a jump no tolerance covers. Top-1 on a sampler is tested on the QVM below.
    exact, other = exact_and(backend_kwargs)
    assert other.shape == exact.shape == (3, 2)
    assert np.abs(other - exact).max() < 0.15


def test_shot_noise_shrinks_as_one_over_sqrt_shots():
    q = cirq.LineQubit(0)
    rows = 200
    programs = tfq.convert_to_tensor([cirq.Circuit(cirq.ry(sympy.Symbol("a"))(q))] * rows)
    names, values = tf.constant(["a"]), tf.fill([rows, 1], 0.9)
    operators = tfq.convert_to_tensor([[cirq.Z(q)]])
    exact = np.cos(0.9)
    for shots in (100, 10000):
        estimates = CircuitExecutor("noiseless", shots)(programs, names, values, operators).numpy()[:, 0]
        rms = np.sqrt(np.mean((estimates - exact) ** 2))
        bound = np.sqrt(1 - exact ** 2) / np.sqrt(shots)  # std of the mean of +-1 outcomes
        assert 0.6 * bound < rms < 1.5 * bound, (shots, rms, bound)


def test_depolarising_and_amplitude_damping_act_as_expected():
    q = cirq.GridQubit(0, 0)
    circuit = cirq.Circuit(cirq.rx(sympy.Symbol("t"))(q))
    data = qmoe.encode(np.zeros((1, 1), np.float32), [q])
    def z(noise):
        kwargs = {} if noise is None else {"backend": "noisy", "repetitions": 2000, "noise": noise}
        pqc = qmoe.ExpertPQC(circuit, [cirq.Z(q)], initializer=tf.keras.initializers.Constant(0.5), **kwargs)
        return float(pqc(data)[0, 0])
    exact = z(None)
    assert exact == pytest.approx(np.cos(0.5), abs=1e-5)
    assert abs(z(cirq.depolarize(0.2))) < exact - 0.1          # pulled towards the mixed state
    assert z(cirq.amplitude_damp(0.5)) > exact + 0.05           # pulled towards |0>, <Z> = +1


def test_noise_needs_a_noisy_backend_and_travels_in_the_config():
    with pytest.raises(ValueError, match=r"noise=cirq.depolarize\(p=0.01\) needs a simulator of noisy circuits"):
        qmoe.QMoELayer(QUBITS, 2, noise=cirq.depolarize(0.01))
    with pytest.raises(ValueError, match="backend='noisy' averages noise trajectories: give repetitions"):
        qmoe.QMoELayer(QUBITS, 2, backend="noisy")
    with pytest.raises(ValueError, match="backend='gpu' is not allowed"):
        qmoe.QMoELayer(QUBITS, 2, backend="gpu")
    moe = qmoe.QMoELayer(QUBITS, 2, backend="noisy", repetitions=10, noise=cirq.amplitude_damp(0.1))
    clone = qmoe.QMoELayer.from_config(moe.get_config())
    assert clone.noise == cirq.amplitude_damp(0.1) and clone.backend == "noisy" and clone.repetitions == 10


def random_resolved(circuit: cirq.Circuit, seed: int) -> cirq.Circuit:
    rng = np.random.default_rng(seed)
    return cirq.resolve_parameters(circuit, {s: rng.uniform(0, 2 * np.pi) for s in cirq.parameter_symbols(circuit)})


def assert_equivalent(original: cirq.Circuit, compiled, seeds=(0, 1, 2)):
    """Same action on random product inputs, reading outputs where the routing left each qubit."""
    logical = sorted(original.all_qubits())
    extra = sorted(compiled.circuit.all_qubits() - {compiled.final_map[q] for q in logical})
    for seed in seeds:
        rng = np.random.default_rng(seed)
        prep = cirq.Circuit(cirq.PhasedXZGate(x_exponent=rng.uniform(), z_exponent=rng.uniform(),
                                              axis_phase_exponent=rng.uniform()).on(q) for q in logical)
        expected = cirq.final_state_vector(prep + original, qubit_order=logical)
        physical_prep = prep.transform_qubits(compiled.initial_map)
        order = [compiled.final_map[q] for q in logical] + extra
        actual = cirq.final_state_vector(physical_prep + compiled.circuit, qubit_order=order)
        actual = actual.reshape(2 ** len(logical), -1)[:, 0]  # routing ancillas end in |0>
        assert abs(np.vdot(expected, actual)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("n_qubits, entangler", [(4, "ring"), (3, "ring"), (3, "chain")])
def test_compiled_ansatz_is_valid_and_equivalent(qvm, n_qubits, entangler):
    qubits = cirq.GridQubit.rect(1, n_qubits)
    circuit = random_resolved(qmoe.hardware_efficient_ansatz(qubits, 2, entangler=entangler), n_qubits)
    compiled = compile_for_device(circuit, qvm.device)
    qvm.device.validate_circuit(compiled.circuit)
    assert set(compiled.circuit.all_qubits()) <= set(qvm.device.metadata.qubit_set)
    assert_equivalent(circuit, compiled)
    before, after = circuit_stats(circuit), circuit_stats(compiled.circuit)
    if n_qubits == 3 and entangler == "ring":  # a triangle has no embedding in the grid: SWAPs needed
        assert after["two_qubit_gates"] > before["two_qubit_gates"]
    else:
        assert after["two_qubit_gates"] == before["two_qubit_gates"]


def test_symbolic_circuits_compile_too(qvm):
    circuit = qmoe.hardware_efficient_ansatz(QUBITS, 1)
    compiled = compile_for_device(circuit, qvm.device).circuit
    assert cirq.parameter_symbols(compiled) == cirq.parameter_symbols(circuit)


def test_incompatible_circuits_name_the_problem(qvm):
    a, b, c = cirq.GridQubit.rect(1, 3)
    with pytest.raises(DeviceCompilationError, match=r"operation CCZ\(q\(0, 0\), q\(0, 1\), q\(0, 2\)\) acts on 3 qubits"):
        compile_for_device(cirq.Circuit(cirq.CCZ(a, b, c)), qvm.device)
    big = cirq.Circuit(cirq.X.on_each(cirq.LineQubit.range(60)))
    with pytest.raises(DeviceCompilationError, match="uses 60 qubits but the device has 53"):
        compile_for_device(big, qvm.device)


def test_qvm_inference_and_parameter_shift_fine_tuning(qvm):
    exact, on_qvm = exact_and({"backend": qvm, "repetitions": 400}, top_k=1)
    assert on_qvm.shape == (3, 2)
    assert np.abs(on_qvm - exact).max() < 0.3  # shot noise plus weber's calibrated gate noise
    moe = qmoe.QMoELayer(QUBITS, 2, expert_layers=1, router_layers=1, top_k=1, backend=qvm, repetitions=200)
    circuits = qmoe.encode(X[:2], QUBITS)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(moe(circuits) - 1.0))
    router_grad, *_ = tape.gradient(loss, [moe.router.parameters])
    assert np.abs(router_grad.numpy()).sum() > 0


def test_with_backend_keeps_the_compiled_metrics_custom_ones_included():
    def mean_confidence(y_true, y_pred):
        return tf.reduce_max(y_pred, axis=-1)

    x = np.random.default_rng(0).uniform(0, 1, (8, 2)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int32)
    model = qmoe.build_qmoe_classifier(cirq.GridQubit.rect(1, 2), 2, n_features=2, n_experts=2, expert_layers=1,
                                       router_layers=1)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy", mean_confidence])
    expected = model.evaluate(x, y, verbose=0, return_dict=True)
    copied = qmoe.with_backend(model, "noiseless").evaluate(x, y, verbose=0, return_dict=True)
    assert copied["mean_confidence"] == pytest.approx(expected["mean_confidence"], abs=1e-5)
    assert copied["accuracy"] == pytest.approx(expected["accuracy"])
