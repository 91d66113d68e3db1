import os

import cirq
import numpy as np
import pytest
import tensorflow as tf

import qmoe_tfq as qmoe
import tf_keras as keras
from conftest import separable_data
from qmoe_tfq.interpretability import routing_statistics


def test_statistics_on_hand_made_routing():
    gates = np.array([[1.0, 0.0, 0.0],
                      [0.8, 0.2, 0.0],
                      [0.0, 0.5, 0.5],
                      [0.0, 0.0, 1.0]])
    stats = routing_statistics(gates, labels=np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(stats.class_gates, [[0.9, 0.1, 0.0], [0.0, 0.25, 0.75]])
    np.testing.assert_allclose(stats.mean_gates, [0.45, 0.175, 0.375])
    expected_entropy = np.mean([0.0, -(0.8 * np.log(0.8) + 0.2 * np.log(0.2)), np.log(2), 0.0])
    assert stats.entropy == pytest.approx(expected_entropy)
    assert stats.usage_entropy == pytest.approx(-(stats.mean_gates * np.log(stats.mean_gates)).sum())
    # expert 1 gets 0.2 from class 0 and 0.5 from class 1: 5/7 of its weight is class 1's
    np.testing.assert_allclose(stats.specialisation, [1.0, 0.5 / 0.7, 1.0])
    assert stats.top_class.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="labels has 3 entries for 4 samples"):
        routing_statistics(gates, labels=np.array([0, 1, 1]))


def test_heatmap_png(tmp_path):
    path = tmp_path / "heat.png"
    figure = qmoe.plot_gate_heatmap(np.array([[0.9, 0.1], [0.2, 0.8]]), path, class_names=["3", "5"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["3", "5"]
    assert [t.get_text() for t in figure.axes[0].texts] == ["0.90", "0.10", "0.20", "0.80"]


def test_callback_logs_routing_per_epoch(tmp_path):
    x, y = separable_data(32, 2)
    model = qmoe.build_qmoe_classifier(cirq.GridQubit.rect(1, 2), 2, n_features=2, n_experts=3,
                                       expert_layers=1, router_layers=1, top_k=1)
    logger = qmoe.RoutingLogger(x, y, log_dir=tmp_path / "tb")
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[logger])
    assert len(logger.history) == 2
    route = model.get_layer("qmoe").route(x)
    expected = routing_statistics(route.gate_matrix().numpy(), y, route.probabilities.numpy())
    np.testing.assert_allclose(logger.history[-1].class_gates, expected.class_gates, atol=1e-6)
    assert history.history["routing_entropy"][-1] == pytest.approx(expected.entropy, abs=1e-6)
    assert history.history["routing_entropy"][-1] > 0.01  # the router's probabilities, not the one-hot top-1 gates
    mean_gates = [history.history[f"expert_{i}_mean_gate"][-1] for i in range(3)]
    assert sum(mean_gates) == pytest.approx(1.0, abs=1e-5)
    events = [f for f in os.listdir(tmp_path / "tb") if f.startswith("events")]
    assert events and os.path.getsize(tmp_path / "tb" / events[0]) > 1000
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(str(tmp_path / "tb" / events[0]))
            for v in e.summary.value}
    assert {"routing/entropy", "routing/gates", "routing/class_heatmap"} <= tags


def test_callback_runs_the_layers_before_the_qmoe_layer():
    x, y = separable_data(32, 2)
    qubits = cirq.GridQubit.rect(1, 2)
    inputs = keras.Input(shape=(2,))
    features = keras.layers.Dense(2, activation="tanh", name="extractor")(inputs)
    moe = qmoe.QMoELayer(qubits, n_experts=2, expert_layers=1, router_layers=1, top_k=1, name="qmoe")
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(moe(features)))
    model.compile("adam", "sparse_categorical_crossentropy")
    logger = qmoe.RoutingLogger(x, y)
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[logger])
    probabilities = moe.route(model.get_layer("extractor")(x)).probabilities.numpy()
    entropy = -(probabilities * np.log(probabilities)).sum(axis=1).mean()
    assert history.history["routing_entropy"][-1] == pytest.approx(entropy, abs=1e-5)
