"""Hardening: no code from files, no silent wrong answers, nothing lost on save, clear errors."""
import collections
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import zipfile

import cirq
import numpy as np
import pytest
import sympy
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

import qmoe_tfq as qmoe
from qmoe_tfq.cli import main

QUBITS = cirq.GridQubit.rect(1, 2)
SMALL = {"n_experts": 2, "expert_layers": 1, "router_layers": 1}
ENV = {**{k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}, "TF_CPP_MIN_LOG_LEVEL": "3"}


def payload(marker) -> keras.layers.Lambda:
    """A Lambda that writes `marker` whenever it runs (on a symbolic tensor too, so on loading)."""
    code = f"lambda x: (__import__('pathlib').Path({str(marker)!r}).write_text('ran'), x[:, :2])[1]"
    return keras.layers.Lambda(eval(code))  # noqa: S307  (the test's own payload)


def lambda_model(marker, where: str) -> keras.Model:
    inputs = keras.Input(shape=(2,))
    if where == "top":
        return keras.Model(inputs, keras.layers.Dense(2)(payload(marker)(inputs)))
    moe = qmoe.QMoELayer(QUBITS, router=payload(marker), encoder=qmoe.AngleEncoder(QUBITS), **SMALL)
    return keras.Model(inputs, moe(inputs))


@pytest.mark.parametrize("where", ["top", "router"])
@pytest.mark.parametrize("suffix", [".h5", "_tf", ".keras"])
def test_load_model_refuses_lambda_and_never_runs_it(tmp_path, where, suffix):
    marker = tmp_path / "ran"
    path = str(tmp_path / f"m{suffix}")
    lambda_model(marker, where).save(path)
    marker.unlink()
    with pytest.raises(ValueError, match="Lambda"):
        qmoe.load_model(path)
    assert not marker.exists()
    if suffix == ".h5":
        for command in (["predict", "--model", path, "--input", "x.npy"], ["export", "--model", path,
                                                                            "--output", str(tmp_path / "e")]):
            assert exit_code(command) == 2
            assert not marker.exists()
        qmoe.load_model(path, safe_mode=False)  # trusted: the code runs
        assert marker.exists()


def test_load_model_refuses_any_stored_function_in_an_h5_config(tmp_path):
    # e.g. an RNN cell's ResidualWrapper keeps its residual_fn as marshalled bytecode, not as a Lambda layer
    import h5py

    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, **SMALL)
    path = tmp_path / "m.h5"
    model.save(path)
    with h5py.File(path, "r+") as file:
        config = json.loads(file.attrs["model_config"])
        config["config"]["layers"][-1]["config"]["residual_fn"] = ["4wAAAAA=", None, None]
        config["config"]["layers"][-1]["config"]["residual_fn_type"] = "lambda"
        file.attrs["model_config"] = json.dumps(config)
    with pytest.raises(ValueError, match=r"holds a stored Python function \(residual_fn\): code that would run"):
        qmoe.load_model(path)


def test_load_model_imports_no_module_a_keras_file_names(tmp_path, monkeypatch):
    (tmp_path / "planted_module.py").write_text("import pathlib; pathlib.Path(__file__).with_name('ran').touch()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"module": "planted_module", "class_name": "Model", "config": {}}))
        archive.writestr("metadata.json", json.dumps({"keras_version": "2.18.0"}))
    with pytest.raises(ValueError, match=r"holds the module 'planted_module', which loading would import"):
        qmoe.load_model(path)
    assert not (tmp_path / "ran").exists() and "planted_module" not in sys.modules


def test_a_tf_directory_without_keras_metadata_is_refused_and_an_export_is_pointed_to_its_loader(tmp_path):
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, **SMALL)
    qmoe.export_saved_model(model, tmp_path / "served")
    with pytest.raises(ValueError, match=r"no keras_metadata.pb.*qmoe_tfq.load_saved_model"):
        qmoe.load_model(tmp_path / "served")


def test_a_checked_keras_file_still_loads(tmp_path):
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, **SMALL)
    qmoe.save_model(model, tmp_path / "m.keras")
    x = np.random.default_rng(0).uniform(0, 1, size=(3, 2)).astype(np.float32)
    np.testing.assert_allclose(qmoe.load_model(tmp_path / "m.keras").predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)


