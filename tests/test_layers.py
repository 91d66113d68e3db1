import subprocess
import sys
import textwrap

import cirq
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

import qmoe_tfq as qmoe
from conftest import separable_data


def small_moe(qubits, **kwargs):
    kwargs = {"n_experts": 3, "expert_layers": 1, "router_layers": 1, **kwargs}
    return qmoe.QMoELayer(qubits, **kwargs)


def test_output_shape_dtype_and_sublayer_types(qubits, features):
    moe = small_moe(qubits)
    out = moe(qmoe.encode(features, qubits))
    assert out.shape == (len(features), len(qubits)) and out.dtype == tf.float32
    assert all(isinstance(e, tfq.layers.PQC) for e in moe.experts)
    assert isinstance(moe.router, tfq.layers.PQC)
    assert len(moe.experts) == 3 and len(moe.router.symbols) == 2 * len(qubits)


def test_experts_start_from_different_weights(qubits):
    moe = small_moe(qubits)
    weights = [e.parameters.numpy() for e in moe.experts]
    assert not np.allclose(weights[0], weights[1])


def test_output_is_gate_weighted_sum_of_expert_pqcs(qubits, features):
    moe = small_moe(qubits, observables=[cirq.Z(qubits[0]), cirq.X(qubits[1]) * cirq.X(qubits[2])])
    circuits = qmoe.encode(features, qubits)
    gates = moe.gate_weights(circuits).numpy()
    np.testing.assert_allclose(gates.sum(axis=1), 1.0, atol=1e-5)
    expected = sum(gates[:, [i]] * expert(circuits).numpy() for i, expert in enumerate(moe.experts))
    np.testing.assert_allclose(moe(circuits).numpy(), expected, atol=1e-5)


def test_router_logits_are_router_pqc_readouts(qubits, features):
    moe = small_moe(qubits, temperature=0.5)
    circuits = qmoe.encode(features, qubits)
    route = moe.route(circuits)
    expected_logits = moe.logit_scale.numpy() * moe.router(circuits).numpy()
    np.testing.assert_allclose(route.logits.numpy(), expected_logits, atol=1e-5)
    np.testing.assert_allclose(route.probabilities.numpy(), tf.nn.softmax(expected_logits / 0.5).numpy(),
                               atol=1e-5)


@pytest.mark.parametrize("encoder", [None, "angle"])
def test_float_features_match_encoded_circuits(qubits, features, encoder):
    """Features go through the given encoder, or AngleEncoder(qubits) by default."""
    moe = small_moe(qubits, encoder=qmoe.AngleEncoder(qubits) if encoder else None)
    fused = moe(tf.constant(features)).numpy()
    assert isinstance(moe.encoder, qmoe.AngleEncoder)
    on_circuits = small_moe(qubits)
    on_circuits(qmoe.encode(features, qubits))
    on_circuits.set_weights(moe.get_weights())
    np.testing.assert_allclose(fused, on_circuits(qmoe.encode(features, qubits)).numpy(), atol=1e-5)
    with pytest.raises(TypeError, match="takes float features .* got a tensor of dtype string"):
        moe(qmoe.encode(features, qubits))


def test_gradients_reach_every_expert_and_the_router(qubits, features):
    moe = small_moe(qubits)
    circuits = qmoe.encode(features, qubits)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(moe(circuits) - 0.3))
    grads = tape.gradient(loss, moe.trainable_variables)
    names = [v.name for v in moe.trainable_variables]
    assert len(grads) == 3 + 2  # experts, router, logit scale
    for name, grad in zip(names, grads):
        assert grad is not None and np.abs(grad.numpy()).sum() > 0, name


def test_fit_on_separable_problem_beats_chance():
    x, y = separable_data(64, 2)
    qubits = cirq.GridQubit.rect(1, 2)
    model = qmoe.build_qmoe_classifier(qubits, 2, n_features=2, n_experts=2, expert_layers=1,
                                       router_layers=1, learning_rate=0.1)
    model.fit(x, y, epochs=12, batch_size=16, verbose=0)
    x_test, y_test = separable_data(64, 2, seed=1)
    accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    assert accuracy >= 0.8


