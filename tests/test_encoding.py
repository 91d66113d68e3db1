import cirq
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_quantum as tfq

from qmoe_tfq import AngleEncoder, encode


def test_encode_writes_scaled_angles(qubits, features):
    circuits = tfq.from_tensor(encode(features, qubits, scale=2.0))
    assert len(circuits) == len(features)
    first = list(circuits[0].all_operations())
    assert [op.qubits[0] for op in first] == qubits
    assert np.allclose([op.gate.exponent * np.pi for op in first], 2.0 * features[0], atol=1e-5)


def test_in_graph_encoder_matches_numpy_encoding_state(qubits, features):
    encoder = AngleEncoder(qubits, rotations=("rx", "rz"))
    graph_states = tfq.layers.State()(encoder(tf.constant(features))).to_tensor().numpy()
    for state, row in zip(graph_states, features):
        circuit = cirq.Circuit(cirq.rx(np.pi * v)(q) for v, q in zip(row, qubits))
        expected = cirq.final_state_vector(circuit, qubit_order=qubits)
        assert abs(np.vdot(expected, state)) == pytest.approx(1.0, abs=1e-5)


def test_second_rotation_holds_extra_features(qubits):
    encoder = AngleEncoder(qubits, rotations=("ry", "rz"))
    circuit = tfq.from_tensor(encoder(tf.constant([[0.1] * 5])))[0]
    gates = [type(op.gate).__name__ for op in circuit.all_operations()]
    assert gates == ["YPowGate"] * 3 + ["ZPowGate"] * 2  # TFQ serializes rotations as PowGates


def test_too_many_features_is_a_clear_error(qubits):
    with pytest.raises(ValueError, match=r"n_features=4 is larger than this encoder supports: 3 qubits x 1"):
        AngleEncoder(qubits)(tf.zeros([2, 4]))
    with pytest.raises(ValueError, match="n_features=7 is larger"):
        encode(np.zeros((2, 7)), qubits, rotations=("rx", "ry"))


def test_wrong_input_shapes_and_dtypes(qubits):
    with pytest.raises(ValueError, match=r"features must be a 2-D array"):
        encode(np.zeros(3), qubits)
    encoder = AngleEncoder(qubits, n_features=2)
    with pytest.raises(ValueError, match="configured for n_features=2"):
        encoder(tf.zeros([1, 3]))
    with pytest.raises(TypeError, match="expects float features, got a tensor of dtype string"):
        AngleEncoder(qubits)(tf.constant([["a", "b"]]))


@pytest.mark.parametrize("scale, bad, bound", [(np.pi, 5.0, "2"), (1.0, -7.0, "6.283")])
def test_features_beyond_a_full_turn_are_refused_naming_the_range(scale, bad, bound):
    qubits = cirq.GridQubit.rect(1, 2)
    encoder = AngleEncoder(qubits, scale=scale)
    assert encoder(tf.constant([[1.5, -0.2]])).shape == (1,)  # a little beyond [0, 1] is fine
    for call in (encoder, tf.function(encoder)):  # eagerly, and in a graph (where the message is made on failure)
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"(?s)features must lie in \[-{bound}, {bound}\]"
                                                                 rf".*MinMaxScaler.*Largest \|feature\|:'?\W+{abs(bad):g}"):
            call(tf.constant([[bad, 0.2]]))  # 5.0 gave the gate of 1.0 and 3.0


@pytest.mark.parametrize("features, message", [
    ([[0.5, np.nan]], r"features must be finite \(no NaN or inf\)"), ([[-np.inf, 0.5]], "features must be finite"),
    ([[2e38, 0.5]], r"features times scale=3.14159 overflow float32")])
def test_a_graph_names_what_is_wrong_with_the_features(features, message):
    angles = tf.function(AngleEncoder(cirq.GridQubit.rect(1, 2)).angles)
    assert angles(tf.constant([[1.0, 0.5]])).numpy()[0] == pytest.approx([np.pi, np.pi / 2])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        angles(tf.constant(features, tf.float32))