def test_load_model_loads_a_tf_directory_in_a_fresh_process(tmp_path):
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, **SMALL)
    x = np.random.default_rng(0).uniform(0, 1, size=(3, 2)).astype(np.float32)
    model.save(str(tmp_path / "m_tf"))
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent("""
        import sys, numpy as np, qmoe_tfq, tf_keras as keras
        model = keras.models.load_model(sys.argv[1])
        np.save(sys.argv[2], model.predict(np.load(sys.argv[3]), verbose=0))
    """)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m_tf"), str(tmp_path / "p.npy"),
                             str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), model.predict(x, verbose=0), atol=1e-6)


def observable_config(coefficient: dict) -> dict:
    config = qmoe.QMoELayer(QUBITS, **SMALL).get_config()
    observables = json.loads(config["observables"])
    observables[0]["items"][0][1] = coefficient  # PauliSum items: [[qubit, pauli] pairs, coefficient]
    return {**config, "observables": json.dumps(observables)}


def nested_powers(depth: int) -> dict:
    """(((10**16)**16)...)**16: each power within the per-node limits; depth 6 did not load in 150 s."""
    node = {"cirq_type": "sympy.Integer", "i": 10}
    for _ in range(depth):
        node = {"cirq_type": "sympy.Pow", "args": [node, {"cirq_type": "sympy.Integer", "i": 16}]}
    return node


@pytest.mark.parametrize("coefficient, message", [
    ({"cirq_type": "sympy.Pow", "args": [10, 100000000]}, "power with exponent 100000000"),
    ({"cirq_type": "sympy.Pow", "args": [{"cirq_type": "sympy.Integer", "i": 10},
                                         {"cirq_type": "sympy.Integer", "i": 10**9}]}, "integer powers up to 16"),
    ({"cirq_type": "sympy.Integer", "i": 10**30}, "integers up to"),
    ({"cirq_type": "sympy.factorial", "args": [100000]}, "holds a sympy.factorial expression"),
    (nested_powers(6), "nests powers whose exponents multiply to 256; configs may hold powers up to 16 in total"),
])
def test_cirq_json_bombs_are_refused_within_a_second(coefficient, message):
    config = observable_config(coefficient)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        qmoe.QMoELayer.from_config(config)
    assert time.perf_counter() - start < 1.0


KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    import qmoe_tfq as qmoe, tf_keras as keras
    model = keras.models.load_model(sys.argv[1])
    original = keras.Model.save
    def save_then_die(self, path, *args, **kwargs):
        original(self, path, *args, **kwargs)
        with open(path, "r+b") as file:  # half of the new file on disk, then the process dies
            file.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    keras.Model.save = save_then_die
    qmoe.save_model(model, sys.argv[1])
