"""The QMoE paper's accuracy claim at 8 qubits: QCNN experts on quantum data, against fair baselines.

Models (circuit input, readouts -> softmax Dense(2)):
- QMoE top-1 and QMoE dense: 3 QCNN experts (`qmoe.QCNN()`), the router a QCNN too.
- QCNN: one QCNN alone, the circuit each QMoE expert is (Cong et al.; TFQ's QCNN tutorial).
- QNN, per-sample cost: the hardware-efficient ansatz with as many two-qubit gates per sample as a
  top-1 QMoE runs (its router and one expert).
- QNN, total parameters: the hardware-efficient ansatz with about as many circuit parameters as the QMoE.
Data (`qmoe_tfq.quantum_data`): the excited cluster states of TFQ's QCNN tutorial, and the mixture of
cluster, GHZ and product families, each hiding its label elsewhere. Reported: test accuracy (mean +- std
over seeds; paired t-test of QMoE top-1 against each baseline on the same splits), circuit parameters,
circuits and two-qubit gates per sample, training time; on the mixture how the router separates the
families (total-variation distance between the families' mean gates, mutual information between family and
top expert).

    python examples/qcnn_study.py            # 8 qubits, 5 seeds
    python examples/qcnn_study.py --quick    # 4 qubits, 1 seed, on qsim: half a minute
Writes qcnn_study.md to --out (examples/results by default).
"""
from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import qmoe_tfq as qmoe  # noqa: F401  (sets up tf_keras first)
import cirq
import numpy as np
import tensorflow as tf
import tf_keras as keras
from scipy import stats

from qmoe_tfq import quantum_data
from qmoe_tfq.circuits import EXPERT_PREFIX, Ansatz

HERE = Path(__file__).parent
DATA = {"cluster": ("cluster",), "mixture": tuple(quantum_data.FAMILIES)}
N_EXPERTS = 3
QMOE = ("QMoE top-1", "QMoE dense")
MODELS = (*QMOE, "QCNN", "QNN, per-sample cost", "QNN, total parameters")


def two_qubit_gates(circuit: cirq.Circuit) -> int:
    return sum(len(op.qubits) == 2 for op in circuit.all_operations())


def build(kind: str, qubits: list[cirq.Qid], lr: float, backend: str) -> tuple[keras.Model, int, int]:
    """(compiled model, circuits per sample, two-qubit gates per sample)."""
    qcnn = qmoe.QCNN()
    readout = [cirq.Z(q) for q in qcnn.output_qubits(qubits)]
    expert_gates = two_qubit_gates(qcnn.circuit(qubits))
    inputs = keras.Input(shape=(), dtype=tf.string)
    if kind in QMOE:
        layer = qmoe.QMoELayer(qubits, N_EXPERTS, ansatz=qcnn, observables=readout, name="qmoe",
                               top_k=1 if kind == "QMoE top-1" else None, execution=backend)
        readouts, circuits = layer(inputs), 2 if kind == "QMoE top-1" else 1 + N_EXPERTS
    else:
        if kind == "QCNN":
            circuit, observables, circuits = qcnn.circuit(qubits, prefix=EXPERT_PREFIX), readout, 1
        else:
            ring = len(qubits)  # CNOTs per layer of the default ansatz
            layers = (round(2 * expert_gates / ring) if kind == "QNN, per-sample cost"
                      else round((N_EXPERTS + 1) * len(cirq.parameter_symbols(qcnn.circuit(qubits))) / (2 * ring)))
            circuit, observables, circuits = Ansatz(layers=layers).circuit(qubits), [cirq.Z(q) for q in qubits], 1
        readouts = qmoe.ExpertPQC(circuit, observables, name="qnn", backend=backend)(inputs)
        expert_gates = two_qubit_gates(circuit)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(readouts))
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, circuits, expert_gates * (2 if kind == "QMoE top-1" else circuits)


