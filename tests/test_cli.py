import re
import subprocess
import sys

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
    (["export", "--model", "{root}/x.npy", "--output", "{root}/out"], "is not a Keras model file"),
])
def test_cli_errors_exit_2_with_a_message(saved, capsys, args, message):
    root, _ = saved
    np.save(root / "bad.npy", np.zeros((4, 3), np.float32))
    if not (root / "sm").exists():
        main(["export", "--model", str(root / "model.keras"), "--output", str(root / "sm")])
    assert main([a.format(root=root) for a in args]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_module_entry_point_shows_help():
    result = subprocess.run([sys.executable, "-m", "qmoe_tfq", "predict", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--model" in result.stdout
    result = subprocess.run([sys.executable, "-m", "qmoe_tfq", "frobnicate"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "invalid choice: 'frobnicate'" in result.stderr