""")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_save_killed_mid_write_leaves_the_previous_model(tmp_path, suffix):
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, **SMALL)
    path = str(tmp_path / f"m{suffix}")
    qmoe.save_model(model, path)
    result = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, path], capture_output=True, text=True,
                            timeout=300, env=ENV)
    assert result.returncode == -9, result.stderr[-2000:]
    x = np.random.default_rng(1).uniform(0, 1, size=(3, 2)).astype(np.float32)
    np.testing.assert_allclose(qmoe.load_model(path).predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_a_failed_save_keeps_the_old_model_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"old model")

    class FullDisk(keras.Model):
        def save(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        qmoe.save_model(FullDisk(), path)
    assert path.read_bytes() == b"old model" and os.listdir(tmp_path) == ["m.keras"]
    with pytest.raises(FileNotFoundError, match="the directory .* does not exist"):
        qmoe.save_model(FullDisk(), tmp_path / "missing" / "m.keras")


@pytest.mark.parametrize("call, error, message", [
    (lambda: qmoe.encode(np.array([[0.1, np.nan]]), QUBITS), ValueError, r"NaN or inf \(rows \[0\]\)"),
    (lambda: qmoe.encode(np.array([[0.1, np.inf]]), QUBITS), ValueError, "NaN or inf"),
    (lambda: qmoe.encode(np.array([["a", "b"]]), QUBITS), TypeError, "features must be numbers"),
    (lambda: qmoe.QMoELayer(QUBITS, observables=[1j * cirq.Z(QUBITS[0])]), ValueError,
     r"observables\[0\] = .* is not Hermitian"),
    (lambda: qmoe.QMoELayer(QUBITS, backend="noisy", repetitions=10**9), ValueError,
     "repetitions=1000000000 is more than 1,000,000 samples"),
    (lambda: qmoe.ExpertPQC(qmoe.hardware_efficient_ansatz(QUBITS, 1), [cirq.Z(QUBITS[0])], repetitions=10**7),
     ValueError, "repetitions=10000000 is more than"),
    (lambda: qmoe.AngleEncoder(QUBITS)(tf.constant([[0.5, np.nan]])), tf.errors.InvalidArgumentError,
     "features must be finite"),
    (lambda: qmoe.QMoELayer(QUBITS, **SMALL)(tf.constant([[0.5, np.nan]])), tf.errors.InvalidArgumentError,
     "features must be finite"),
    (lambda: qmoe.QMoELayer(QUBITS, **SMALL)(tf.constant([[0.5, 2e38]])), tf.errors.InvalidArgumentError,
     r"features times scale=3.14159 overflow float32"),  # finite, but inf once scaled: trained NaN weights
    (lambda: qmoe.QMoELayer(QUBITS, observables=[float("nan") * cirq.Z(QUBITS[0])]), ValueError,
     r"observables\[0\] = .* has a NaN or infinite coefficient"),
    (lambda: qmoe.QMoELayer(QUBITS, encoder=qmoe.AngleEncoder(QUBITS), **SMALL)(tf.constant([["a", "b"]])),
     TypeError, r"takes float features \[batch, n_features\] .* got a tensor of dtype string"),
    (lambda: qmoe.QMoELayer(QUBITS, encoder=qmoe.AngleEncoder(QUBITS, n_features=2), **SMALL)(
        tf.zeros([3, 4])), ValueError, r"configured for n_features=2 but got inputs of shape \(3, 4\)"),
])
def test_bad_values_give_our_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_export_refuses_a_cirq_backend_and_exports_its_tfq_copy(tmp_path):
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, backend=cirq.Simulator(), **SMALL)
    with pytest.raises(ValueError, match=r"layers \['qmoe', 'expert_0', 'expert_1', 'router'\] run on a Cirq simulator"):
        qmoe.export_saved_model(model, tmp_path / "sm")
    assert not (tmp_path / "sm").exists()
    qmoe.export_saved_model(qmoe.with_backend(model, "noiseless"), tmp_path / "sm")
    assert qmoe.saving.is_saved_model(tmp_path / "sm")


def test_noisy_export_loads_with_the_readme_recipe(tmp_path):
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, backend="noisy", repetitions=50,
                                       noise=cirq.depolarize(0.01), **SMALL)
    qmoe.export_saved_model(model, tmp_path / "sm")
    recipe = qmoe.register_tfq_ops.__doc__.split("::")[1]
    script = textwrap.dedent(recipe) + textwrap.dedent("""
        import sys, tensorflow as tf
        serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        print(serve(features=tf.constant([[0.1, 0.9]]))["output"].shape)
    """)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "sm")], capture_output=True, text=True,
                            timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("(1, 2)")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("misuse")
    np.save(root / "x.npy", np.random.default_rng(0).uniform(0, 1, size=(6, 2)))
    np.save(root / "y.npy", np.array([0, 1, 0, 1, 0, 1]))
    np.save(root / "y5.npy", np.array([0, 1, 5, 1, 0, 1]))
    np.save(root / "y13.npy", np.array([1, 2, 3, 1, 2, 3]))
    np.save(root / "y_single.npy", np.array([0, 0, 0, 0, 0, 1]))
    np.save(root / "nan.npy", np.array([[0.1, np.nan]] * 6))
    np.save(root / "pickled.npy", np.array([{"a": 1}] * 2, dtype=object), allow_pickle=True)
    (root / "text.csv").write_text("0.1,abc\n0.2,0.3\n")
    (root / "fake.keras").write_text("not a model")
    (root / "a_file").write_text("")
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, **SMALL)
    qmoe.save_model(model, root / "m.keras")
    (root / "sm").mkdir()
    return root


@pytest.mark.parametrize("argv, message", [
    (["train", "--features", "{r}/text.csv", "--labels", "{r}/y.npy"], "cannot be read as numbers"),
    (["train", "--features", "{r}/x.npy", "--labels", "{r}/y_single.npy"],
     "class 1 has 1 sample; every class needs at least 2"),
    (["train", "--dataset", "moons", "--seed", "-1"], r"--seed: must be an integer in \[0, 2\*\*32 - 1\]"),
    (["train", "--dataset", "moons", "--out", "{r}/a_file/run"], "--out .* cannot be made: Not a directory"),
    (["bench", "--qubits", "0"], "--qubits: must be a positive integer, got '0'"),
    (["train", "--features", "{r}/x.npy", "--labels", "{r}/y13.npy"],
     r"every class present; classes 0 have no sample \(labels 1..C: subtract 1\)"),
    (["train", "--dataset", "moons", "--epochs", "0"], "--epochs: must be a positive integer, got '0'"),
    (["train", "--dataset", "moons", "--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["train", "--dataset", "moons", "--test-fraction", "1.5"], "strictly between 0 and 1, got '1.5'"),
    (["train", "--dataset", "moons", "--lr", "nan"], "--lr: must be a positive number, got 'nan'"),
    (["train", "--dataset", "moons", "--features", "{r}/x.npy"], "give either --dataset NAME or --features"),
    (["train", "--dataset", "moons", "--out", "{r}/a_file"], "is a file; give a directory"),
    (["train", "--features", "{r}/nan.npy", "--labels", "{r}/y.npy"], "contains NaN or inf"),
    (["train", "--features", "{r}/pickled.npy", "--labels", "{r}/y.npy"], "cannot be read as numbers"),
    (["predict", "--model", "{r}/m.keras", "--input", "{r}/x.npy", "--output", "{r}/no/p.npy"],
     "the directory .* does not exist"),
    (["predict", "--model", "{r}/m.keras", "--input", "{r}/x.npy", "--output", "{r}/p.txt"], "must end in .npy or .csv"),
    (["predict", "--model", "{r}/fake.keras", "--input", "{r}/x.npy"], "cannot load"),
    (["predict", "--model", "{r}/m.keras", "--input", "{r}/nan.npy"], "contains NaN or inf"),
    (["export", "--model", "{r}/m.keras", "--output", "{r}/sm"], "already exists"),
    (["evaluate", "--model", "{r}/m.keras", "--features", "{r}/x.npy", "--labels", "{r}/y5.npy"],
     "labels in .* go up to 5, but the model has 2 classes"),
    (["evaluate", "--model", "{r}/m.keras", "--features", "{r}/missing.npy", "--labels", "{r}/y.npy"],
     "does not exist"),
])
def test_cli_misuse_exits_2_with_one_line(files, capsys, argv, message):
    code = exit_code([a.format(r=files) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert re.search(message, err), err


def exit_code(argv: list[str]) -> int:
    """What the shell would see: argument errors exit through SystemExit, the rest return a code."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


