"""Hybrid mixtures: classical experts and routers beside the quantum ones."""
import cirq
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import qmoe_tfq as qmoe
from conftest import RowCounter, separable_data
from qmoe_tfq.hybrid import ClassicalExpert

QUBITS = cirq.GridQubit.rect(1, 2)


@pytest.mark.parametrize("expert_kind", ["quantum", "classical", (2, 1)])
@pytest.mark.parametrize("router_kind", ["quantum", "classical"])
def test_every_combination_trains_with_gradients_everywhere(expert_kind, router_kind):
    x, y = separable_data(32, 2)
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, n_experts=3, expert_layers=1, router_layers=1,
                                       expert_kind=expert_kind, router_kind=router_kind, learning_rate=0.1)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    for variable, grad in zip(model.trainable_variables, grads):
        assert grad is not None and np.abs(tf.convert_to_tensor(grad).numpy()).sum() > 0, variable.name
    before = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.fit(x, y, epochs=4, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0, return_dict=True)["loss"] < before


class CountingExpert(ClassicalExpert):
    """Records how many samples each call receives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def call(self, features):
        self.seen.append(int(tf.shape(features)[0]))
        return super().call(features)


def test_top_k_evaluates_only_selected_experts_of_both_kinds(features):
    x = tf.constant(features[:, :2])
    classical = [CountingExpert(2, 4, name=f"c{i}") for i in range(2)]
    counter = RowCounter()
    moe = qmoe.QMoELayer(QUBITS, experts=["quantum", "quantum", *classical], expert_layers=1, router_layers=1,
                         top_k=1, encoder=qmoe.AngleEncoder(QUBITS), router=keras.layers.Dense(4), backend=counter)
    moe.build(x.shape)
    for expert in classical:
        expert.seen = []
    moe(x)
    rows = counter.rows  # the classical router runs no circuit
    chosen = moe.route(x).expert_index.numpy()[:, 0]
    assert [e.seen for e in classical] == [[int((chosen == 2).sum())], [int((chosen == 3).sum())]]
    assert rows == [int((chosen < 2).sum())]
    assert sum(rows) + sum(sum(e.seen) for e in classical) == len(x)  # each sample runs one expert


def test_all_classical_mixture_needs_no_encoder_or_quantum_parts(features):
    moe = qmoe.QMoELayer(QUBITS, experts=[ClassicalExpert(2), ClassicalExpert(2)], router=keras.layers.Dense(2),
                         top_k=1)
    out = moe(tf.constant(features[:, :3]))
    assert out.shape == (6, 2)
    gates = moe.gate_weights(features[:, :3]).numpy()
    assert ((gates > 0).sum(axis=1) == 1).all()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"experts": []}, ValueError, "experts is empty"),
    ({"experts": ["quantum", 42]}, TypeError, r"experts\[1\] = 42 is not an expert: use 'quantum'"),
    ({"experts": ["quantum", "quantum"], "n_experts": 3}, ValueError, "n_experts=3 but experts has 2 entries"),
    ({"router": "dense"}, TypeError, "router must be None, a qmoe_tfq.QuantumRouter, .* or a tf_keras layer, got 'dense'"),
])
def test_constructor_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        qmoe.QMoELayer(QUBITS, **kwargs)
    shared = ClassicalExpert(2)
    with pytest.raises(ValueError, match="the same layer object twice"):
        qmoe.QMoELayer(QUBITS, experts=[shared, shared])


def test_widths_and_inputs_are_checked_when_built(features):
    x = tf.constant(features[:, :2])
    wide = qmoe.QMoELayer(QUBITS, experts=["quantum", keras.layers.Dense(3, name="wide")],
                          encoder=qmoe.AngleEncoder(QUBITS))
    with pytest.raises(ValueError, match=r"experts\[1\] \(wide\) outputs 3 values per sample, but every expert "
                                         r"must output len\(observables\) = 2"):
        wide(x)
    narrow = qmoe.QMoELayer(QUBITS, 3, encoder=qmoe.AngleEncoder(QUBITS), router=keras.layers.Dense(2, name="r"))
    with pytest.raises(ValueError, match=r"router \(r\) outputs 2 logits per sample, but the layer has n_experts = 3"):
        narrow(x)
    mixed = qmoe.QMoELayer(QUBITS, experts=["quantum", ClassicalExpert(2, name="mlp")])
    inputs = keras.Input(shape=(), dtype=tf.string)
    with pytest.raises(ValueError, match=r"takes float features \[batch, n_features\] \(experts\[1\] \(mlp\) are "
                                         r"classical\), got inputs of shape \(None,\)"):
        mixed(inputs)


def test_builder_kind_validation():
    with pytest.raises(ValueError, match="expert_kind='hybrid' is not allowed"):
        qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, expert_kind="hybrid")
    with pytest.raises(ValueError, match="router_kind='mlp' is not allowed"):
        qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, router_kind="mlp")
    with pytest.raises(ValueError, match="classical experts or routers read float features: give n_features"):
        qmoe.build_qmoe_classifier(QUBITS, 2, router_kind="classical")
