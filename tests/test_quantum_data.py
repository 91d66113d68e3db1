"""Quantum data (`qmoe_tfq.quantum_data`) and the defaults that let QMoE read it: router readouts
that see correlations, an ansatz that entangles first, observables in both builders."""
import itertools

import cirq
import numpy as np
import pytest
import tf_keras as keras

import qmoe_tfq as qmoe
from qmoe_tfq import quantum_data
from qmoe_tfq.routers import router_readouts
from configurations import settings_config

QUBITS = cirq.GridQubit.rect(1, 4)


def expectations(circuit: cirq.Circuit, observables: list[cirq.PauliString]) -> np.ndarray:
    state = cirq.final_state_vector(circuit, qubit_order=QUBITS)
    order = {q: i for i, q in enumerate(QUBITS)}
    return np.array([o.expectation_from_state_vector(state, order).real for o in observables])


def test_generation_is_deterministic_and_balanced():
    data = quantum_data.generate(QUBITS, 60, seed=3)
    again = quantum_data.generate(QUBITS, 60, seed=3)
    other = quantum_data.generate(QUBITS, 60, seed=4)
    assert data.x_train == again.x_train and data.x_test == again.x_test
    np.testing.assert_array_equal(data.y_train, again.y_train)
    assert data.x_train != other.x_train
    assert (len(data.x_train), len(data.x_test)) == (42, 18)
    labels = np.concatenate([data.y_train, data.y_test])
    families = np.concatenate([data.family_train, data.family_test])
    assert data.families == ("cluster", "ghz", "product")
    for family in range(3):  # 20 samples per family, 10 of each label
        assert np.bincount(labels[families == family], minlength=2).tolist() == [10, 10]


def test_each_family_carries_its_label_where_the_docstring_says():
    data = quantum_data.generate(QUBITS, 48, seed=0, test_size=0.5)
    n = len(QUBITS)
    ring_zz = [cirq.Z(QUBITS[i]) * cirq.Z(QUBITS[(i + 1) % n]) for i in range(n)]
    stabilisers = [cirq.Z(QUBITS[i - 1]) * cirq.X(QUBITS[i]) * cirq.Z(QUBITS[(i + 1) % n]) for i in range(n)]
    singles = [cirq.Z(q) for q in QUBITS]
    for circuit, label, family in zip(data.x_train, data.y_train, data.family_train):
        name = data.families[family]
        if name == "cluster":  # an excitation flips the stabilisers next to it
            assert (expectations(circuit, stabilisers).min() < 0) == bool(label)
            np.testing.assert_allclose(expectations(circuit, singles), 0, atol=0.25)
        elif name == "ghz":  # a bit flip turns the Z Z across it negative
            assert (expectations(circuit, ring_zz).min() < 0) == bool(label)
            np.testing.assert_allclose(expectations(circuit, singles), 0, atol=1e-5)
        else:  # product: the sign of every Z
            assert np.all(np.sign(expectations(circuit, singles)) == 1 - 2 * label)


def test_the_hard_families_hide_their_labels_where_the_docstring_says():
    data = quantum_data.generate(QUBITS, 40, quantum_data.HARD_MIXTURE, seed=0, test_size=0.5, jitter=0.0)
    parity = [cirq.PauliString({q: cirq.X for q in QUBITS})]
    lower = [cirq.PauliString(dict(zip(group, paulis))) for size in (1, 2, 3)
             for group in itertools.combinations(QUBITS, size)
             for paulis in itertools.product((cirq.X, cirq.Y, cirq.Z), repeat=size)]
    bare_ghz = cirq.Circuit(cirq.H(QUBITS[0]), (cirq.CNOT(a, b) for a, b in zip(QUBITS, QUBITS[1:])))
    reference = expectations(bare_ghz, lower)
    singles_x, singles_z = [cirq.X(q) for q in QUBITS], [cirq.Z(q) for q in QUBITS]
    for circuit, label, family in zip(data.x_train, data.y_train, data.family_train):
        name = data.families[family]
        if name == "ghz_parity":  # the n-body parity alone: every lower correlator is the bare GHZ state's
            assert (expectations(circuit, parity)[0] < 0) == bool(label)
            np.testing.assert_allclose(expectations(circuit, lower), reference, atol=1e-5)
        elif name == "product_x":  # X says the label; Z says the opposite of the product family's rule
            assert np.all(np.sign(expectations(circuit, singles_x)) == 1 - 2 * label)
            assert np.all(np.sign(expectations(circuit, singles_z)) == 2 * label - 1)
    assert set(data.family_train) == {0, 1, 2}


