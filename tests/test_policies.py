"""MoE policies: expert choice, shared experts, loss-free (bias) balancing, router health metrics."""
import dataclasses
import warnings

import cirq
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import qmoe_tfq as qmoe
from configurations import settings_config
from conftest import RowCounter
from qmoe_tfq import routing, routing_terms
from qmoe_tfq.gating import RouterHealth

QUBITS = cirq.GridQubit.rect(1, 3)
SMALL = {"expert_layers": 1, "router_layers": 1}


def test_expert_choice_takes_exactly_capacity_rows_and_simulates_only_those(features):
    counter = RowCounter()
    moe = qmoe.QMoELayer(QUBITS, 3, routing="expert_choice", backend=counter, **SMALL)
    circuits = qmoe.encode(features, QUBITS)
    out = moe(circuits).numpy()
    route = moe.route(circuits)
    kept, probabilities = route.kept.numpy(), route.probabilities.numpy()
    capacity = int(np.ceil(2 * len(features) / 3))  # the default capacity_factor 2, k = 1
    assert kept.sum(axis=0).tolist() == [capacity] * 3 and counter.rows[:2] == [len(features), 3 * capacity]
    for expert in range(3):  # each expert took the samples it scores highest
        assert set(np.flatnonzero(kept[:, expert])) == set(np.argsort(-probabilities[:, expert])[:capacity])
    gates = route.gate_matrix().numpy()
    np.testing.assert_allclose(gates, probabilities * kept, atol=1e-6)
    expected = sum(gates[:, [e]] * expert(circuits).numpy() for e, expert in enumerate(moe.experts))
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("shared", [1, "classical"])
def test_shared_experts_join_every_sample_with_their_own_weights(features, shared):
    counter = RowCounter()
    kwargs = {"shared_experts": 1} if shared == 1 else {
        "shared_experts": [qmoe.hybrid.ClassicalExpert(3, name="always")], "encoder": qmoe.AngleEncoder(QUBITS)}
    moe = qmoe.QMoELayer(QUBITS, 3, top_k=1, backend=counter, **SMALL, **kwargs)
    inputs = tf.constant(features) if shared == "classical" else qmoe.encode(features, QUBITS)
    out = moe(inputs).numpy()
    (shared_expert,) = moe.shared_experts
    shared_out = shared_expert(tf.constant(features) if shared == "classical" else inputs).numpy()
    circuits = qmoe.encode(features, QUBITS)
    gates = moe.gate_weights(inputs).numpy()
    routed = sum(gates[:, [e]] * expert(circuits).numpy() for e, expert in enumerate(moe.experts))
    np.testing.assert_allclose(out, routed + shared_out, atol=1e-5)
    assert counter.rows[1] == len(features) * (2 if shared == 1 else 1)  # routed + shared rows in one call
    assert all(id(v) not in {id(w) for e in moe.experts for w in e.weights} for v in shared_expert.weights)


def test_bias_moves_towards_the_under_used_expert_and_gets_no_gradient():
    router = keras.layers.Dense(2, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant([2.0, 0.0]))
    moe = qmoe.QMoELayer(QUBITS, experts=[qmoe.hybrid.ClassicalExpert(3), qmoe.hybrid.ClassicalExpert(3)],
                         router=router, top_k=1, balance="bias", bias_rate=0.1)
    x = tf.random.uniform([8, 3])
    moe.build(x.shape)
    with tf.GradientTape() as tape:
        tape.watch(moe.gate.expert_bias)
        loss = tf.reduce_sum(moe(x, training=True))
    # every sample chose expert 0: fractions [1, 0], mean 0.5, so the bias moves by -0.1 / +0.1
    np.testing.assert_allclose(moe.gate.expert_bias.numpy(), [-0.1, 0.1], atol=1e-7)
    assert tape.gradient(loss, moe.gate.expert_bias) is None
    assert all(v is not moe.gate.expert_bias for v in moe.trainable_variables)
    moe(x, training=False)
    np.testing.assert_allclose(moe.gate.expert_bias.numpy(), [-0.1, 0.1], atol=1e-7)  # inference leaves it
    # selection follows logits + bias ([2, 0] + [-1.5, 1.5]); weights stay the (renormalised) probabilities
    moe.gate.expert_bias.assign([-1.5, 1.5])
    route = moe.route(x)
    assert (route.expert_index.numpy() == 1).all()
    np.testing.assert_allclose(route.combine_weights.numpy(), 1.0, atol=1e-6)
    moe.gate.expert_bias.assign([-0.9, 0.9])  # 1.1 > 0.9: expert 0 again
    assert (moe.route(x).expert_index.numpy() == 0).all()