def test_qnn_baseline_matches_default_qmoe_parameter_count():
    qubits = cirq.GridQubit.rect(1, 2)
    qmoe_model = qmoe.build_qmoe_classifier(qubits, 2, n_features=2)
    qnn_model = qmoe.build_qnn_classifier(qubits, 2, n_features=2)
    circuit_params = lambda m: sum(int(np.prod(v.shape)) for v in m.trainable_variables if "parameters" in v.name)
    assert circuit_params(qmoe_model) == circuit_params(qnn_model)
    assert isinstance(qnn_model.get_layer("qnn"), tfq.layers.PQC)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"n_experts": 0}, ValueError, "n_experts must be a positive integer, got 0"),
    ({"expert_layers": -1}, ValueError, "expert_layers must be a positive integer, got -1"),
    ({"router_layers": 0}, ValueError, "router_layers must be a positive integer, got 0"),
    ({"temperature": 0.0}, ValueError, r"temperature must be a number in \[1e-4, 1e4\].*got 0.0"),
    ({"observables": [cirq.Z(cirq.GridQubit(5, 5))]}, ValueError, r"acts on qubits \['q\(5, 5\)'\]"),
    ({"encoder": "ry"}, TypeError, "encoder must be None, a qmoe_tfq.AngleEncoder or a qmoe_tfq.CircuitEncoder"),
    ({"encoder": qmoe.AngleEncoder([cirq.GridQubit(3, 3)])}, ValueError, "must be among the layer's qubits"),
])
def test_constructor_validation(qubits, kwargs, error, message):
    with pytest.raises(error, match=message):
        small_moe(qubits, **kwargs)


def test_wider_than_the_configured_maximum_is_refused_at_construction():
    from qmoe_tfq.circuits import MAX_QUBITS

    with pytest.raises(ValueError, match=rf"qubits has 40 qubits, more than MAX_QUBITS={MAX_QUBITS} .*"
                                         "QMOE_TFQ_MAX_QUBITS"):
        qmoe.QMoELayer(cirq.GridQubit.rect(1, 40), n_experts=2)  # built, then crashed predict with SIGSEGV


def test_an_encoder_that_starts_with_rz_is_refused():
    # rz on |0> is a phase: every input gave the same output
    with pytest.raises(ValueError, match=r"rotations=\('rz',\) starts with 'rz'.*start with 'rx' or 'ry'"):
        qmoe.AngleEncoder(cirq.GridQubit.rect(1, 2), rotations=("rz",))


def test_empty_and_duplicate_qubits_are_refused():
    with pytest.raises(ValueError, match="qubits is empty"):
        qmoe.QMoELayer([])
    q = cirq.GridQubit(0, 0)
    with pytest.raises(ValueError, match=r"duplicate qubits \['q\(0, 0\)'\]"):
        qmoe.QMoELayer([q, q])


def test_wrong_inputs_are_clear_errors(qubits, features):
    moe = small_moe(qubits)
    moe(qmoe.encode(features, qubits))
    with pytest.raises(TypeError, match="was built for serialized circuits <string>\\[batch\\], got a tensor of dtype float32"):
        moe(tf.constant(features))
    with pytest.raises(ValueError, match=r"expects circuits of shape \[batch\] or \[batch, 1\]"):
        moe(tf.fill([2, 2], tfq.convert_to_tensor([cirq.Circuit()])[0]))
    encoded = small_moe(qubits, encoder=qmoe.AngleEncoder(qubits, n_features=3))
    with pytest.raises(ValueError, match=r"configured for n_features=3 but got inputs of shape \(6, 2\)"):
        encoded(tf.constant(features[:, :2]))
    encoded(tf.constant(features))
    with pytest.raises(ValueError, match=r"expects float features of shape \[batch, 3\], got \(6, 2\)"):
        encoded(tf.constant(features[:, :2]))
    with pytest.raises(TypeError, match="got a tensor of dtype bool"):
        encoded(tf.zeros([2, 3], tf.bool))


def test_import_after_keras3_is_a_clear_error():
    script = textwrap.dedent("""
        import os
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
        import tensorflow as tf
        tf.keras.layers  # loads Keras 3
        try:
            import qmoe_tfq
        except ImportError as error:
            print(error)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "tensorflow.keras was already loaded as Keras 3" in out.stdout, out.stderr[-2000:]
