"""Each example runs end to end in --quick mode and prints sensible numbers."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), "--quick", *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_paper_experiments_quick(tmp_path):
    out = run_example("paper_experiments.py", "--out", str(tmp_path))
    rows = re.findall(r"^\| (moons|cluster) \| 2 \| ([\d.]+) \+- [\d.]+ \| ([\d.]+) \+- [\d.]+ \| ([\d.]+)"
                      r" \+- [\d.]+ \| ([\d.]+ \+- [\d.]+|n/a) \|$", out, re.M)
    assert [r[0] for r in rows] == ["moons", "cluster"]
    assert rows[0][4] != "n/a" and rows[1][4] == "n/a"  # re-uploading needs classical features
    assert all(0.5 < float(a) <= 1.0 for row in rows for a in row[1:2])  # the QNN baseline learns
    assert max(float(row[3]) for row in rows) > 0.6                       # and so does top-1 QMoE
    for png in ("scaling.png", "gates_moons.png", "gates_cluster.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert "| 2 | QMoE top-1 | 24 |" in (tmp_path / "results.md").read_text()  # scaling table


def test_noise_study_quick():
    out = run_example("noise_study.py")
    table = dict((float(p), (float(a), float(b))) for p, a, b in
                 re.findall(r"^\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", out, re.M))
    assert sorted(table) == [0.0, 0.001, 0.01]
    assert table[0.0][0] > 0.7 and table[0.0][1] > 0.7


def test_google_hardware_quick():
    out = run_example("google_hardware.py")
    exact, on_qvm = map(float, re.search(r"exact simulator ([\d.]+), weber QVM with 300 shots ([\d.]+)", out).groups())
    assert exact > 0.6 and on_qvm > 0.6
    assert re.search(r"encoder \+ expert 0, sample 0\s+\d+\s+\d+\s+->\s+\d+\s+\d+", out)
    assert "QVM fine-tuning step 1 (parameter shift): loss" in out