@pytest.mark.parametrize("qubits, foreign", [
    (cirq.LineQubit.range(2), ["0", "1"]),  # TFQ's ids of LineQubit(0), LineQubit(1)
    ([QUBITS[0], cirq.GridQubit(5, 0)], ["5_0"]),
])
def test_input_circuits_on_other_qubits_are_refused_in_graph(qubits, foreign):
    moe = qmoe.QMoELayer(QUBITS, **SMALL)
    moe(qmoe.encode(np.array([[0.2, 0.4]]), QUBITS))
    bad = tfq.convert_to_tensor([cirq.Circuit(cirq.X.on_each(*qubits), cirq.Y.on_each(*qubits))] * 2)
    for call in (moe, tf.function(moe)):  # eager and traced
        with pytest.raises(tf.errors.InvalidArgumentError, match="input circuits act on qubits outside the layer") as info:
            call(bad)
        shown = re.search(r"foreign ids:\]?\s*\[([^\]]*)\]", str(info.value)).group(1)  # eager: [b'0' b'1']
        assert [i for i in re.findall(r"\w+", shown) if i != "b"] == foreign  # each once, however many ops use it
    subset = tfq.convert_to_tensor([cirq.Circuit(cirq.X(QUBITS[1]))])  # a subset of the layer's qubits is fine
    assert moe(subset).shape == (1, 2)


