"""A whole training step under XLA (``model.compile(..., jit_compile=True)``): where the layer compiles it trains as
without, and says its input checks do not run; where it cannot, it says why before XLA fails obscurely."""
import logging

import cirq
import numpy as np
import pytest
import tf_keras as keras

import qmoe_tfq as qmoe
from qmoe_tfq import routing_terms

QUBITS = cirq.GridQubit.rect(1, 2)


def classifier(jit_compile: bool, **settings) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(2)(qmoe.QMoELayer(QUBITS, 3, **settings)(inputs)))
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model


def data() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).uniform(0, 1, (32, 2)).astype(np.float32)
    return x, (x[:, 0] > 0.5).astype(np.int32)


@pytest.mark.parametrize("settings", [{"top_k": 1}, {"top_k": None, "shared_experts": 1}])
def test_an_xla_compiled_step_trains_to_the_same_weights_and_warns_that_input_checks_do_not_run(settings, caplog):
    x, y = data()
    graph, jitted = (classifier(jit, backend="statevector", **settings) for jit in (False, True))
    jitted.set_weights(graph.get_weights())
    with caplog.at_level(logging.WARNING, logger="qmoe_tfq"):
        losses = [model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]
                  for model in (graph, jitted)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    for mine, reference in zip(jitted.get_weights(), graph.get_weights()):
        np.testing.assert_allclose(mine, reference, atol=1e-4)
    warnings = [r.getMessage() for r in caplog.records if "XLA-compiled step" in r.getMessage()]
    assert len(warnings) == 1 and "its input checks do not run" in warnings[0]


@pytest.mark.parametrize("settings, reason", [
    ({"top_k": 1, "backend": "noiseless"}, "runs its circuits on 'noiseless', with TFQ's ops"),
    ({"gate": qmoe.TopK(1, capacity_factor=1.0), "backend": "statevector"}, "routes with a capacity"),
    ({"experts": ["quantum", "quantum", keras.layers.Dense(2)], "top_k": 1, "backend": "statevector"},
     "has classical experts"),
])
def test_a_layer_that_cannot_compile_says_why_when_traced_for_xla(settings, reason):
    x, y = data()
    with pytest.raises(ValueError, match=rf"cannot run in an XLA-compiled step .*: it {reason}"):
        classifier(True, **settings).fit(x, y, batch_size=8, verbose=0)


def softmax_ops(step) -> int:
    """Softmax ops in the graph of a model's step function: its gate's, unless the gate runs inside XLA."""
    graph = step._list_all_concrete_functions()[0].graph
    return sum(op.type == "Softmax" for op in graph.get_operations())


@pytest.mark.parametrize("settings", [{"top_k": 1}, {"top_k": None, "shared_experts": 1},
                                      {"gate": qmoe.TopK(2, information_weight=0.5), "reuploading": True,
                                       "encoder": qmoe.AngleEncoder(QUBITS)}])
def test_inference_runs_as_one_xla_computation_with_the_outputs_losses_and_metrics_of_the_graph_path(settings):
    model = classifier(False, backend="statevector", **settings)
    layer = model.layers[1]
    x, y = data()
    x, y = x[:13], y[:13]  # padded to 14 samples in XLA: the terms must leave the padding out
    metrics = model.evaluate(x, y, batch_size=13, verbose=0, return_dict=True)
    assert softmax_ops(model.test_function) == 0  # the gate's softmax is inside the XLA computation
    inference = layer(x, training=False)
    inference_losses = [float(loss) for loss in layer.losses]
    training = layer(x, training=True)  # the same step in TF's ops around the kernel (no router noise here)
    np.testing.assert_allclose(inference, training, atol=1e-5)
    np.testing.assert_allclose(inference_losses, [float(loss) for loss in layer.losses], rtol=1e-5)
    terms = routing_terms.measure(layer.route(x), layer.gate.policy)  # of the 13 samples, in TF's ops
    for metric, term in (("routing_entropy", terms.entropy), ("router_confidence", terms.confidence),
                         ("load_balance", terms.load_balance), ("z_loss", terms.z_loss)):
        np.testing.assert_allclose(metrics[f"{layer.name}_{metric}"], term, rtol=1e-5)


def test_a_layer_with_a_keras_part_in_its_step_infers_in_tf_ops():
    model = classifier(False, backend="statevector", top_k=1,
                       router=qmoe.QuantumRouter(head=keras.layers.Dense(3)))
    model.predict(data()[0], verbose=0)
    assert softmax_ops(model.predict_function) == 1