def separation(gates: np.ndarray, families: np.ndarray) -> tuple[float, float]:
    """(mean total-variation distance between the families' mean gates, mutual information in bits between
    family and top expert) on `gates` <[N, E]>."""
    means = [gates[families == f].mean(axis=0) for f in np.unique(families)]  # [F] x <[E]>
    tv = np.mean([0.5 * np.abs(a - b).sum() for a, b in itertools.combinations(means, 2)])
    joint = np.zeros((len(means), gates.shape[1]))  # <[F, E]> counts of (family, top expert)
    np.add.at(joint, (families, gates.argmax(axis=1)), 1.0)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) @ joint.sum(axis=0, keepdims=True)
    mask = joint > 0
    return float(tv), float((joint[mask] * np.log2(joint[mask] / outer[mask])).sum())


def run(data: str, kind: str, seed: int, args) -> dict:
    qubits = cirq.GridQubit.rect(1, args.qubits)
    split = quantum_data.generate(qubits, args.samples, DATA[data], seed=seed)
    x_train, x_test, y_train, y_test = split.tensors()
    keras.utils.set_random_seed(seed)
    model, circuits, gates = build(kind, qubits, args.lr, args.backend)
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=16, verbose=0)
    result = {"accuracy": model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"],
              "params": sum(int(np.prod(v.shape)) for v in model.trainable_variables if "parameters" in v.name),
              "circuits": circuits, "gates": gates, "seconds": time.perf_counter() - start}
    if kind in QMOE and data == "mixture":
        result["separation"] = separation(model.get_layer("qmoe").gate_weights(x_test).numpy(), split.family_test)
    keras.backend.clear_session()
    return result


def paired(runs: list[dict], baseline: list[dict]) -> str:
    """QMoE top-1 minus the baseline on the same splits: mean +- std, and the paired t-test's p."""
    a, b = np.array([r["accuracy"] for r in runs]), np.array([r["accuracy"] for r in baseline])
    p = "n/a" if len(a) < 2 or np.allclose(a - b, (a - b)[0]) else f"{stats.ttest_rel(a, b).pvalue:.3f}"
    return f"{np.mean(a - b):+.3f} +- {np.std(a - b):.3f} (p {p})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--backend", default="auto", choices=["auto", "statevector", "noiseless"])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        # qsim: at 4 qubits compiling the statevector kernel would take most of the minute
        args.qubits, args.seeds, args.samples, args.epochs, args.backend = 4, 1, 48, 2, "noiseless"
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"# QCNN experts at {args.qubits} qubits", "",
             f"`python examples/qcnn_study.py{' --quick' if args.quick else ''}`: {args.seeds} seeds, "
             f"{args.samples} samples (70% train), {args.epochs} epochs, batch 16, Adam {args.lr}; "
             f"QMoE of {N_EXPERTS} QCNN experts; backend {args.backend!r}.", ""]
    for data in DATA:
        results = {kind: [run(data, kind, seed, args) for seed in range(args.seeds)] for kind in MODELS}
        lines += [f"## {data}", "", "| model | test accuracy | QMoE top-1 minus it | circuit parameters | "
                  "circuits / sample | two-qubit gates / sample | training (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for kind, runs in results.items():
            accuracy = np.array([r["accuracy"] for r in runs])
            versus = "" if kind == "QMoE top-1" else paired(results["QMoE top-1"], runs)
            lines.append(f"| {kind} | {accuracy.mean():.3f} +- {accuracy.std():.3f} | {versus} | {runs[0]['params']} | "
                         f"{runs[0]['circuits']} | {runs[0]['gates']} | {np.mean([r['seconds'] for r in runs]):.1f} |")
            print(f"{data:<8} {kind:<22} accuracy {accuracy.mean():.3f} +- {accuracy.std():.3f}", flush=True)
        if data == "mixture":
            lines += ["", "Router separation of the families (test set, mean over seeds): total-variation distance "
                      "between the families' mean gates (0: the same, 1: disjoint experts) and mutual information "
                      f"between family and top expert (bits; at most log2(3) = {np.log2(3):.2f}).", "",
                      "| model | TV distance | mutual information |", "|---|---:|---:|"]
            for kind in QMOE:
                tv, mi = np.mean([r["separation"] for r in results[kind]], axis=0)
                lines.append(f"| {kind} | {tv:.2f} | {mi:.2f} |")
        lines.append("")
    (args.out / "qcnn_study.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'qcnn_study.md'}")


if __name__ == "__main__":
    main()
