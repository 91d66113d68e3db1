"""The built-in QCNN ansatz: its circuit, its parts in a QMoE layer, saving, and learning the cluster-state task."""
import collections

import cirq
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import qmoe_tfq as qmoe
from qmoe_tfq import quantum_data

QUBITS = cirq.GridQubit.rect(1, 4)


def gate_counts(circuit: cirq.Circuit) -> collections.Counter:
    return collections.Counter(type(op.gate).__name__ for op in circuit.all_operations())


def test_eight_qubits_convolve_and_pool_down_to_one():
    qubits = cirq.LineQubit.range(8)
    circuit = qmoe.QCNN().circuit(qubits, prefix="w")
    counts = gate_counts(circuit)
    # Convolutions on rings of 8, 4 and 2 qubits: 8 + 4 + 1 pairs, one ZZ, YY and XX power each.
    assert counts["ZZPowGate"] == counts["YYPowGate"] == counts["XXPowGate"] == 13
    assert counts["CXPowGate"] == 4 + 2 + 1  # one CNOT per pooled qubit
    assert len(cirq.parameter_symbols(circuit)) == 3 * (15 + 6)  # symbols shared within a level
    assert qmoe.QCNN().output_qubits(qubits) == [qubits[7]]
    assert qmoe.QCNN(layers=2).output_qubits(qubits) == qubits[6:]
    assert qmoe.QCNN(output=2).output_qubits(qubits) == qubits[6:]
    # Every CNOT pools into a qubit the next level keeps (a sink); the sources are left behind.
    assert {op.qubits[1] for op in circuit.all_operations() if isinstance(op.gate, cirq.CXPowGate)} == set(qubits[4:])


def test_too_many_levels_and_coherent_or_reuploading_use_are_refused():
    with pytest.raises(ValueError, match=r"QCNN\(layers=3\) on 4 qubits: only 2 levels fit before 1 qubit"):
        qmoe.QCNN(layers=3).circuit(QUBITS)
    with pytest.raises(ValueError, match="layers must be a positive integer, got 0"):
        qmoe.QCNN(layers=0)
    with pytest.raises(ValueError, match="reuploading=True .* only 'quantum' experts \\(of the layer's Ansatz"):
        qmoe.QMoELayer(QUBITS, 2, ansatz=qmoe.QCNN(), encoder=qmoe.AngleEncoder(QUBITS), reuploading=True)
    with pytest.raises(TypeError, match="CoherentQMoELayer re-uploads features .* with a qmoe_tfq.Ansatz"):
        qmoe.CoherentQMoELayer(QUBITS, 2, ansatz=qmoe.QCNN(), encoder=qmoe.AngleEncoder(QUBITS))


def qcnn_layer(execution: str = "auto") -> qmoe.QMoELayer:
    """QCNN experts and router (the router's readouts through a head), one experts' depth-1 QCNN of its own."""
    keras.utils.set_random_seed(0)
    qcnn = qmoe.QCNN()
    return qmoe.QMoELayer(QUBITS, experts=["quantum", "quantum", qmoe.QCNN(layers=1)], ansatz=qcnn,
                          router=qmoe.QuantumRouter(head=keras.layers.Dense(3)), top_k=1, execution=execution,
                          observables=[cirq.Z(q) for q in qcnn.output_qubits(QUBITS)], name="qmoe")


def test_the_kernel_and_qsim_agree_on_qcnn_parts(features):
    circuits = qmoe.encode(np.concatenate([features, features[:, :1]], axis=1), QUBITS)
    np.testing.assert_allclose(qcnn_layer("statevector")(circuits).numpy(), qcnn_layer("noiseless")(circuits).numpy(),
                               atol=1e-5)


def test_qcnn_parts_save_and_reload_with_their_predictions(tmp_path, features):
    circuits = qmoe.encode(np.concatenate([features, features[:, :1]], axis=1), QUBITS)
    inputs = keras.Input(shape=(), dtype=tf.string)
    model = keras.Model(inputs, qcnn_layer()(inputs))
    qmoe.save_model(model, str(tmp_path / "qcnn.keras"))
    reloaded = qmoe.load_model(str(tmp_path / "qcnn.keras"))
    layer = reloaded.get_layer("qmoe")
    assert layer.ansatz == qmoe.QCNN() and layer.get_config()["experts"][2] == {"ansatz": qmoe.QCNN(layers=1).get_config()}
    np.testing.assert_allclose(reloaded(circuits).numpy(), model(circuits).numpy(), atol=1e-6)


def test_qcnn_experts_learn_the_excited_cluster_states():
    x_train, x_test, y_train, y_test = quantum_data.generate(QUBITS, 96, ("cluster",), seed=0).tensors()
    keras.utils.set_random_seed(0)
    qcnn = qmoe.QCNN()
    inputs = keras.Input(shape=(), dtype=tf.string)
    moe = qmoe.QMoELayer(QUBITS, 2, ansatz=qcnn, observables=[cirq.Z(q) for q in qcnn.output_qubits(QUBITS)],
                         top_k=1)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(moe(inputs)))
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=10, batch_size=16, verbose=0)
    assert model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"] >= 0.85  # chance: 0.5
