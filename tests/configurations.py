"""Every QMoELayer configuration the README documents, small (3 qubits), each as a model and its inputs.

Used by `test_configurations.py` (every configuration round-trips through every format) and by
`fixtures/make_fixtures.py`, which saved the files under `fixtures/` that later versions must load.
"""
import cirq
import numpy as np
import sympy
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

import qmoe_tfq as qmoe
from qmoe_tfq.hybrid import ClassicalExpert
from qmoe_tfq.mixture import MixtureLayer

QUBITS = cirq.GridQubit.rect(1, 3)
SMALL = {"n_experts": 3, "expert_layers": 1, "router_layers": 1}


def settings_config(version: int, qubits: list[cirq.Qid] = QUBITS, **settings) -> dict:
    """A `QMoELayer` config as format versions 1-3 wrote them: its settings, each not given at its default."""
    return {"name": "qmoe", "qubits": cirq.to_json(qubits), "format_version": version, **settings}


def _own_parts() -> dict:
    """README "Bring your own circuits": circuit and PQC experts, a circuit router with a head, a feature map."""
    q = QUBITS
    a, b, r, x = (sympy.symbols(f"{name}0:3") for name in ("a", "b", "r", "x"))
    cnot_expert = cirq.Circuit([cirq.rx(a[i])(q[i]) for i in range(3)], cirq.CNOT(q[0], q[1]), cirq.CNOT(q[1], q[2]))
    rotations = cirq.Circuit([cirq.ry(b[i])(q[i]) for i in range(3)], cirq.CZ(q[0], q[2]))
    pqc = tfq.layers.PQC(cirq.Circuit(cirq.ry(sympy.Symbol("c0"))(q[0]), cirq.CZ(q[0], q[1]),
                                      cirq.ry(sympy.Symbol("c1"))(q[1])), [cirq.Z(q[0]), cirq.Z(q[1]), cirq.X(q[0])])
    router = cirq.Circuit([cirq.ry(r[i])(q[i]) for i in range(3)], cirq.CZ(q[0], q[1]))
    feature_map = cirq.Circuit(cirq.H.on_each(*q), [cirq.rz(x[i])(q[i]) for i in range(3)],
                               [cirq.ZZPowGate(exponent=x[i])(q[i], q[i + 1]) for i in range(2)])
    return {"experts": [cnot_expert, rotations, pqc], "router": router,
            "router_observables": [cirq.Z(qi) for qi in q] + [cirq.X(q[0])], "router_head": keras.layers.Dense(3),
            "encoder": qmoe.CircuitEncoder(feature_map, x, scale=np.pi), "top_k": 2}


def _layers() -> dict:
    encoder = {"encoder": qmoe.AngleEncoder(QUBITS)}
    return {
        "defaults_circuits": lambda: qmoe.QMoELayer(QUBITS, **SMALL),
        "features_top1": lambda: qmoe.QMoELayer(QUBITS, **SMALL, top_k=1, **encoder),
        "sparse_policy": lambda: qmoe.QMoELayer(
            QUBITS, **SMALL, top_k=2, temperature=0.7, router_noise=0.5, capacity_factor=1.25,
            load_balance_weight=0.02, z_loss_weight=0.002, **encoder),
        "expert_choice_shared": lambda: qmoe.QMoELayer(
            QUBITS, **SMALL, top_k=1, routing="expert_choice", shared_experts=1, metrics="per_expert"),
        "bias_balance": lambda: qmoe.QMoELayer(QUBITS, **SMALL, top_k=1, balance="bias", bias_rate=0.2,
                                               metrics="none"),
        "ansatz_and_observables": lambda: qmoe.QMoELayer(
            QUBITS, 3, expert_layers=[1, 2, 1], router_layers=1, rotations=("rx", "rz"), entangler="chain", entangle_first=False,
            observables=[cirq.Z(QUBITS[0]), 0.5 * cirq.X(QUBITS[1]) * cirq.X(QUBITS[2])]),
        "own_circuits": lambda: qmoe.QMoELayer(QUBITS, **_own_parts()),
        "reuploading": lambda: qmoe.QMoELayer(QUBITS, 3, expert_layers=2, router_layers=1, top_k=1, reuploading=True, **encoder),
        "coherent": lambda: qmoe.CoherentQMoELayer(QUBITS, 2, 1, 1, load_balance_weight=0.05, **encoder),
        "hybrid": lambda: qmoe.QMoELayer(QUBITS, experts=["quantum", "quantum", ClassicalExpert(units=3)],
                                         router=keras.layers.Dense(3), top_k=1, expert_layers=1, **encoder),
        "quantum_router_head": lambda: qmoe.QMoELayer(QUBITS, **SMALL, top_k=1, router_head=keras.layers.Dense(3),
                                                      router_observables=[cirq.Z(q) for q in QUBITS]),
        "noiseless_finite_difference": lambda: qmoe.QMoELayer(
            QUBITS, **SMALL, backend="noiseless", differentiator=tfq.differentiators.ForwardDifference()),
        "statevector": lambda: qmoe.QMoELayer(QUBITS, **SMALL, top_k=1, backend="statevector"),
        "parts": lambda: qmoe.QMoELayer(
            QUBITS, experts=["quantum", qmoe.Ansatz(("rx", "ry"), layers=2), qmoe.Ansatz(layers=1)],
            router=qmoe.QuantumRouter(qmoe.Ansatz(layers=2), head=keras.layers.Dense(3)),
            gate=qmoe.ExpertChoice(capacity_factor=1.5, z_loss_weight=0.0), ansatz=qmoe.Ansatz(layers=1),
            execution=qmoe.Execution("statevector")),
    }


CONFIGURATIONS = tuple(_layers())


def features(name: str) -> np.ndarray:
    """<float32>[5, 3] the configuration's data, in [0, 1]."""
    seed = CONFIGURATIONS.index(name)  # so new configurations go last: the fixtures' data depend on it
    return np.random.default_rng(seed).uniform(0, 1, size=(5, 3)).astype(np.float32)


def model_and_inputs(name: str) -> tuple[keras.Model, object]:
    """A compiled classifier around configuration `name`, and inputs it takes (features, or their circuits)."""
    keras.utils.set_random_seed(CONFIGURATIONS.index(name))
    layer = _layers()[name]()
    takes_features = layer.encoder is not None or name == "hybrid"
    inputs = keras.Input(shape=(3,)) if takes_features else keras.Input(shape=(), dtype=tf.string)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(layer(inputs)))
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = features(name)
    return model, x if takes_features else qmoe.encode(x, QUBITS)


def moe_layer(model: keras.Model) -> MixtureLayer:
    return next(layer for layer in model.layers if isinstance(layer, MixtureLayer))
