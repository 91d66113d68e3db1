"""The layer from parts: each part made on its own, the settings making the same parts, conflicts refused."""
import cirq
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import qmoe_tfq as qmoe
from configurations import QUBITS


def config_without_name(layer: qmoe.QMoELayer) -> dict:
    config = layer.get_config()
    config.pop("name")
    config["gate"]["config"].pop("name")
    return config


@pytest.mark.parametrize("parts, settings", [
    ({"gate": qmoe.TopK(1, balance="bias", bias_rate=0.2), "ansatz": qmoe.Ansatz(layers=1),
      "execution": qmoe.Execution("statevector")},
     {"top_k": 1, "balance": "bias", "bias_rate": 0.2, "expert_layers": 1, "router_layers": 1,
      "backend": "statevector"}),
    ({"gate": qmoe.ExpertChoice(capacity_factor=1.5, metrics="per_expert"),
      "router": qmoe.QuantumRouter(qmoe.Ansatz(layers=3), observables=[cirq.Z(q) for q in QUBITS])},
     {"routing": "expert_choice", "capacity_factor": 1.5, "metrics": "per_expert", "router_layers": 3,
      "router_observables": [cirq.Z(q) for q in QUBITS]}),
    ({"gate": qmoe.DenseGate(temperature=0.5, z_loss_weight=0.0),
      "ansatz": qmoe.Ansatz(("rx",), "chain", entangle_first=False, layers=1),
      "execution": qmoe.Execution("noiseless", repetitions=50)},
     {"temperature": 0.5, "z_loss_weight": 0.0, "rotations": ("rx",), "entangler": "chain",
      "entangle_first": False, "expert_layers": 1, "router_layers": 1, "backend": "noiseless", "repetitions": 50}),
])
def test_settings_make_the_parts_one_would_pass(parts, settings):
    assert config_without_name(qmoe.QMoELayer(QUBITS, 3, **parts)) == config_without_name(
        qmoe.QMoELayer(QUBITS, 3, **settings))


def test_parts_are_inspectable_and_the_layer_holds_them(features):
    gate = qmoe.TopK(2, capacity_factor=1.25)
    router = qmoe.QuantumRouter(head=keras.layers.Dense(3))
    moe = qmoe.QMoELayer(QUBITS, 3, gate=gate, router=router, ansatz=qmoe.Ansatz(layers=1))
    assert moe.gate is gate and gate.policy.n_experts == 3 and gate.rows_per_sample == 2
    assert moe.router_head is router.head
    assert list(moe.router.readouts) == [cirq.PauliSum.wrap(o) for o in qmoe.router_readouts(QUBITS, 3)]
    route = moe.route(qmoe.encode(features[:, :3], QUBITS))
    assert route.expert_index.shape == (len(features), 2)
    assert not hasattr(moe, "logit_scale")  # the head makes the logits


def test_each_expert_may_be_its_own_ansatz():
    moe = qmoe.QMoELayer(QUBITS, experts=[qmoe.Ansatz(layers=1), qmoe.Ansatz(("rx", "ry", "rz"), layers=2)],
                         router=qmoe.QuantumRouter(observables=[cirq.Z(QUBITS[0]), cirq.Z(QUBITS[1])]))
    assert [int(e.symbol_names.shape[0]) for e in moe.experts] == [3 * 2, 2 * 3 * 3]
    clone = qmoe.QMoELayer.from_config(moe.get_config())
    assert [e.model_circuit for e in clone.experts] == [e.model_circuit for e in moe.experts]


@pytest.mark.parametrize("kwargs, message", [
    ({"gate": qmoe.TopK(1), "temperature": 0.5}, r"\['temperature'\] are settings of the gate, and gate= is given"),
    ({"gate": qmoe.TopK(1), "top_k": 2}, r"top_k=2 is a setting of the gate, and gate= is given: use TopK\(2\)"),
    ({"execution": "noiseless", "repetitions": 10}, r"\['repetitions'\] are settings of the execution"),
    ({"ansatz": qmoe.Ansatz(), "expert_layers": 3}, r"\['expert_layers'\] are settings of the ansatz"),
    ({"router": qmoe.QuantumRouter(), "router_head": keras.layers.Dense(3)},
     "router_observables and router_head shape a quantum router made from settings"),
    ({"top_k": None, "capacity_factor": 1.5}, r"dense routing \(top_k=None\) runs every expert on every sample"),
])
def test_a_part_and_its_settings_together_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        qmoe.QMoELayer(QUBITS, 3, **kwargs)


@pytest.mark.parametrize("make, error, message", [
    (lambda: qmoe.TopK(0), ValueError, "top_k must be None .* or a positive integer, got 0"),
    (lambda: qmoe.TopK(None), ValueError, "for every expert use DenseGate"),
    (lambda: qmoe.ExpertChoice(capacity_factor=0), ValueError, "capacity_factor must be None"),
    (lambda: qmoe.DenseGate(temperature=1e-50), ValueError, r"temperature must be a number in \[1e-4, 1e4\]"),
    (lambda: qmoe.QuantumRouter("circuit"), TypeError, "QuantumRouter's circuit must be None, a qmoe_tfq.Ansatz"),
    (lambda: qmoe.Ansatz(layers=0), ValueError, "layers must be a positive integer, got 0"),
    (lambda: qmoe.Execution("noisy"), ValueError, "backend='noisy' averages noise trajectories"),
    (lambda: qmoe.QMoELayer(QUBITS, 2, gate=qmoe.TopK(3)), ValueError, "top_k=3 is more than n_experts=2"),
])
def test_each_part_checks_its_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_a_gate_routes_for_one_layer():
    gate = qmoe.TopK(1, name="policy")
    qmoe.QMoELayer(QUBITS, 3, gate=gate, name="first")
    with pytest.raises(ValueError, match="gate policy already routes for first; give each layer its own gate"):
        qmoe.QMoELayer(QUBITS, 3, gate=gate, name="second")


def test_a_gate_alone_routes_and_reports(features):
    gate = qmoe.TopK(1, balance="bias", bias_rate=0.5, name="policy")
    logits = tf.constant([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert gate(logits, training=True).expert_index.numpy().tolist() == [[0], [0]]
    # Expert 0 took everything: its bias went down, the others' up, by the rate.
    np.testing.assert_allclose(gate.expert_bias.numpy(), [-0.5, 0.5, 0.5])
    assert {"policy_routing_entropy", "policy_unused_experts"} <= set(gate.health.result())
