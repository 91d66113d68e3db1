import functools
import json
import os
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
from qmoe_tfq.serialization import FORMAT_VERSION

QUBITS = cirq.GridQubit.rect(1, 3)
CUSTOM_OBSERVABLES = [cirq.Z(QUBITS[0]), 0.5 * cirq.X(QUBITS[1]) * cirq.X(QUBITS[2]) + cirq.Y(QUBITS[2])]
SMALL = {"n_experts": 3, "expert_layers": 1, "router_layers": 1}


BUILDERS = {
    "dense_circuits_custom_observables": lambda: qmoe.build_qmoe_classifier(QUBITS, 2, observables=CUSTOM_OBSERVABLES,
                                                                            **SMALL),
    "top2_encoder_capacity": lambda: qmoe.build_qmoe_classifier(QUBITS, 3, n_features=3, top_k=2, capacity_factor=1.5,
                                                                encoder_rotations=("rx",), **SMALL),
    "qnn_encoder": lambda: qmoe.build_qnn_classifier(QUBITS, 2, n_features=3, n_layers=2),
    "hybrid_encoder": lambda: qmoe.build_qmoe_classifier(QUBITS, 2, n_features=3, top_k=2, expert_kind=(2, 1),
                                                         router_kind="classical", **SMALL),
    "coherent_encoder": lambda: qmoe.build_qmoe_classifier(QUBITS, 2, n_features=3, aggregation="coherent",
                                                           **{**SMALL, "n_experts": 2}),
}


@functools.cache
def built_model(name: str) -> tuple[keras.Model, object]:
    """(model, inputs): a builder's model (every configuration's round trip is in test_configurations.py)."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(3).uniform(0, 1, size=(5, 3)).astype(np.float32)
    built = BUILDERS[name]()
    return built, x if built.inputs[0].dtype.is_floating else qmoe.encode(x, QUBITS)


def test_layer_config_round_trip_keeps_every_argument():
    moe = qmoe.QMoELayer(QUBITS, 3, expert_layers=2, router_layers=1, top_k=2, temperature=0.7, observables=CUSTOM_OBSERVABLES,
                         rotations=("rx",), entangler="chain", router_noise=0.1, capacity_factor=2.0,
                         load_balance_weight=0.2, z_loss_weight=0.0, encoder=qmoe.AngleEncoder(QUBITS, scale=1.0))
    config = moe.get_config()
    json.dumps(config)  # configs are plain JSON: circuits travel as Cirq JSON text
    clone = qmoe.QMoELayer.from_config(config)
    assert clone.get_config() == {**config, "name": clone.name}
    assert clone.observables == moe.observables and clone.qubits == moe.qubits
    assert clone.encoder.scale == 1.0


def test_newer_format_version_is_refused():
    config = qmoe.QMoELayer(QUBITS, 2).get_config()
    config["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ValueError, match=f"format_version={FORMAT_VERSION + 1}.*upgrade qmoe_tfq"):
        qmoe.QMoELayer.from_config(config)


def test_weights_checkpoints_round_trip(tmp_path):
    model, inputs = built_model("top2_encoder_capacity")
    expected = model.predict(inputs, verbose=0)
    fresh = keras.models.clone_model(model)
    model.save_weights(str(tmp_path / "w.weights.h5"))
    fresh.load_weights(str(tmp_path / "w.weights.h5"))
    np.testing.assert_allclose(fresh.predict(inputs, verbose=0), expected, atol=1e-6)

    again = keras.models.clone_model(model)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    restored = tf.train.Checkpoint(model=again).read(path)
    restored.assert_existing_objects_matched().expect_partial()  # the clone has no optimizer to take its values
    np.testing.assert_allclose(again.predict(inputs, verbose=0), expected, atol=1e-6)


SUBPROCESS_LOAD = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_quantum as tfq
    from tensorflow_quantum.core.ops import tfq_adj_grad_op, tfq_simulate_ops, tfq_utility_ops
    for library in (tfq_adj_grad_op.SIM_OP_MODULE, tfq_simulate_ops.SIM_OP_MODULE,
                    tfq_utility_ops.UTILITY_OP_MODULE):
        dir(library)  # TFQ loads its ops lazily; SavedModel loading needs them registered
    assert "qmoe_tfq" not in sys.modules
    for folder in sys.argv[1:]:  # each: sm/ (the SavedModel), inputs.pb; writes out.npy
        serve = tf.saved_model.load(folder + "/sm").signatures["serving_default"]
        name, spec = list(serve.structured_input_signature[1].items())[0]
        inputs = tf.io.parse_tensor(tf.io.read_file(folder + "/inputs.pb"), out_type=spec.dtype)
        np.save(folder + "/out.npy", serve(**{name: inputs})["output"].numpy())
        print(name)
""")
SERVED = ["dense_circuits_custom_observables", "top2_encoder_capacity", "qnn_encoder", "coherent_encoder",
          "hybrid_encoder"]