def test_excited_cluster_states_is_the_cluster_family():
    train, test, y_train, y_test = quantum_data.excited_cluster_states(QUBITS, 20, seed=1)
    data = quantum_data.generate(QUBITS, 20, ("cluster",), seed=1)
    assert train == data.x_train and test == data.x_test
    assert y_train.sum() + y_test.sum() == 10


@pytest.mark.parametrize("kwargs, message", [
    ({"families": ("cluster", "bell")}, r"families=\('cluster', 'bell'\) is not allowed; use distinct names from"),
    ({"families": ("ghz", "ghz")}, "is not allowed; use distinct names"),
    ({"n_samples": 5}, "n_samples=5 gives fewer than 2 samples to each of 3 families"),
    ({"test_size": 1.5}, r"test_size must be in \(0, 1\), got 1.5"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantum_data.generate(QUBITS, **{"n_samples": 30, **kwargs})


@pytest.mark.parametrize("n_qubits, n_experts", [(2, 3), (3, 4), (4, 8), (5, 16), (4, 30)])
def test_router_readouts_are_distinct_local_and_on_the_qubits(n_qubits, n_experts):
    qubits = cirq.LineQubit.range(n_qubits)
    readouts = router_readouts(qubits, n_experts)
    assert len(set(readouts)) == n_experts
    assert all(set(r.qubits) <= set(qubits) for r in readouts)
    first = readouts[:min(n_experts, n_qubits)]  # neighbouring Z Z first: correlations
    assert all(len(r.qubits) == 2 and set(r.values()) == {cirq.Z} for r in first[:max(1, n_qubits // 2)])


def test_layer_router_reads_correlations_and_experts_start_with_a_cnot_ring():
    moe = qmoe.QMoELayer(QUBITS, n_experts=3, expert_layers=1, router_layers=1)
    readouts = [next(iter(r)) for r in moe.router.readouts]
    assert [str(r) for r in readouts] == ["Z(q(0, 0))*Z(q(0, 1))", "Z(q(0, 2))*Z(q(0, 3))", "Z(q(0, 1))*Z(q(0, 2))"]
    circuit = moe.experts[0].model_circuit
    assert [op.gate for op in circuit.all_operations()][:4] == [cirq.CNOT] * 4
    assert {type(op.gate) for op in circuit.all_operations()} == {cirq.CXPowGate, cirq.Ry, cirq.Rz}
    with pytest.raises(TypeError, match="entangle_first must be True or False, got 'yes'"):
        qmoe.QMoELayer(QUBITS, entangle_first="yes")
    with pytest.raises(ValueError, match="kind='xyz' is not allowed; use one of"):
        router_readouts(QUBITS, 2, "xyz")


def test_a_version_1_config_loads_with_the_circuits_it_was_built_with():
    old = qmoe.QMoELayer.from_config(settings_config(1, QUBITS, n_experts=3, expert_layers=1, router_layers=1))
    assert [next(iter(r)) for r in old.router.readouts] == router_readouts(QUBITS, 3, "pauli")
    assert all(len(op.qubits) == 1 for op in old.experts[0].model_circuit[0])  # rotations first


def test_builders_take_observables():
    observables = [cirq.Z(QUBITS[0]) * cirq.Z(QUBITS[1]), cirq.X(QUBITS[2])]
    for build in (qmoe.build_qnn_classifier, qmoe.build_qmoe_classifier):
        model = build(QUBITS, 2, n_features=4, observables=observables)
        assert model.get_layer("classes").kernel.shape == (2, 2)  # two readouts in, two classes out
        assert model.predict(np.random.rand(3, 4), verbose=0).shape == (3, 2)


def test_a_small_qmoe_learns_quantum_data():
    qubits = cirq.GridQubit.rect(1, 3)
    x_train, x_test, y_train, y_test = quantum_data.generate(qubits, 96, ("cluster", "product"), seed=0).tensors()
    keras.utils.set_random_seed(0)
    model = qmoe.build_qmoe_classifier(qubits, 2, n_experts=2, expert_layers=1, router_layers=1, learning_rate=0.1)
    model.fit(x_train, y_train, epochs=8, batch_size=16, verbose=0)
    assert model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"] > 0.8