def test_summary_terms_on_a_hand_made_routing():
    probabilities = tf.constant([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.9, 0.1]])
    expert_index = tf.constant([[0], [0], [1], [0]])
    kept = tf.constant([[True], [True], [False], [True]])
    route = routing.Routing(tf.math.log(probabilities), probabilities, expert_index, probabilities[:, :1], kept)
    terms = routing_terms.measure(route, routing.RoutingPolicy(2, top_k=1))
    entropy = -np.mean([sum(p * np.log(p) for p in row) for row in probabilities.numpy()])
    assert terms.usage.numpy().tolist() == [3.0, 0.0] and terms.fractions.numpy().tolist() == [1.0, 0.0]
    assert float(terms.entropy) == pytest.approx(entropy, rel=1e-5)
    assert float(terms.confidence) == pytest.approx(0.75) and float(terms.dropped) == pytest.approx(0.25)
    policy = routing.RoutingPolicy(2, routing="expert_choice", capacity_factor=1.0)
    chosen = routing.expert_choice(route.logits, probabilities, policy)
    # capacity 2 each: expert 0 takes samples 3 and 0, expert 1 samples 2 and 1; nobody is left out
    assert chosen.kept.numpy().tolist() == [[True, False], [False, True], [False, True], [True, False]]
    assert float(routing_terms.measure(chosen, policy).dropped) == 0.0


def test_fit_logs_the_summary_and_no_metric_for_zero_weight_losses():
    x = np.random.default_rng(0).uniform(0, 1, size=(16, 3)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int32)
    for metrics, z_loss_weight in (("summary", 0.0), ("per_expert", 1e-3)):
        model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=3, n_experts=3, top_k=1, metrics=metrics,
                                           z_loss_weight=z_loss_weight, **SMALL)
        logs = model.fit(x, y, epochs=1, batch_size=8, verbose=0).history
        names = {name for name in logs if name.startswith("qmoe_")}
        summary = {"qmoe_load_balance", "qmoe_routing_entropy", "qmoe_router_confidence", "qmoe_dropped_fraction",
                   "qmoe_unused_experts"}
        extra = {"qmoe_z_loss"} | {f"qmoe_expert_{i}_fraction" for i in range(3)} if metrics == "per_expert" else set()
        assert names == summary | extra
        assert 0 <= logs["qmoe_unused_experts"][0] <= 2 and 0 < logs["qmoe_router_confidence"][0] <= 1


def test_router_metrics_can_be_turned_off_and_the_aux_losses_still_train():
    x = np.random.default_rng(0).uniform(0, 1, size=(16, 3)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int32)
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=3, n_experts=3, top_k=1, metrics="none", **SMALL)
    logs = model.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    assert sorted(logs) == ["accuracy", "loss"]
    assert len(model.get_layer("qmoe").losses) == 2  # load balance and z-loss


def health(gate: qmoe.gating.Gate, n_experts: int = 3) -> RouterHealth:
    """The health metric of `gate`'s policy bound to `n_experts`, for a layer named "moe"."""
    return RouterHealth(dataclasses.replace(gate.policy, n_experts=n_experts), "moe")


def terms(usage: list[float], entropy: float = 0.5) -> routing_terms.RoutingTerms:
    usage = tf.constant(usage)  # <float32>[E]
    scalar = lambda value: tf.constant(value, tf.float32)  # noqa: E731
    return routing_terms.RoutingTerms(load_balance=scalar(1.0), z_loss=scalar(0.25), usage=usage,
                                      fractions=usage / tf.reduce_sum(usage), entropy=scalar(entropy),
                                      confidence=scalar(0.75), dropped=scalar(0.0), information=scalar(0.5))


