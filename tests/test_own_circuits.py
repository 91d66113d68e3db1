"""Your own circuits: experts, routers and encoders from any Cirq circuit or PQC, still fused."""
import cirq
import numpy as np
import pytest
import sympy
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

import qmoe_tfq as qmoe
from conftest import RowCounter, separable_data

QUBITS = cirq.GridQubit.rect(1, 3)
OBSERVABLES = [cirq.Z(QUBITS[0]), cirq.Z(QUBITS[1])]


def cnot_expert() -> cirq.Circuit:
    """Reads the layer's observables; one layer of rx, then a CNOT chain and ry on two qubits."""
    a, b, c, d = sympy.symbols("a b c d")
    q = QUBITS
    return cirq.Circuit(cirq.rx(a)(q[0]), cirq.rx(b)(q[1]), cirq.rx(c)(q[2]), cirq.CNOT(q[0], q[1]),
                        cirq.CNOT(q[1], q[2]), cirq.ry(d)(q[2]), cirq.ry(2 * d)(q[0]))


def general_rotation_expert() -> qmoe.ExpertPQC:
    """Its own readouts (X and ZZ), a general Rz-Ry-Rz rotation, two layers, a CNOT ring."""
    circuit = qmoe.hardware_efficient_ansatz(QUBITS, 2, "w", ("rz", "ry", "rz"), "cnot_ring")
    return qmoe.ExpertPQC(circuit, [cirq.X(QUBITS[0]), cirq.Z(QUBITS[1]) * cirq.Z(QUBITS[2])], name="general")


def subset_pqc() -> tfq.layers.PQC:
    """A plain TFQ PQC on two of the three qubits, with its own Y readout."""
    s = sympy.symbols("s0:3")
    q = QUBITS
    circuit = cirq.Circuit(cirq.ry(s[0])(q[0]), cirq.ry(s[1])(q[2]), cirq.CZ(q[0], q[2]), cirq.rx(s[2])(q[2]))
    return tfq.layers.PQC(circuit, [cirq.Y(q[2]), cirq.Z(q[0])])


def heterogeneous_layer(**kwargs) -> qmoe.QMoELayer:
    return qmoe.QMoELayer(QUBITS, experts=[cnot_expert(), general_rotation_expert(), subset_pqc()],
                          observables=OBSERVABLES, router_layers=1, **kwargs)


def iqp_encoder() -> qmoe.CircuitEncoder:
    x = sympy.symbols("f0:3")
    q = QUBITS
    circuit = cirq.Circuit(cirq.H.on_each(*q), [cirq.rz(x[i])(q[i]) for i in range(3)],
                           cirq.ZZPowGate(exponent=x[0])(q[0], q[1]), cirq.ZZPowGate(exponent=0.5 * x[2])(q[1], q[2]))
    return qmoe.CircuitEncoder(circuit, x, scale=np.pi)


@pytest.mark.parametrize("top_k", [None, 2])
@pytest.mark.parametrize("inputs", ["circuits", "features"])
def test_output_is_routed_sum_of_each_expert_alone(features, top_k, inputs):
    encoder = iqp_encoder() if inputs == "features" else None
    moe = heterogeneous_layer(top_k=top_k, encoder=encoder)
    circuits = (encoder(tf.constant(features)) if encoder else qmoe.encode(features, QUBITS))
    layer_input = tf.constant(features) if encoder else circuits
    out = moe(layer_input).numpy()
    gates = moe.gate_weights(layer_input).numpy()
    assert ((gates > 0).sum(axis=1) == (top_k or 3)).all()
    expected = sum(gates[:, [e]] * expert(circuits).numpy() for e, expert in enumerate(moe.experts))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_plain_pqc_expert_keeps_its_circuit_operators_and_weights(features):
    pqc = subset_pqc()
    moe = qmoe.QMoELayer(QUBITS, experts=["quantum", pqc], observables=OBSERVABLES, expert_layers=1)
    expert = moe.experts[1]
    assert isinstance(expert, qmoe.ExpertPQC)
    circuits = qmoe.encode(features, QUBITS)
    np.testing.assert_allclose(expert(circuits).numpy(), pqc(circuits).numpy(), atol=1e-6)


def test_heterogeneous_experts_share_one_executor_call(features):
    counter = RowCounter()
    moe = heterogeneous_layer(top_k=1, backend=counter)
    moe(qmoe.encode(features, QUBITS))
    assert counter.rows == [len(features), len(features)]  # router, then every expert's rows at once
    # The call resolves the union of the three experts' own symbols: 4 + 18 + 3.
    assert counter.values[1].shape == (len(features), 25)


