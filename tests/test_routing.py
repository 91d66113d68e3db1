import cirq
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import qmoe_tfq as qmoe
from conftest import RowCounter
from qmoe_tfq import dispatch, routing, routing_terms

LOGITS = tf.constant([[2.0, 1.0, 0.0, -1.0],
                      [0.0, 3.0, 1.0, 0.5],
                      [1.0, 1.0, 4.0, 0.0]])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_masks_have_k_nonzeros_summing_to_one(k):
    probabilities = tf.nn.softmax(LOGITS)
    expert_index, weights = routing.select_experts(probabilities, k)
    gates = routing.Routing(LOGITS, probabilities, expert_index, weights,
                            tf.ones_like(expert_index, tf.bool)).gate_matrix().numpy()
    assert ((gates > 0).sum(axis=1) == k).all()
    np.testing.assert_allclose(gates.sum(axis=1), 1.0, atol=1e-6)
    assert gates[0].argmax() == 0 and gates[1].argmax() == 1 and gates[2].argmax() == 2


def test_capacity_keeps_first_choices_first():
    # First choices are placed before second choices, each in batch order, capacity 2:
    # expert 0 takes samples 0 and 1 (sample 2's first choice overflows), expert 1 takes sample 3's
    # first choice and sample 0's second, so sample 2's second choice (expert 1) overflows too.
    expert_index = tf.constant([[0, 1], [0, 2], [0, 1], [1, 0]])
    kept = routing.capacity_mask(expert_index, n_experts=3, capacity=tf.constant(2)).numpy()
    assert kept.tolist() == [[True, True], [True, True], [False, False], [True, False]]
    assert int(routing.expert_capacity(tf.constant(6), 1, 4, 1.0)) == 2  # ceil(6 / 4)


def test_aux_losses_on_hand_made_routing():
    probabilities = tf.constant([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.9, 0.1]])
    expert_index = tf.constant([[0], [0], [1], [0]])
    usage = routing_terms.expert_usage(expert_index, 2, tf.ones_like(expert_index, tf.bool))
    assert usage.numpy().tolist() == [3.0, 1.0]
    # fractions [0.75, 0.25], mean probabilities [0.6, 0.4]: 2 * (0.45 + 0.1) = 1.1
    assert float(routing_terms.load_balancing_loss(probabilities, usage / 4.0)) == pytest.approx(1.1)
    logits = tf.constant([[0.0, 0.0], [1.0, -1.0]])
    expected = np.mean([np.log(2.0) ** 2, np.log(np.e + np.exp(-1)) ** 2])
    assert float(routing_terms.router_z_loss(logits)) == pytest.approx(expected, rel=1e-5)