def test_router_health_logs_each_term_as_its_mean_over_steps():
    metric = health(qmoe.TopK(1, information_weight=0.1, metrics="per_expert"), n_experts=2)
    metric.update_state(terms([3.0, 1.0], entropy=0.2), training=True)
    metric.update_state(terms([1.0, 1.0], entropy=0.6), training=True)
    result = {name: round(float(value), 6) for name, value in metric.result().items()}
    assert result == {"moe_expert_0_fraction": 0.625, "moe_expert_1_fraction": 0.375, "moe_load_balance": 1.0,
                      "moe_z_loss": 0.25, "moe_routing_information": 0.5, "moe_routing_entropy": 0.4,
                      "moe_router_confidence": 0.75, "moe_dropped_fraction": 0.0, "moe_unused_experts": 0.0}
    metric.reset_state()
    assert float(metric.result()["moe_routing_entropy"]) == 0.0 and float(metric.result()["moe_unused_experts"]) == 2
    summary = health(qmoe.DenseGate(z_loss_weight=0.0)).result()  # only the terms the policy uses
    assert sorted(summary) == ["moe_dropped_fraction", "moe_load_balance", "moe_router_confidence",
                               "moe_routing_entropy", "moe_unused_experts"]


def test_an_expert_unused_for_a_training_epoch_warns_once():
    usage = health(qmoe.TopK(1))
    usage.update_state(terms([2.0, 0.0, 1.0]))  # inference (validation, evaluate): counted, no warning
    assert float(usage.result()["moe_unused_experts"]) == 1.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usage.reset_state()
    assert caught == []
    usage.update_state(terms([2.0, 0.0, 1.0]), training=True)
    with pytest.warns(RuntimeWarning, match=r"moe: experts \[1\] received no sample in the last training epoch"):
        usage.reset_state()
    usage.update_state(terms([0.0, 0.0, 1.0]), training=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usage.reset_state()  # once per layer
    assert caught == [] and float(usage.result()["moe_unused_experts"]) == 3.0


def test_evaluate_does_not_warn_of_unused_experts_and_fit_does_once():
    always_first = keras.layers.Dense(3, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(
        [5.0, 0.0, -5.0]))  # a classical router that sends every sample to expert 0
    inputs = keras.Input(shape=(2,))
    moe = qmoe.QMoELayer(QUBITS, experts=[keras.layers.Dense(3) for _ in range(3)], router=always_first, top_k=1,
                         name="moe")
    model = keras.Model(inputs, moe(inputs))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x, y = np.zeros((8, 2), np.float32), np.zeros((8, 3), np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.evaluate(x, y, verbose=0)
        model.evaluate(x, y, verbose=0)  # resets after an inference stretch
    assert [str(w.message) for w in caught] == []
    with pytest.warns(RuntimeWarning, match=r"moe: experts \[1, 2\] received no sample in the last training "):
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)


def test_dense_routing_does_not_warn_of_unused_experts():
    # every expert runs on every sample; "unused" only means never the top choice
    usage = health(qmoe.DenseGate())
    usage.update_state(terms([2.0, 0.0, 1.0]), training=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usage.reset_state()
    assert caught == []


def test_version_2_policies_load_as_they_were_or_are_refused():
    config = settings_config(2, routing="expert_choice", capacity_factor=None, **SMALL)
    assert qmoe.QMoELayer.from_config(config).gate.policy.capacity_factor == 1.0  # version 2's default
    config = settings_config(2, top_k=1, balance="bias", **SMALL)
    with pytest.raises(ValueError, match="format version 2 with balance='bias'.*adds it to the logits"):
        qmoe.QMoELayer.from_config(config)


@pytest.mark.parametrize("kwargs, message", [
    ({"routing": "random"}, r"routing='random' is not allowed; use one of \('top_k', 'expert_choice'\)"),
    ({"balance": "loss"}, r"balance='loss' is not allowed"),
    ({"metrics": "all"}, r"metrics='all' is not allowed; use one of \('summary', 'per_expert', 'none'\)"),
    ({"routing": "expert_choice", "balance": "bias"}, "balanced by construction"),
    ({"bias_rate": -1}, r"bias_rate must be a number in \[0, 10\] \(logit units per step\), got -1"),
    ({"shared_experts": -1}, r"shared_experts must be a count >= 0 or a list of experts, got -1"),
])
def test_policy_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        qmoe.QMoELayer(QUBITS, 3, **kwargs)