def test_gradients_reach_every_experts_own_weights(features):
    moe = heterogeneous_layer()
    circuits = qmoe.encode(features, QUBITS)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(moe(circuits) - 0.3))
    grads = tape.gradient(loss, [e.parameters for e in moe.experts] + [moe.router.parameters])
    for index, grad in enumerate(grads):
        assert grad is not None and np.abs(tf.convert_to_tensor(grad).numpy()).sum() > 0, index


def test_router_from_a_circuit_and_a_classical_head_take_circuits(features):
    r = sympy.symbols("r0:3")
    router = cirq.Circuit(cirq.ry(r[i])(q) for i, q in enumerate(QUBITS)) + cirq.Circuit(cirq.CZ(*QUBITS[:2]))
    readouts = [cirq.Z(q) for q in QUBITS] + [cirq.X(QUBITS[0])]
    moe = qmoe.QMoELayer(QUBITS, 2, expert_layers=1, router=router, router_observables=readouts,
                         router_head=keras.layers.Dense(2, name="head"))
    circuits = qmoe.encode(features, QUBITS)
    route = moe.route(circuits)
    expected = moe.router_head(moe.router(circuits)).numpy()  # readouts [B, 4] -> logits [B, 2]
    np.testing.assert_allclose(route.logits.numpy(), expected, atol=1e-5)
    assert moe.quantum_router and moe(circuits).shape == (6, 3)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"experts": ["quantum", qmoe.ExpertPQC(qmoe.hardware_efficient_ansatz(QUBITS, 1), [cirq.Z(QUBITS[0])])]},
     ValueError, r"experts\[1\] \(expert_pqc\) reads 1 operators, but every expert must output len\(observables\) = 3"),
    ({"n_experts": 3, "router": qmoe.ExpertPQC(qmoe.hardware_efficient_ansatz(QUBITS, 1, "r"), [cirq.Z(QUBITS[0])])},
     ValueError, "router reads 1 operators, but n_experts = 3: give as many router observables as experts, or a head"),
    ({"experts": [cirq.Circuit(cirq.rx(sympy.Symbol("a"))(cirq.GridQubit(4, 4)))]},
     ValueError, r"experts\[0\] acts on qubits \['q\(4, 4\)'\] that are not among the layer's qubits"),
    ({"experts": [cirq.Circuit(cirq.X(QUBITS[0]))]}, ValueError, r"experts\[0\] is a circuit without sympy symbols"),
    # an empty circuit is falsy: it once fell back to the layer's ansatz without a word
    ({"router": qmoe.QuantumRouter(cirq.Circuit(), [cirq.Z(QUBITS[0])], keras.layers.Dense(4))}, ValueError,
     "router is a circuit without sympy symbols"),
    ({"expert_layers": [1, 2]}, ValueError, "expert_layers has 2 depths but there are 4 experts"),
    ({"expert_layers": [1, 0, 1, 1]}, ValueError, r"expert_layers\[1\] must be a positive integer, got 0"),
    ({"entangler": "cnot_star"}, ValueError, "entangler='cnot_star' is not allowed; use one of"),
    ({"router_head": "dense"}, TypeError, "QuantumRouter's head must be None or a tf_keras layer, got 'dense'"),
])
def test_wrong_parts_fail_at_construction_naming_them(kwargs, error, message):
    with pytest.raises(error, match=message):
        qmoe.QMoELayer(QUBITS, **kwargs)


@pytest.mark.parametrize("args, message", [
    ((cirq.Circuit(cirq.rx(sympy.Symbol("a"))(QUBITS[0])), ["a", "b"]), r"\['b'\] are not in the circuit"),
    ((cirq.Circuit(cirq.rx(sympy.Symbol("a") + sympy.Symbol("w"))(QUBITS[0])), ["a"]), r"\['w'\] are not features"),
    ((cirq.Circuit(cirq.rx(sympy.Symbol("a"))(QUBITS[0])), ["a", "a"]), "distinct sympy symbols"),
])
def test_circuit_encoder_checks_its_symbols(args, message):
    with pytest.raises(ValueError, match=message):
        qmoe.CircuitEncoder(*args)