@pytest.mark.parametrize("backend", ["statevector", "noiseless"])
def test_input_circuits_with_a_nan_angle_are_refused_in_graph(backend):
    moe = qmoe.QMoELayer(QUBITS, **SMALL, backend=backend)
    nan = tfq.convert_to_tensor([cirq.Circuit(cirq.rx(float("nan"))(QUBITS[0]), cirq.ry(0.5)(QUBITS[1]))])
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?s)input circuits hold gate parameters that are not "
                                                             "finite numbers:.*nan"):
        moe(nan)  # every output was NaN
    assert np.isfinite(moe(qmoe.encode(np.array([[0.2, 0.4]]), QUBITS)).numpy()).all()


@pytest.mark.parametrize("symbol", ["theta_l00_q00_ry", "free"])  # one the layer's, one unknown
def test_input_circuits_with_symbols_are_refused_in_graph(symbol):
    moe = qmoe.QMoELayer(QUBITS, **SMALL)
    symbolic = tfq.convert_to_tensor([cirq.Circuit(cirq.rx(sympy.Symbol(symbol))(QUBITS[0]))])
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"(?s)must have every parameter resolved, but they use "
                                                             f"the symbols.*{symbol}"):
        moe(symbolic)


@pytest.mark.parametrize("backend", ["statevector", "noiseless"])
@pytest.mark.parametrize("layer", ["mixture", "expert"])
def test_strings_that_are_not_circuits_are_refused_in_graph(backend, layer):
    if layer == "mixture":
        moe = qmoe.QMoELayer(QUBITS, **SMALL, backend=backend)
    else:  # alone, as tfq.layers.PQC
        moe = qmoe.ExpertPQC(qmoe.Ansatz(layers=1).circuit(QUBITS), [cirq.Z(QUBITS[0])], backend=backend)
    good = qmoe.encode(np.array([[0.2, 0.4]]), QUBITS)
    operators = tfq.convert_to_tensor([[cirq.Z(QUBITS[0])]])[0]  # serialized, but a PauliSum
    for strings in (tf.constant(["hello"]), tf.constant([""]), tf.concat([good, operators], 0)):
        for call in (moe, tf.function(moe)):  # was a bare DataLossError from the proto parser
            with pytest.raises(tf.errors.InvalidArgumentError, match="(?s)inputs must be circuits serialized by "
                                                                     "tfq.convert_to_tensor.*these strings are not"):
                call(strings)
    assert np.isfinite(moe(good).numpy()).all()


@pytest.mark.parametrize("traced", [False, True])
def test_circuits_that_passed_the_check_skip_it_and_new_ones_do_not(traced, monkeypatch):
    from qmoe_tfq.execution.input_checks import CheckedCircuits, qubit_ids
    checked = CheckedCircuits(QUBITS, "moe")

    def call(circuits):  # traced anew after each change of the settings read when tracing
        return (tf.function(checked) if traced else checked)(circuits)
    a, b, c = (tfq.convert_to_tensor([cirq.Circuit(gate(QUBITS[0]))]) for gate in (cirq.X, cirq.Y, cirq.H))
    known = tf.concat([a, b], 0)
    assert call(known).numpy().tolist() == known.numpy().tolist() and int(checked.remembered()) == 2
    checked.allowed = qubit_ids([QUBITS[1]])  # what passed is not parsed again; anything new is, with its batch
    assert call(known).shape == (2,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="input circuits act on qubits outside the layer"):
        call(tf.concat([a, c], 0))
    assert int(checked.remembered()) == 2  # what failed is not kept
    checked.allowed = qubit_ids(QUBITS)
    monkeypatch.setattr(CheckedCircuits, "BUDGET", int(tf.reduce_sum(tf.strings.length(known))) + 1)
    assert call(c).shape == (1,) and int(checked.remembered()) == 2  # over the budget: checked, passed, not kept