def test_routing_information_on_hand_made_gates():
    sure_and_even = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    same_gates = tf.constant([[0.7, 0.3], [0.7, 0.3]])
    assert float(routing_terms.routing_information(sure_and_even)) == pytest.approx(1.0, abs=1e-6)
    assert float(routing_terms.routing_information(same_gates)) == pytest.approx(0.0, abs=1e-6)
    # H(mean) = H(0.5, 0.5) = log 2; mean H = H(0.9, 0.1); as a share of log 2
    half_sure = tf.constant([[0.9, 0.1], [0.1, 0.9]])
    expected = 1.0 + (0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2.0)
    assert float(routing_terms.routing_information(half_sure)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("make", [lambda w: qmoe.TopK(1, information_weight=w, load_balance_weight=0, z_loss_weight=0),
                                  lambda w: qmoe.DenseGate(information_weight=w, load_balance_weight=0, z_loss_weight=0),
                                  lambda w: qmoe.ExpertChoice(1, information_weight=w, z_loss_weight=0)])
def test_information_weight_adds_its_loss_and_metric(make):
    gate = make(0.5)
    route = gate(LOGITS, training=True)
    information = float(routing_terms.routing_information(route.probabilities))
    assert 0.0 < information < 1.0
    np.testing.assert_allclose([float(v) for v in gate.losses], [0.5 * (1.0 - information)], rtol=1e-5)
    assert float(gate.health.result()[f"{gate.name}_routing_information"]) == pytest.approx(information, rel=1e-5)
    copy = gate.__class__.from_config(gate.get_config())
    assert copy.policy.information_weight == 0.5
    silent = make(0.0)
    silent(LOGITS, training=True)
    assert silent.losses == [] and f"{silent.name}_routing_information" not in silent.health.result()


def test_information_weight_is_validated():
    with pytest.raises(ValueError, match=r"information_weight must be a number in \[0, 1000\], got -0.5"):
        qmoe.TopK(1, information_weight=-0.5)


@pytest.mark.filterwarnings("ignore:.*received no sample in the last training epoch:RuntimeWarning")  # a tiny model
def test_layer_adds_weighted_aux_losses_and_metrics(qubits, features):
    moe = qmoe.QMoELayer(qubits, n_experts=3, expert_layers=1, router_layers=1, top_k=1,
                         load_balance_weight=0.5, z_loss_weight=0.25, name="moe")
    circuits = qmoe.encode(features, qubits)
    inputs = keras.Input(shape=(), dtype=tf.string)
    model = keras.Model(inputs, moe(inputs))
    model(circuits)
    route = moe.route(circuits)
    fractions = np.bincount(route.expert_index.numpy()[:, 0], minlength=3) / len(features)
    balance = routing_terms.load_balancing_loss(route.probabilities, tf.constant(fractions, tf.float32))
    z_loss = routing_terms.router_z_loss(route.logits)
    np.testing.assert_allclose([float(v) for v in model.losses],
                               [0.5 * float(balance), 0.25 * float(z_loss)], rtol=1e-5)
    model.compile("adam", "mse")
    logs = model.evaluate(circuits, np.zeros((len(features), 3)), verbose=0, return_dict=True)
    assert logs["moe_load_balance"] == pytest.approx(float(balance), rel=1e-4)
    assert "moe_expert_0_fraction" not in logs  # metrics="summary" (the default)


def test_zero_weights_turn_aux_losses_off(qubits, features):
    moe = qmoe.QMoELayer(qubits, n_experts=2, expert_layers=1, router_layers=1,
                         load_balance_weight=0, z_loss_weight=0)
    moe(qmoe.encode(features, qubits))
    assert moe.losses == []


@pytest.mark.parametrize("top_k", [1, 2])
def test_only_routed_experts_are_simulated(qubits, features, top_k):
    counter = RowCounter()
    moe = qmoe.QMoELayer(qubits, n_experts=4, expert_layers=1, router_layers=1, top_k=top_k, backend=counter)
    circuits = qmoe.encode(features, qubits)
    moe(circuits)
    # router: one row per sample; experts: one op call, k rows per sample, not 4
    assert counter.rows == [len(features), len(features) * top_k]
    chosen = moe.route(circuits).expert_index.numpy().reshape(-1)
    stacked = np.stack([e.parameters.numpy() for e in moe.experts])
    np.testing.assert_allclose(counter.values[1], stacked[chosen])


def test_capacity_drops_overflow_rows(qubits, features):
    counter = RowCounter()
    moe = qmoe.QMoELayer(qubits, n_experts=3, expert_layers=1, router_layers=1, top_k=1,
                         capacity_factor=0.5, backend=counter)
    circuits = qmoe.encode(features, qubits)
    out = moe(circuits).numpy()
    route = moe.route(circuits)
    capacity = int(np.ceil(0.5 * len(features) / 3))
    counts = np.bincount(route.expert_index.numpy()[route.kept.numpy()], minlength=3)
    assert counts.max() <= capacity and counter.rows[1] == int(route.kept.numpy().sum())
    dropped = ~route.kept.numpy()[:, 0]
    np.testing.assert_allclose(out[dropped], 0.0)


def test_dense_equals_top_k_all_experts(qubits, features):
    circuits = qmoe.encode(features, qubits)
    dense = qmoe.QMoELayer(qubits, n_experts=3, expert_layers=1, router_layers=1)
    full = qmoe.QMoELayer(qubits, n_experts=3, expert_layers=1, router_layers=1, top_k=3)
    dense(circuits), full(circuits)
    full.set_weights(dense.get_weights())
    np.testing.assert_allclose(dense(circuits).numpy(), full(circuits).numpy(), atol=1e-5)


def test_top_k_gradients_reach_router_and_selected_experts_only(qubits, features):
    moe = qmoe.QMoELayer(qubits, n_experts=4, expert_layers=1, router_layers=1, top_k=1,
                         load_balance_weight=0, z_loss_weight=0)
    circuits = qmoe.encode(features[:2], qubits)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(moe(circuits) - 0.5))
    chosen = set(moe.route(circuits).expert_index.numpy().reshape(-1))
    grads = dict(zip([id(v) for v in moe.trainable_variables],
                     tape.gradient(loss, moe.trainable_variables)))
    assert np.abs(grads[id(moe.router.parameters)].numpy()).sum() > 0
    for index, expert in enumerate(moe.experts):
        grad = grads[id(expert.parameters)]
        touched = grad is not None and np.abs(tf.convert_to_tensor(grad).numpy()).sum() > 0
        assert touched == (index in chosen), index