def test_builtin_ansatz_options():
    circuit = qmoe.hardware_efficient_ansatz(QUBITS, 1, rotations=("rz", "ry", "rz"), entangler="cnot_chain")
    assert len(cirq.parameter_symbols(circuit)) == 9  # a general rotation: three angles per qubit
    assert sum(1 for op in circuit.all_operations() if op.gate == cirq.CNOT) == 2
    moe = qmoe.QMoELayer(QUBITS, 3, expert_layers=[1, 2, 3], router_layers=1)
    assert [len(e.symbols) for e in moe.experts] == [6, 12, 18]


def test_one_feature_model_trains():
    x, y = separable_data(64, 1)
    model = qmoe.build_qmoe_classifier(QUBITS[:1], 2, n_features=1, n_experts=2, expert_layers=1, router_layers=1,
                                       learning_rate=0.1)
    model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"] >= 0.8


def own_circuits_model(kind: str) -> keras.Model:
    """Heterogeneous experts, a router circuit with a classical head, and (for features) an IQP encoder."""
    r = sympy.symbols("r0:3")
    router = cirq.Circuit(cirq.rx(r[i])(q) for i, q in enumerate(QUBITS))
    features = kind == "features"
    inputs = keras.Input(shape=(3,)) if features else keras.Input(shape=(), dtype=tf.string)
    moe = heterogeneous_layer(top_k=2, encoder=iqp_encoder() if features else None, router=router,
                              router_observables=[cirq.Z(q) for q in QUBITS], router_head=keras.layers.Dense(3),
                              name="qmoe")
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(moe(inputs)))


def circuits_of(moe: qmoe.QMoELayer) -> list:
    parts = [e.model_circuit for e in moe.experts] + [moe.router.model_circuit]
    return parts + [e.readouts for e in moe.experts] + [moe.encoder.circuit if moe.encoder else None]


@pytest.mark.parametrize("kind", ["circuits", "features"])
@pytest.mark.parametrize("suffix", [".keras", ".h5", "_tf"])
def test_own_circuits_round_trip(tmp_path, kind, suffix):
    model = own_circuits_model(kind)
    x = np.random.default_rng(4).uniform(0, 1, size=(5, 3)).astype(np.float32)
    inputs = x if kind == "features" else qmoe.encode(x, QUBITS)
    expected = model.predict(inputs, verbose=0)
    model.save(str(tmp_path / f"m{suffix}"))
    reloaded = keras.models.load_model(str(tmp_path / f"m{suffix}"))
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0), expected, atol=1e-6)
    assert circuits_of(reloaded.get_layer("qmoe")) == circuits_of(model.get_layer("qmoe"))


def test_own_circuits_saved_model_serves(tmp_path):
    model = own_circuits_model("features")
    x = np.random.default_rng(5).uniform(0, 1, size=(4, 3)).astype(np.float32)
    qmoe.export_saved_model(model, tmp_path / "export")
    served = qmoe.saving.run_serving(qmoe.load_saved_model(tmp_path / "export"), x)
    np.testing.assert_allclose(served.numpy(), model.predict(x, verbose=0), atol=1e-6)


def test_symbol_names_may_be_any_unicode_name():
    q = cirq.GridQubit.rect(1, 2)
    theta, phi = sympy.Symbol("θ0"), sympy.Symbol("φ₁")
    expert = cirq.Circuit(cirq.ry(theta)(q[0]), cirq.CZ(*q), cirq.ry(phi)(q[1]))
    circuits = qmoe.encode(np.random.default_rng(0).uniform(0, 1, (3, 2)), q)
    outputs = []
    for backend in ("statevector", "noiseless"):
        keras.utils.set_random_seed(1)
        outputs.append(qmoe.QMoELayer(q, experts=[expert, expert], top_k=1, backend=backend)(circuits).numpy())
    np.testing.assert_allclose(*outputs, atol=1e-5)  # the kernel failed decoding 'θ0' as ASCII


def test_an_expert_using_the_encoders_feature_symbols_is_refused():
    q = cirq.GridQubit.rect(1, 2)
    x = sympy.symbols("x0:2")
    encoder = qmoe.CircuitEncoder(cirq.Circuit(cirq.ry(x[0])(q[0]), cirq.ry(x[1])(q[1])), x)
    expert = cirq.Circuit(cirq.rx(x[0])(q[0]), cirq.ry(sympy.Symbol("w"))(q[1]))
    moe = qmoe.QMoELayer(q, experts=[expert, "quantum"], encoder=encoder, top_k=1)
    with pytest.raises(ValueError, match=r"experts\[0\] \(expert_0\) uses the symbols \['x0'\], which are the "
                                         "encoder's feature symbols"):
        moe(tf.zeros([2, 2]))
