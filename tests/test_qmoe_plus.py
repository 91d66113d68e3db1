"""QMoE+ options: data re-uploading experts and coherent aggregation."""
import cirq
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import qmoe_tfq as qmoe
from configurations import settings_config
from conftest import separable_data

QUBITS = cirq.GridQubit.rect(1, 2)


def reuploading_layer(**kwargs):
    return qmoe.QMoELayer(QUBITS, 3, expert_layers=2, router_layers=1, encoder=qmoe.AngleEncoder(QUBITS), reuploading=True, **kwargs)


def test_reuploading_output_weights_and_gradients(features):
    x = tf.constant(features[:, :2])
    moe = reuploading_layer(top_k=2)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(moe(x) - 0.5))
    assert moe(x).shape == (6, 2)
    assert moe.input_scaling.shape == (3, 2, 2)
    np.testing.assert_allclose(moe.input_scaling.numpy(), 1.0)
    grads = dict(zip([v.name for v in moe.trainable_variables], tape.gradient(loss, moe.trainable_variables)))
    scaling_grad = grads[moe.input_scaling.name]
    assert np.abs(tf.convert_to_tensor(scaling_grad).numpy()).sum() > 0
    assert np.abs(grads[moe.router.parameters.name].numpy()).sum() > 0


def test_one_layer_reuploading_equals_plain_encoding(features):
    x = tf.constant(features[:, :2])
    plain = qmoe.QMoELayer(QUBITS, 3, expert_layers=1, router_layers=1, encoder=qmoe.AngleEncoder(QUBITS))
    reup = qmoe.QMoELayer(QUBITS, 3, expert_layers=1, router_layers=1, encoder=qmoe.AngleEncoder(QUBITS), reuploading=True)
    plain(x), reup(x)
    for a, b in zip(plain.experts + [plain.router], reup.experts + [reup.router]):
        b.set_weights(a.get_weights())
    reup.logit_scale.assign(plain.logit_scale)
    np.testing.assert_allclose(reup(x).numpy(), plain(x).numpy(), atol=1e-5)
    reup.input_scaling.assign(2.0 * tf.ones_like(reup.input_scaling))  # scaling changes the experts' angles
    assert not np.allclose(reup(x).numpy(), plain(x).numpy(), atol=1e-3)


def test_reuploading_saves_and_trains(tmp_path):
    x, y = separable_data(48, 2)
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, n_experts=2, expert_layers=2,
                                       router_layers=1, reuploading=True, learning_rate=0.1)
    model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"] >= 0.8
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert reloaded.get_layer("qmoe").reuploading
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_reuploading_needs_float_features(features):
    with pytest.raises(ValueError, match="reuploading=True re-encodes float features"):
        qmoe.QMoELayer(QUBITS, 2, reuploading=True)
    moe = reuploading_layer()
    moe(tf.constant(features[:, :2]))
    with pytest.raises(TypeError, match=r"takes float features \[batch, n_features\] \(it encodes them with angle_encoder.*\), got a tensor "
                                        "of dtype string"):
        moe(qmoe.encode(features[:, :2], QUBITS))


def coherent_layer(n_experts=4, **kwargs):
    return qmoe.CoherentQMoELayer(QUBITS, n_experts, 1, 2, encoder=qmoe.AngleEncoder(QUBITS), **kwargs)


@pytest.mark.parametrize("n_experts", [2, 4])
def test_coherent_output_is_born_weighted_mixture_of_experts(features, n_experts):
    x = features[:, :2]
    moe = coherent_layer(n_experts)
    out = moe(tf.constant(x)).numpy()
    assert out.shape == (6, 2) and len(moe.register) == n_experts.bit_length() - 1
    gates = moe.gate_weights(x).numpy()
    np.testing.assert_allclose(gates.sum(axis=1), 1.0, atol=1e-5)
    assert gates.std(axis=0).max() > 1e-3  # the register's state depends on the input
    circuits = qmoe.encode(x, QUBITS)
    mixture = sum(gates[:, [e]] * expert(circuits).numpy() for e, expert in enumerate(moe.experts))
    np.testing.assert_allclose(out, mixture, atol=1e-4)


def test_coherent_gradients_save_and_train(tmp_path):
    x, y = separable_data(48, 2)
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, n_experts=2, expert_layers=1,
                                       router_layers=1, aggregation="coherent", learning_rate=0.1)
    moe = model.get_layer("qmoe")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x)[:, 0])  # not the full softmax sum, which is constant
    for variable, grad in zip(moe.trainable_variables, tape.gradient(loss, moe.trainable_variables)):
        assert grad is not None and np.abs(grad.numpy()).sum() > 0, variable.name
    model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"] >= 0.8
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.get_layer("qmoe"), qmoe.CoherentQMoELayer)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_coherent_validation():
    with pytest.raises(ValueError, match="n_experts must be a power of two >= 2, got 3"):
        qmoe.CoherentQMoELayer(QUBITS, 3, encoder=qmoe.AngleEncoder(QUBITS))
    with pytest.raises(ValueError, match="uploads float features into the router register"):
        qmoe.CoherentQMoELayer(QUBITS, 2)
    with pytest.raises(ValueError, match="aggregation='quantum' is not allowed"):
        qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, aggregation="quantum")
    with pytest.raises(ValueError, match="aggregation='coherent' mixes every built-in quantum expert .* no top_k"):
        qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, n_experts=2, top_k=1, aggregation="coherent")


def test_an_older_coherent_qmoe_config_loads_as_the_coherent_layer(features):
    """Formats 1-3 kept coherent aggregation as a mode of QMoELayer."""
    layer = coherent_layer(2)
    expected = layer(tf.constant(features[:, :2])).numpy()
    config = settings_config(3, QUBITS, aggregation="coherent", n_experts=2, expert_layers=1, router_layers=2,
                             encoder=keras.layers.serialize(layer.encoder), top_k=None, temperature=1.0,
                             z_loss_weight=1e-3, router_observables=None, rotations=["ry", "rz"],
                             entangler="cnot_ring", entangle_first=True, backend="auto")
    clone = qmoe.QMoELayer.from_config(config)
    assert isinstance(clone, qmoe.CoherentQMoELayer)
    clone(tf.constant(features[:, :2]))
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(tf.constant(features[:, :2])).numpy(), expected, atol=1e-5)
