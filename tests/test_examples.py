"""Each example runs end to end in --quick mode and prints sensible numbers."""
import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), "--quick", *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_paper_experiments_quick(tmp_path):
    out = run_example("paper_experiments.py", "--out", str(tmp_path))
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[3:-1]]
            for line in out.splitlines() if re.match(r"^\| (moons|mixture) \| 2 \| \d", line)}
    assert sorted(rows) == ["mixture", "moons"]
    accuracy = {name: [float(c.split(" +- ")[0]) if c != "n/a" else None for c in cells] for name, cells in rows.items()}
    qnn, dense, top1, reupload, coherent = zip(*[accuracy["moons"], accuracy["mixture"]])
    assert all(0.5 < a <= 1.0 for a in qnn)                  # the QNN baseline learns both
    assert max(top1) > 0.6 and reupload[0] > 0.6 and coherent[0] > 0.6
    assert reupload[1] is None and coherent[1] is None     # QMoE+ options need classical features
    paired = re.search(r"^\| mixture \| 2 \| ([+-][\d.]+) \+- 0.000 \(p n/a\) \|", out, re.M)
    assert paired and abs(float(paired.group(1)) - (dense[1] - qnn[1])) < 2e-3  # one seed: the plain difference
    families = re.findall(r"^\| (cluster|ghz|product) \| [01] \| ([\d.]+) \| ([\d.]+) \|$", out, re.M)
    assert [f[0] for f in families] == ["cluster", "ghz", "product"]
    assert all(0.0 <= float(share) <= 1.0 and 0.0 <= float(entropy) <= math.log(2) + 1e-6
               for _, share, entropy in families)
    for png in ("scaling.png", "gates_moons.png", "gates_mixture.png", "gates_mixture_families.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert "| 2 | QMoE top-1 | 24 |" in (tmp_path / "results.md").read_text()  # scaling table


def test_noise_study_quick_on_quantum_data():
    out = run_example("noise_study.py", "--data", "cluster", "--levels", "0", "0.01")
    table = dict((float(p), (float(a), float(b))) for p, a, b in
                 re.findall(r"^\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", out, re.M))
    assert sorted(table) == [0.0, 0.01]
    assert table[0.0][0] > 0.7 and table[0.0][1] > 0.7


def test_google_hardware_quick():
    out = run_example("google_hardware.py")
    exact, on_qvm = map(float, re.search(r"exact simulator ([\d.]+), weber QVM with 300 shots ([\d.]+)", out).groups())
    assert exact > 0.6 and on_qvm > 0.6
    assert re.search(r"encoder \+ expert 0, sample 0\s+\d+\s+\d+\s+->\s+\d+\s+\d+", out)
    assert "QVM fine-tuning step 1 (parameter shift): loss" in out


def test_hybrid_comparison_quick():
    out = run_example("hybrid_comparison.py")
    rows = re.findall(r"^\| (.+?) \| (\d+) \| ([\d.]+) \+- [\d.]+ \| [\d.]+ \|$", out, re.M)
    assert [r[0] for r in rows] == ["quantum router + PQC experts (paper)", "quantum router + classical experts",
                                    "classical router + PQC experts", "classical router + classical experts",
                                    "single QNN"]
    assert all(float(r[2]) > 0.6 for r in rows)  # moons: every variant learns
    assert re.search(r"^best: .+ \([\d.]+\)$", out, re.M)


def test_routing_policies_quick(tmp_path):
    out = run_example("routing_policies.py", "--out", str(tmp_path))
    rows = {name: [float(v) for v in values] for name, *values in
            re.findall(r"^\| (.+?) \| ([\d.]+) \+- [\d.]+ \| ([+-][\d.]+) \+- [\d.]+ \| ([\d.]+) \| ([01]) of 1 \| "
                       r"([\d.]+) \| ([01]) of 1 \| ([\d.]+) \| ([\d.]+) \|$", out, re.M)}
    assert list(rows) == ["no balancing", "aux loss (default)", "bias (loss-free)", "information loss",
                          "bias + information loss", "expert choice", "expert choice, capacity 1"]
    for policy in ("expert choice", "expert choice, capacity 1"):  # exactly balanced by construction
        accuracy, paired, final, final_kept, trained, trained_kept, unused, entropy = rows[policy]
        assert final == trained == 0.125 and final_kept == trained_kept == 1 and unused == 0 and entropy == 1.0
    assert rows["aux loss (default)"][1] == 0.0 and all(0.0 <= row[7] <= 1.0 for row in rows.values())
    assert (tmp_path / "routing_policies.png").read_bytes()[:4] == b"\x89PNG"


def test_stacking_quick():
    out = run_example("stacking.py")
    results = re.findall(r"^(\w+): test accuracy ([\d.]+); reloaded predictions differ by ([\d.e+-]+)$", out, re.M)
    assert [name for name, _, _ in results] == ["two_qmoe_layers", "classical_then_qmoe"]
    assert all(float(accuracy) > 0.6 and float(difference) < 1e-5 for _, accuracy, difference in results)


def test_qcnn_study_quick(tmp_path):
    run_example("qcnn_study.py", "--out", str(tmp_path))
    table = (tmp_path / "qcnn_study.md").read_text()
    assert (tmp_path / "qcnn_noise.png").stat().st_size > 0 and (tmp_path / "qcnn_routing.png").stat().st_size > 0
    (tmp_path / "qcnn_study.md").unlink()
    assert run_example("qcnn_study.py", "--out", str(tmp_path), "--write-only").startswith(f"wrote {tmp_path}")
    assert (tmp_path / "qcnn_study.md").read_text() == table  # the tables come from the saved json alone
    saved = json.loads((tmp_path / "qcnn_study.json").read_text())
    saved["results"]["hard"]["QCNN"][0]["accuracy"]["0"] = 0.123
    (tmp_path / "qcnn_study.json").write_text(json.dumps(saved))
    resumed = run_example("qcnn_study.py", "--out", str(tmp_path), "--resume")
    assert " seed " not in resumed  # every model was in the json: nothing trained
    assert "| QCNN | 0.123 +- 0.000 |" in (tmp_path / "qcnn_study.md").read_text()
    rows = {(section, cells[0]): cells[1:] for section, body in re.findall(r"## (\w+)\n\n(.*?)(?:\n\n|$)", table, re.S)
            for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in body.splitlines()[2:])}
    assert {name for _, name in rows} == {"QMoE top-1", "QMoE dense", "QMoE top-1, Z/X router", "QMoE dense, Z/X router",
                                          "QMoE top-1, correlator router", "QCNN", "QCNN per family",
                                          "QNN, per-sample cost", "QNN, total parameters"}
    assert float(rows["hard", "QMoE dense"][0].split(" +- ")[0]) > 0.6  # chance: 0.5
    # 4 qubits: a QCNN has 2 levels of 15 + 6 symbols and 5 * 3 + 3 two-qubit gates; the QMoE runs 2 per sample,
    # the Z/X router's one-layer ansatz 4 CNOTs; the per-family QCNNs are three.
    assert rows["hard", "QCNN"][2:5] == ["42", "1", "18"]
    assert int(rows["hard", "QMoE top-1"][5]) == int(rows["hard", "QCNN"][5]) > 20  # a QCNN router is as deep
    assert int(rows["hard", "QNN, total parameters"][5]) > int(rows["hard", "QNN, per-sample cost"][5])
    assert rows["hard", "QMoE top-1"][2:5] == [str(4 * 42), "2", "36"]
    assert rows["hard", "QMoE dense, Z/X router"][3:5] == ["4", str(4 + 3 * 18)]
    assert rows["hard", "QMoE top-1, correlator router"][2:5] == [str(3 * 42 + 4), "2", "18"]  # an rz per qubit
    assert rows["hard", "QCNN per family"][2] == str(3 * 42)
    assert rows["hard", "QNN, per-sample cost"][4] == "36"  # the baseline matched to the top-1 QMoE
    noisy = re.findall(r"^\| (QNN, total parameters) \| 84 \| ([\d.]+) \+- [\d.]+ \| ([\d.]+) \+- [\d.]+ \| "
                       r"([-+][\d.]+) \+- [\d.]+ \(p [^)]+\) \|$", table, re.M)
    # the noise table's p = 0 column is the exact accuracy; p = 0.01 is an accuracy too, and the paired difference
    # at p = 0.01 is the reference's accuracy there minus it
    assert len(noisy) == 1 and noisy[0][1] == rows["hard", "QNN, total parameters"][0].split(" +- ")[0]
    assert 0 <= float(noisy[0][2]) <= 1
    reference = re.search(r"^\| QMoE top-1, Z/X router \| 22 \| [\d.]+ \+- [\d.]+ \| ([\d.]+) \+- [\d.]+ \|  \|$",
                          table, re.M)
    assert abs(float(reference[1]) - float(noisy[0][2]) - float(noisy[0][3])) < 2e-3
    separation = re.findall(r"^\| QMoE [^|]+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$",
                            table, re.M)
    assert len(separation) == 5 and all(0 <= float(tv) <= 1 and 0 <= float(mi) <= np.log2(3) + 1e-6
                                        and all(1 / 3 - 1e-6 <= float(p) <= 1 for p in purity)
                                        for tv, mi, *purity in separation)


def test_qcnn_study_separation_measures_families_and_label_cells():
    spec = importlib.util.spec_from_file_location("qcnn_study", EXAMPLES / "qcnn_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    # family 0 all on expert 0; family 1 split by label between experts 1 and 2
    gates = np.eye(3)[[0, 0, 1, 2, 1, 2]]
    families, labels = np.array([0, 0, 1, 1, 1, 1]), np.array([0, 1, 0, 1, 0, 1])
    tv, mi, cells, *purity = study.separation(gates, families, labels)
    # mean gates [1, 0, 0] and [0, .5, .5]; H(expert) = H(1/3, 1/3, 1/3), H(expert | family) = 2/3 * 1 bit
    assert np.allclose([tv, mi, cells, *purity], [1.0, np.log2(3) - 2 / 3, 1.0, 1.0, 0.5])
