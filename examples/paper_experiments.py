"""The QMoE paper's three claims, measured with this library (arXiv 2507.05190).

1. Accuracy: QMoE vs a single QNN with the same number of circuit parameters, on classical data
   (digits 0-3, breast cancer, moons; PCA to the qubit count) and quantum data (excited cluster
   states, fed as circuits), mean +- std over seeds, for several expert counts, dense and top-1,
   and the QMoE+ options: data re-uploading experts and coherent aggregation.
2. Scaling: parameters, training time per epoch and accuracy against the number of experts.
3. Interpretability: mean gate per class and expert (heatmap), routing entropy and how
   specialised each expert is.

    python examples/paper_experiments.py                 # full: 4 data sets x E in {2,4,8} x 3 seeds
    python examples/paper_experiments.py --quick         # a minute: 2 data sets, E=2, 1 seed
Writes results.md and PNG figures to --out (examples/results by default).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import qmoe_tfq as qmoe  # noqa: F401  (sets up tf_keras first)
import cirq
import matplotlib
import numpy as np
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq import datasets
from qmoe_tfq.interpretability import plot_gate_heatmap, routing_statistics
from qmoe_tfq.models import matching_qnn_layers

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
REUPLOAD = "QMoE+ re-upload"
COHERENT = "QMoE+ coherent"
CLASSICAL_ONLY = (REUPLOAD, COHERENT)  # both upload classical features more than once
CLASS_NAMES = {"digits": ["digit 0", "digit 1", "digit 2", "digit 3"], "breast_cancer": ["malignant", "benign"],
               "moons": ["moon 0", "moon 1"], "cluster": ["ground", "excited"]}


def load(name: str, qubits: list[cirq.Qid], n_samples: int, seed: int):
    """(x_train, x_test, y_train, y_test, n_features or None for circuit input)."""
    if name == "cluster":
        c_train, c_test, y_train, y_test = datasets.excited_cluster_states(qubits, n_samples, seed=seed)
        return tfq.convert_to_tensor(c_train), tfq.convert_to_tensor(c_test), y_train, y_test, None
    classes = (0, 1, 2, 3) if name == "digits" else (3, 5)
    x_train, x_test, y_train, y_test = datasets.load(name, len(qubits), classes=classes,
                                                     n_samples=n_samples, seed=seed)
    return x_train, x_test, y_train, y_test, x_train.shape[1]


def circuit_parameters(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables if "parameters" in v.name)


def run(name: str, model_kind: str, n_experts: int, seed: int, args) -> dict:
    """Trains one model; returns its test accuracy, parameter counts and seconds per epoch."""
    qubits = cirq.GridQubit.rect(1, args.qubits)
    x_train, x_test, y_train, y_test, n_features = load(name, qubits, args.samples, seed)
    n_classes = int(y_train.max()) + 1
    keras.utils.set_random_seed(seed)
    if model_kind == "QNN":
        model = qmoe.build_qnn_classifier(qubits, n_classes, n_features=n_features,
                                          n_layers=matching_qnn_layers(n_experts, 1, 1), learning_rate=args.lr)
    else:
        model = qmoe.build_qmoe_classifier(qubits, n_classes, n_features=n_features, n_experts=n_experts,
                                           expert_layers=1 + (model_kind == REUPLOAD), router_layers=1,
                                           learning_rate=args.lr, reuploading=model_kind == REUPLOAD,
                                           aggregation="coherent" if model_kind == COHERENT else "classical",
                                           top_k=1 if model_kind == "QMoE top-1" else None)
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)
    seconds = (time.perf_counter() - start) / args.epochs
    accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    return {"accuracy": accuracy, "circuit_params": circuit_parameters(model), "params": model.count_params(),
            "seconds_per_epoch": seconds, "model": model, "x_test": x_test, "y_test": y_test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer", "moons", "cluster"])
    parser.add_argument("--experts", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--qubits", type=int, default=4)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.experts, args.seeds, args.samples, args.epochs = ["moons", "cluster"], [2], 1, 80, 3
    args.out.mkdir(parents=True, exist_ok=True)

    kinds = ["QNN", "QMoE dense", "QMoE top-1", REUPLOAD, COHERENT]
    results: dict[tuple[str, str, int], list[dict]] = {}
    for name in args.datasets:
        for n_experts in args.experts:
            for kind in kinds:
                if kind in CLASSICAL_ONLY and name == "cluster":
                    continue  # quantum data has no classical features to upload again
                runs = [run(name, kind, n_experts, seed, args) for seed in range(args.seeds)]
                results[(name, kind, n_experts)] = runs
                accuracies = [r["accuracy"] for r in runs]
                print(f"{name:<14} E={n_experts:<2} {kind:<11} accuracy {np.mean(accuracies):.3f} "
                      f"+- {np.std(accuracies):.3f}  ({runs[0]['circuit_params']} circuit params, "
                      f"{np.mean([r['seconds_per_epoch'] for r in runs]):.2f} s/epoch)")

    lines = ["# QMoE paper experiments", "",
             f"`python examples/paper_experiments.py{' --quick' if args.quick else ''}`: {args.qubits} qubits, "
             f"{args.samples} samples (70/30 split), {args.epochs} epochs, {args.seeds} seed(s); one-layer "
             "experts and router; the QNN has the same number of circuit parameters "
             "(E + 1 layers). Test accuracy, mean +- std over seeds.", "",
             "QMoE+ re-upload: dense, two-layer experts with the features re-uploaded before each layer "
             "and learnable input scaling (so more parameters than the others). QMoE+ coherent: the router "
             "is a log2(E)-qubit register that controls every expert in one circuit. Neither is defined "
             "for quantum data.",
             "", "| data set | E | " + " | ".join(kinds) + " |", "|---|---:|" + "---:|" * len(kinds)]
    for name in args.datasets:
        for n_experts in args.experts:
            cells = []
            for kind in kinds:
                if (name, kind, n_experts) not in results:
                    cells.append("n/a")
                    continue
                accuracies = [r["accuracy"] for r in results[(name, kind, n_experts)]]
                cells.append(f"{np.mean(accuracies):.3f} +- {np.std(accuracies):.3f}")
            lines.append(f"| {name} | {n_experts} | " + " | ".join(cells) + " |")

    lines += ["", "Scaling (first data set):", "",
              "| E | model | circuit params | s/epoch | accuracy |", "|---:|---|---:|---:|---:|"]
    first = args.datasets[0]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for kind in [k for k in kinds if (first, k, args.experts[0]) in results]:
        params, seconds, accuracy = [], [], []
        for n_experts in args.experts:
            runs = results[(first, kind, n_experts)]
            params.append(runs[0]["circuit_params"])
            seconds.append(np.mean([r["seconds_per_epoch"] for r in runs]))
            accuracy.append(np.mean([r["accuracy"] for r in runs]))
            lines.append(f"| {n_experts} | {kind} | {params[-1]} | {seconds[-1]:.2f} | {accuracy[-1]:.3f} |")
        axes[0].plot(args.experts, seconds, marker="o", label=kind)
        axes[1].plot(args.experts, accuracy, marker="o", label=kind)
    axes[0].set(xlabel="experts (QNN: matched parameters)", ylabel="s per epoch", title=f"{first}: training time")
    axes[1].set(xlabel="experts", ylabel="test accuracy", title=f"{first}: accuracy")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(args.out / "scaling.png", dpi=120)

    lines += ["", "Routing of the dense QMoE with the most experts, first seed, on the test set:", "",
              "| data set | routing entropy (nats) | usage entropy | specialisation per expert | top class per expert |",
              "|---|---:|---:|---|---|"]
    for name in args.datasets:
        best = results[(name, "QMoE dense", args.experts[-1])][0]
        layer = best["model"].get_layer("qmoe")
        stats = routing_statistics(layer.gate_weights(best["x_test"]).numpy(), best["y_test"])
        plot_gate_heatmap(stats.class_gates, args.out / f"gates_{name}.png", class_names=CLASS_NAMES[name][
            :stats.class_gates.shape[0]], title=f"{name}: mean gate weight (dense, E={args.experts[-1]})")
        plt.close("all")
        lines.append(f"| {name} | {stats.entropy:.3f} | {stats.usage_entropy:.3f} | "
                     + ", ".join(f"{s:.2f}" for s in stats.specialisation) + " | "
                     + ", ".join(CLASS_NAMES[name][c] for c in stats.top_class) + " |")
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print("\n" + text + f"\nwrote {args.out}/results.md, scaling.png and gates_*.png")


if __name__ == "__main__":
    main()