def test_saved_models_serve_in_a_fresh_process_with_tensorflow_alone(tmp_path):
    """One process (startup is most of the time) loads each export without qmoe_tfq and serves it."""
    expected, names = [], []
    for name in SERVED:
        model, inputs = built_model(name)
        expected.append(model.predict(inputs, verbose=0))
        (tmp_path / name).mkdir()
        names.append(qmoe.export_saved_model(model, tmp_path / name / "sm").name)
        # Serialized circuits are bytes with NULs, so the inputs travel as a serialized tensor.
        tf.io.write_file(str(tmp_path / name / "inputs.pb"), tf.io.serialize_tensor(tf.constant(inputs)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run([sys.executable, "-c", SUBPROCESS_LOAD, *(str(tmp_path / name) for name in SERVED)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == names == ["features" if "encoder" in n else "circuits" for n in SERVED]
    for name, values in zip(SERVED, expected):
        np.testing.assert_allclose(np.load(tmp_path / name / "out.npy"), values, atol=1e-6, err_msg=name)


def test_saved_model_input_errors_are_clear(tmp_path):
    model, inputs = built_model("top2_encoder_capacity")
    qmoe.export_saved_model(model, tmp_path / "sm")
    loaded = qmoe.load_saved_model(tmp_path / "sm")
    from qmoe_tfq.saving import run_serving
    np.testing.assert_allclose(run_serving(loaded, inputs).numpy(), model.predict(inputs, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match=r"expects features of dtype float32 and shape \[batch, 3\], "
                                         r"got dtype float32 and shape \[5, 2\]"):
        run_serving(loaded, inputs[:, :2])
    with pytest.raises(ValueError, match="expects features of dtype float32 .* got dtype string"):
        run_serving(loaded, tf.constant(["a"]))
    with pytest.raises(ValueError, match="is not a SavedModel directory"):
        qmoe.load_saved_model(tmp_path / "nothing_here")


def make_model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return qmoe.build_qmoe_classifier(cirq.GridQubit.rect(1, 2), 2, n_features=2, n_experts=2,
                                      expert_layers=1, router_layers=1, top_k=1, learning_rate=0.1)


class StopAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_to_identical_weights(tmp_path):
    x, y = separable_data(32, 2)
    reference = make_model(7)
    reference.fit(x, y, epochs=4, batch_size=8, shuffle=False, verbose=0)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = make_model(7)
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(x, y, epochs=4, batch_size=8, shuffle=False, verbose=0, callbacks=[backup, StopAtEpoch(2)])
    resumed = make_model(7)
    history = resumed.fit(x, y, epochs=4, batch_size=8, shuffle=False, verbose=0, callbacks=[backup])
    assert len(history.epoch) == 2  # epochs 2 and 3 only: the first two came from the backup
    for ours, theirs in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_differentiator_survives_saving(tmp_path, suffix):
    keras.utils.set_random_seed(0)
    differentiator = tfq.differentiators.ForwardDifference(grid_spacing=0.05)
    model = qmoe.build_qmoe_classifier(QUBITS, 2, backend="noiseless", differentiator=differentiator, **SMALL)
    circuits = qmoe.encode(np.random.default_rng(0).uniform(0, 1, (4, 3)), QUBITS)
    model.save(str(tmp_path / f"model{suffix}"))
    reloaded = qmoe.load_model(str(tmp_path / f"model{suffix}"))

    def gradients(m):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(m(circuits) * [1.0, -1.0])
        return [g.numpy() for g in tape.gradient(loss, m.trainable_weights)]
    for ours, theirs in zip(gradients(model), gradients(reloaded)):
        np.testing.assert_allclose(theirs, ours, atol=1e-5)  # a grid of 0.05, not Adjoint's exact gradient
    layer = next(lay for lay in reloaded.layers if isinstance(lay, qmoe.QMoELayer))
    stored = layer.get_config()["differentiator"]
    assert stored["class_name"] == "LinearCombination"
    np.testing.assert_allclose(stored["config"]["perturbations"], [0.0, 0.05])


def test_auto_with_a_differentiator_reloads_on_the_same_simulator():
    moe = qmoe.QMoELayer(QUBITS, **SMALL, differentiator=tfq.differentiators.ParameterShift())
    clone = qmoe.QMoELayer.from_config(moe.get_config())
    assert isinstance(clone.differentiator, tfq.differentiators.ParameterShift)
    clone(qmoe.encode(np.zeros((1, 3)), QUBITS))
    assert clone.simulator == "noiseless"  # TFQ with ParameterShift, as before saving; not the statevector kernel


def test_stored_differentiators_are_tfq_classes_with_numbers():
    config = qmoe.QMoELayer(QUBITS, **SMALL).get_config()
    with pytest.raises(ValueError, match=r"QMoELayer.differentiator: a stored differentiator must be one of \["):
        qmoe.QMoELayer.from_config({**config, "differentiator": {"class_name": "os.system", "config": {}}})
    with pytest.raises(ValueError, match="the stored LinearCombination takes numbers"):
        qmoe.QMoELayer.from_config({**config, "differentiator": {"class_name": "LinearCombination",
                                                                 "config": {"weights": "1", "perturbations": [0]}}})


def test_a_custom_differentiator_warns_that_it_is_not_saved():
    class Mine(tfq.differentiators.ParameterShift):
        pass
    moe = qmoe.QMoELayer(QUBITS, **SMALL, backend="noiseless", differentiator=Mine())
    with pytest.warns(UserWarning, match="is not one of TFQ's .* it is not saved"):
        assert moe.get_config()["differentiator"] is None


def test_with_backend_gives_the_copy_its_own_differentiator():
    keras.utils.set_random_seed(0)
    model = qmoe.build_qmoe_classifier(QUBITS, 2, backend="noiseless", **SMALL,
                                       differentiator=tfq.differentiators.ParameterShift())
    circuits = qmoe.encode(np.random.default_rng(1).uniform(0, 1, (4, 3)), QUBITS)
    on_kernel = qmoe.with_backend(model, "statevector")  # refused a TFQ differentiator before
    np.testing.assert_allclose(on_kernel.predict(circuits, verbose=0), model.predict(circuits, verbose=0), atol=1e-5)
    forward = qmoe.with_backend(model, "noiseless", differentiator=tfq.differentiators.ForwardDifference())
    layer = next(lay for lay in forward.layers if isinstance(lay, qmoe.QMoELayer))
    assert layer.get_config()["differentiator"]["class_name"] == "LinearCombination"