def test_router_noise_only_in_training(qubits, features):
    moe = qmoe.QMoELayer(qubits, n_experts=3, expert_layers=1, router_layers=1, router_noise=1.0)
    circuits = qmoe.encode(features, qubits)
    clean = moe.route(circuits).logits.numpy()
    np.testing.assert_allclose(moe.route(circuits, training=False).logits.numpy(), clean)
    assert not np.allclose(moe.route(circuits, training=True).logits.numpy(), clean)


@pytest.mark.parametrize("kwargs, message", [
    ({"top_k": 0}, r"top_k must be None \(dense\) or a positive integer, got 0"),
    ({"top_k": 4}, "top_k=4 is more than n_experts=3"),
    ({"load_balance_weight": -0.1}, r"load_balance_weight must be a number in \[0, 1000\], got -0.1"),
    ({"z_loss_weight": -1}, r"z_loss_weight must be a number in \[0, 1000\], got -1"),
    ({"router_noise": -1.0}, r"router_noise must be a number in \[0, 1000\]"),
    ({"capacity_factor": 0}, r"capacity_factor must be None \(no limit\) or a number in \(0, 1000\]"),
    # finite in Python, not in float32: these gave NaN or all-zero outputs
    ({"temperature": 1e-50}, r"temperature must be a number in \[1e-4, 1e4\].*got 1e-50"),
    ({"capacity_factor": 1e300}, r"capacity_factor must be None.*got 1e\+300"),
    ({"router_noise": 1e300}, r"router_noise must be a number in \[0, 1000\], got 1e\+300"),
    ({"bias_rate": 1e300, "balance": "bias", "top_k": 1}, r"bias_rate must be a number in \[0, 10\].*got 1e\+300"),
])
def test_routing_validation(qubits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        qmoe.QMoELayer(qubits, n_experts=3, **kwargs)


def test_an_empty_batch_gives_zero_terms_not_nan():
    """A replica of a distributed step can get no sample; its loss and metrics must stay finite."""
    policy = routing.RoutingPolicy(3, top_k=1, capacity_factor=1.0)
    terms = routing_terms.measure(routing.gate(tf.zeros([0, 3]), policy, training=True), policy)
    assert all(np.isfinite(value.numpy()).all() for value in terms)


def test_a_model_trains_on_an_empty_batch_without_nan():
    qubits = cirq.GridQubit.rect(1, 2)
    model = qmoe.build_qmoe_classifier(qubits, 2, n_features=2, n_experts=2, top_k=1)
    logs = model.train_on_batch(np.zeros((0, 2), np.float32), np.zeros((0,), np.int32), return_dict=True)
    assert all(np.isfinite(value) for value in logs.values()), logs
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_unnamed_layers_are_called_qmoe_and_so_are_their_metrics(qubits, features):
    first, second = qmoe.QMoELayer(qubits, 2, expert_layers=1, router_layers=1), qmoe.QMoELayer(qubits, 2, expert_layers=1, router_layers=1)
    number = {first.name: 0, second.name: 0} | {n: int(n.split("_")[1]) for n in (first.name, second.name) if "_" in n}
    assert first.name.startswith("qmoe") and number[second.name] == number[first.name] + 1  # qmoe, qmoe_1 ...
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, first(inputs))
    model.compile("adam", "mse")
    logs = model.train_on_batch(features, np.zeros((len(features), 3)), return_dict=True)
    assert f"{first.name}_routing_entropy" in logs and first.name.startswith("qmoe")  # was q_mo_e_layer_...


