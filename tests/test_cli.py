import os
import re
import subprocess
import sys
from pathlib import Path

import cirq
import numpy as np
import pytest

import qmoe_tfq as qmoe
from qmoe_tfq.cli import main

QUBITS = cirq.GridQubit.rect(1, 2)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small encoder model saved as .keras, plus inputs and its predictions."""
    root = tmp_path_factory.mktemp("cli")
    model = qmoe.build_qmoe_classifier(QUBITS, 2, n_features=2, n_experts=2, expert_layers=1,
                                       router_layers=1, top_k=1)
    x = np.random.default_rng(0).uniform(0, 1, size=(4, 2)).astype(np.float32)
    np.save(root / "x.npy", x)
    np.savetxt(root / "x.csv", x, delimiter=",")
    model.save(root / "model.keras")
    return root, model.predict(x, verbose=0)


def test_export_then_predict_from_npy_and_csv(saved, capsys):
    root, expected = saved
    assert main(["export", "--model", str(root / "model.keras"), "--output", str(root / "sm")]) == 0
    assert "serving_default takes features float32[None, 2]" in capsys.readouterr().out
    assert main(["predict", "--model", str(root / "sm"), "--input", str(root / "x.npy"),
                 "--output", str(root / "p.npy")]) == 0
    np.testing.assert_allclose(np.load(root / "p.npy"), expected, atol=1e-6)
    assert "wrote 4 predictions" in capsys.readouterr().out
    assert main(["predict", "--model", str(root / "model.keras"), "--input", str(root / "x.csv")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert [int(line.split("\t")[0]) for line in printed] == expected.argmax(axis=1).tolist()


@pytest.mark.parametrize("args, message", [
    (["predict", "--model", "{root}/model.keras", "--input", "{root}/missing.npy"], "does not exist"),
    (["predict", "--model", "{root}", "--input", "{root}/x.npy"], "is not a model"),
    (["predict", "--model", "{root}/sm", "--input", "{root}/bad.npy"],
     r"expects features of dtype float32 and shape \[batch, 2\], got dtype float32 and shape \[4, 3\]"),
    (["export", "--model", "{root}/x.npy", "--output", "{root}/out"], "is not a Keras model \\(a .keras or .h5 file"),
])
def test_cli_errors_exit_2_with_a_message(saved, capsys, args, message):
    root, _ = saved
    np.save(root / "bad.npy", np.zeros((4, 3), np.float32))
    if not (root / "sm").exists():
        main(["export", "--model", str(root / "model.keras"), "--output", str(root / "sm")])
    assert main([a.format(root=root) for a in args]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_module_entry_point_runs_the_command_line():
    result = subprocess.run([sys.executable, "-m", "qmoe_tfq", "frobnicate"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "invalid choice: 'frobnicate'" in result.stderr


@pytest.mark.filterwarnings("ignore:.*received no sample in the last training epoch:RuntimeWarning")  # a tiny model
def test_train_then_evaluate_and_predict(tmp_path, capsys):
    from conftest import separable_data

    x, y = separable_data(60, 2)
    x = x * np.float32([1000.0, 3.0]) + np.float32([500.0, -1.0])  # raw values, as in a CSV (wine's reach 1680)
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "y.csv", y, fmt="%d")
    out = tmp_path / "run"
    assert main(["train", "--features", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.csv"),
                 "--experts", "2", "--top-k", "1", "--expert-layers", "1", "--router-layers", "1",
                 "--epochs", "8", "--batch-size", "16", "--lr", "0.1", "--out", str(out)]) == 0
    import json
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.75 and metrics["n_train"] == 42
    assert np.array(metrics["class_gates"]).shape == (2, 2)
    assert (out / "gates.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "model.keras"), "--features", str(tmp_path / "x.npy"),
                 "--labels", str(tmp_path / "y.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.75
    assert main(["predict", "--model", str(out / "model.keras"), "--input", str(tmp_path / "x.npy")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 60


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "1"], "give --dataset NAME, or both --features FILE and --labels FILE"),
    (["train", "--features", "{x}", "--labels", "{bad_labels}"], "has 3 labels for 60 samples"),
    (["train", "--features", "{x}", "--labels", "{y}", "--top-k", "9"], "top_k=9 is more than n_experts"),
])
def test_train_errors(tmp_path, capsys, args, message):
    x = np.random.default_rng(0).uniform(size=(60, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", (x[:, 0] > 0.5).astype(np.int32))
    np.save(tmp_path / "bad.npy", np.zeros(3, np.int32))
    paths = {"x": tmp_path / "x.npy", "y": tmp_path / "y.npy", "bad_labels": tmp_path / "bad.npy"}
    assert main([a.format(**paths) for a in args]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_bench_quick_writes_table_and_plot(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "throughput.md").read_text()
    rows = [tuple(map(float, row)) for row in re.findall(
        r"^\| \([a-e]\) [^|]+ \| ([\d.]+) \(±\d+%\) \| ([\d.]+) \(±\d+%\) \| ([\d.]+)x \| ([\d.]+)x \|$",
        table, re.M)]
    assert len(rows) == 10  # 5 models x 2 inputs
    for first in (0, 5):  # each input's ratios are to its naive model (a)
        base_train, base_infer = rows[first][:2]
        for train, infer, train_ratio, infer_ratio in rows[first:first + 5]:
            assert train_ratio == pytest.approx(train / base_train, abs=0.01)
            assert infer_ratio == pytest.approx(infer / base_infer, abs=0.01)
    assert "| n_experts | 1 | 2 |" in table and "| batch | 8 | 16 |" in table  # --quick's sweeps
    sweeps = re.findall(r"^\| (top_k=1|dense) \| ([\d.]+) / ([\d.]+) \| ([\d.]+) / ([\d.]+) \|$", table, re.M)
    assert [kind for kind, *_ in sweeps] == ["top_k=1", "dense"] * 2
    assert all(float(ms) > 0 for _, *cells in sweeps for ms in cells)
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "export", "bench"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: qmoe-tfq {command}" in capsys.readouterr().out


def test_unknown_option_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--colour", "blue"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --colour blue" in capsys.readouterr().err


def test_csv_with_a_header_row_reads_as_numbers(tmp_path):
    from qmoe_tfq.cli_files import read_array

    (tmp_path / "x.csv").write_text("petal,sepal\n0.5,1.5\n2,3\n")  # as pandas' to_csv writes it
    np.testing.assert_array_equal(read_array(str(tmp_path / "x.csv"), "input"), [[0.5, 1.5], [2.0, 3.0]])


def test_predict_takes_a_tf_format_keras_directory(tmp_path, capsys):
    model = qmoe.build_qmoe_classifier(cirq.GridQubit.rect(1, 2), 2, n_features=2, n_experts=2, expert_layers=1,
                                       router_layers=1)
    x = np.random.default_rng(0).uniform(0, 1, (3, 2)).astype(np.float32)
    model.save(str(tmp_path / "m_tf"))
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", "--model", str(tmp_path / "m_tf"), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "p.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("argv, shown", [
    (["--help"], "usage: qmoe-tfq [-h] COMMAND"),
    (["trian"], "invalid choice: 'trian'"),
    (["train", "--epochs", "0"], "--epochs: must be a positive integer"),
])
def test_the_command_answers_help_and_usage_errors_before_loading_tensorflow(argv, shown):
    script = Path(sys.executable).parent / "qmoe-tfq"  # the console script `pip install` made
    done = subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})  # each import to stderr
    assert shown in done.stdout + done.stderr
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "qmoe_tfq.cli_files" in imported and "tensorflow" not in imported