def test_what_circuits_a_model_saw_stays_out_of_its_files(tmp_path):
    model = qmoe.build_qmoe_classifier(QUBITS, 2, **SMALL)
    circuits = qmoe.encode(np.array([[0.2, 0.4], [0.9, 0.1]]), QUBITS)
    expected = model.predict(circuits, verbose=0)  # the model's table now holds these circuits
    assert int(model.get_layer("qmoe")._checked_circuits.remembered()) == 2
    qmoe.export_saved_model(model, tmp_path / "sm")
    model.save(tmp_path / "keras_sm", save_format="tf")
    checkpoint = tf.train.Checkpoint(model=model)
    checkpoint.write(str(tmp_path / "ckpt" / "weights"),
                     tf.train.CheckpointOptions(experimental_enable_async_checkpoint=True))
    checkpoint.sync()
    for path in (tmp_path / "sm" / "variables" / "variables", tmp_path / "keras_sm" / "variables" / "variables",
                 tmp_path / "ckpt" / "weights"):
        names = [name for name, _ in tf.train.list_variables(str(path))]
        assert names and not [n for n in names if "_passed" in n or "table" in n], names
    reloaded = keras.models.load_model(tmp_path / "keras_sm")
    np.testing.assert_allclose(reloaded.predict(circuits, verbose=0), expected, atol=1e-6)
    served = qmoe.load_saved_model(tmp_path / "sm").signatures["serving_default"]
    for _ in range(2):  # its table starts empty, keeps what passed, and skips it the second time
        np.testing.assert_allclose(served(circuits=circuits)["output"].numpy(), expected, atol=1e-6)
    fresh = qmoe.build_qmoe_classifier(QUBITS, 2, **SMALL)
    fresh(circuits[:1])
    tf.train.Checkpoint(model=fresh).read(str(tmp_path / "ckpt" / "weights")).assert_existing_objects_matched()
    np.testing.assert_allclose(fresh.predict(circuits, verbose=0), expected, atol=1e-6)


def test_the_input_check_is_built_once_when_keras_traces_a_first_step_twice():
    from qmoe_tfq.execution.input_checks import check_input_circuits
    keras.utils.set_random_seed(0)
    before = check_input_circuits.experimental_get_tracing_count()
    inputs = keras.Input(shape=(), dtype=tf.string)
    moe = qmoe.QMoELayer(QUBITS, **SMALL, name="traced_once")
    model = keras.Model(inputs, keras.layers.Dense(2)(moe(inputs)))
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    circuits, labels = qmoe.encode(np.array([[0.1, 0.9], [0.8, 0.3]]), QUBITS), np.array([0, 1])
    model.train_on_batch(circuits, labels)  # Adam makes its slots in the first trace: Keras traces the step again
    model.train_on_batch(circuits, labels)
    model.predict_on_batch(circuits)
    # once for the symbolic call that built the model; every later graph reuses it
    assert check_input_circuits.experimental_get_tracing_count() - before == 1


def operations(graph, branches: bool = True) -> list[tf.Operation]:
    """The operations of `graph` and of every function it calls (without `branches`, not those of an If's
    branches)."""
    found = graph.get_operations()
    for function in graph._functions.values():  # noqa: SLF001  (TF keeps a graph's callees there)
        found += operations(function.graph) if hasattr(function, "graph") else []
    skipped = set() if branches else {op.get_attr(branch).name for op in found if op.type in ("If", "StatelessIf")
                                      for branch in ("then_branch", "else_branch")}
    return [op for op in found if op.graph.name not in skipped]


@pytest.mark.parametrize("inputs", ["features", "circuits"])
def test_input_checks_make_what_they_show_only_when_they_fail(inputs):
    # Shown data made every step (AsString, the largest |feature|) cost ~10% of a 4-qubit predict batch
    moe = qmoe.QMoELayer(QUBITS, **SMALL, encoder=qmoe.AngleEncoder(QUBITS) if inputs == "features" else None)
    batch = tf.constant([[0.1, 0.9]]) if inputs == "features" else qmoe.encode(np.array([[0.1, 0.9]]), QUBITS)
    graph = tf.function(moe).get_concrete_function(batch).graph
    checks = 1 if inputs == "features" else 4
    assert len([op for op in operations(graph) if op.type == "Assert"]) >= checks  # a callee's may show twice
    every_step = collections.Counter(op.type for op in operations(graph, branches=False))
    assert every_step["If"] >= checks
    assert every_step["Assert"] == every_step["AsString"] == 0