@pytest.mark.parametrize("policy, drops", [(routing.RoutingPolicy(4, top_k=1), False),
                                           (routing.RoutingPolicy(4), False),
                                           (routing.RoutingPolicy(4, top_k=2, capacity_factor=1.0), True),
                                           (routing.RoutingPolicy(4, routing="expert_choice"), True)])
def test_a_policy_says_whether_its_capacity_drops_pairs(policy, drops):
    assert policy.drops is drops


def test_routed_rows_are_every_pair_unless_a_capacity_drops_some():
    route = routing.Routing(LOGITS[:2], tf.nn.softmax(LOGITS[:2]), tf.constant([[1, 0], [2, 1]]),
                            tf.constant([[0.6, 0.0], [0.7, 0.3]]), tf.constant([[True, False], [True, True]]))
    every = dispatch.routed_rows(route, drops=False)
    assert every.sample_index.numpy().tolist() == [0, 0, 1, 1]
    assert every.expert_index.numpy().tolist() == [1, 0, 2, 1]
    kept = dispatch.routed_rows(route, drops=True)
    assert kept.sample_index.numpy().tolist() == [0, 1, 1] and kept.expert_index.numpy().tolist() == [1, 2, 1]
    np.testing.assert_allclose(kept.weight.numpy(), [0.6, 0.7, 0.3])
    assert (every.per_sample, kept.per_sample) == (2, None)


def test_routed_and_shared_rows_combine_sample_by_sample_as_by_index():
    route = routing.Routing(LOGITS[:2], tf.nn.softmax(LOGITS[:2]), tf.constant([[1, 0], [2, 1]]),
                            tf.constant([[0.6, 0.4], [0.7, 0.3]]), tf.constant([[True, True], [True, True]]))
    rows = dispatch.concat(dispatch.routed_rows(route, drops=False), dispatch.shared_rows(2, 3, 1))
    assert rows.per_sample == 3 and rows.sample_index.numpy().tolist() == [0, 0, 0, 1, 1, 1]
    assert rows.expert_index.numpy().tolist() == [1, 0, 3, 2, 1, 3]
    readouts = tf.reshape(tf.range(12, dtype=tf.float32), [6, 2])  # <float32>[R, 2]
    by_index = dispatch.combine(readouts, dispatch.Rows(*rows.pairs), 2)  # the segment sum
    np.testing.assert_allclose(dispatch.combine(readouts, rows, 2).numpy(), by_index.numpy())
    np.testing.assert_allclose(by_index.numpy(), [[0.4 * 2 + 4, 0.6 + 0.4 * 3 + 5], [0.7 * 6 + 0.3 * 8 + 10,
                                                                                    0.7 * 7 + 0.3 * 9 + 11]])


def test_weight_matrix_places_each_experts_weights_and_gives_them_dense_gradients():
    table = dispatch.ExpertTable(None, None, (np.array([2, 0]), None, np.array([1, 3, 4])), 5)
    weights = [tf.Variable([1.0, 2.0]), None, tf.Variable([3.0, 4.0, 5.0])]
    with tf.GradientTape() as tape:
        matrix = dispatch.weight_matrix(table, weights)  # <float32>[3, 5]
        loss = tf.reduce_sum(matrix * np.arange(15.0).reshape(3, 5))
    assert matrix.numpy().tolist() == [[2, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 3, 0, 4, 5]]
    first, third = tape.gradient(loss, [weights[0], weights[2]])
    assert isinstance(first, tf.Tensor) and isinstance(third, tf.Tensor)  # not IndexedSlices: dense optimizer steps
    assert first.numpy().tolist() == [2.0, 0.0] and third.numpy().tolist() == [11.0, 13.0, 14.0]
