"""The QMoE paper's three claims, measured with this library (arXiv 2507.05190).

1. Accuracy: QMoE vs a single QNN with the same number of circuit parameters, on classical data
   (digits 0-3, breast cancer, moons; PCA to the qubit count) and quantum data fed as circuits
   (`qmoe_tfq.quantum_data`: excited cluster states, and the mixture of cluster, GHZ and product
   state families, each with its own labelling rule), mean +- std over seeds and a paired t-test
   of each QMoE's accuracy against the QNN's on the same split, for several expert counts, dense
   and top-1, and the QMoE+ options: data re-uploading experts and coherent aggregation.
2. Scaling: parameters, training time per epoch and accuracy against the number of experts.
3. Interpretability: mean gate per class and expert (heatmap), routing entropy and how
   specialised each expert is; on the mixture also per state family (does the router separate
   the families?).

    python examples/paper_experiments.py                 # full: 5 data sets x E in {2,4,8} x 5 seeds
    python examples/paper_experiments.py --datasets cluster mixture   # the quantum data only
    python examples/paper_experiments.py --quick         # half a minute on qsim: moons and the mixture, E=2, 1 seed
Writes results.md and PNG figures to --out (examples/results by default).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import qmoe_tfq as qmoe  # noqa: F401  (sets up tf_keras first)
import cirq
import matplotlib
import numpy as np
import tf_keras as keras

from scipy import stats
from qmoe_tfq import datasets, quantum_data
from qmoe_tfq.interpretability import plot_gate_heatmap, routing_statistics
from qmoe_tfq.models import matching_qnn_layers

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
REUPLOAD = "QMoE+ re-upload"
COHERENT = "QMoE+ coherent"
CLASSICAL_ONLY = (REUPLOAD, COHERENT)  # both upload classical features more than once
CLASS_NAMES = {"digits": ["digit 0", "digit 1", "digit 2", "digit 3"], "breast_cancer": ["malignant", "benign"],
               "moons": ["moon 0", "moon 1"], "cluster": ["ground", "excited"], "mixture": ["label 0", "label 1"]}
QUANTUM = {"cluster": ("cluster",), "mixture": quantum_data.MIXTURE}  # data set -> state families


def load(name: str, qubits: list[cirq.Qid], n_samples: int, seed: int):
    """(x_train, x_test, y_train, y_test, n_features or None for circuit input, test families or None)."""
    if name in QUANTUM:
        data = quantum_data.generate(qubits, n_samples, QUANTUM[name], seed=seed)
        return (*data.tensors(), None, data.family_test)
    classes = (0, 1, 2, 3) if name == "digits" else (3, 5)
    x_train, x_test, y_train, y_test = datasets.load(name, len(qubits), classes=classes,
                                                     n_samples=n_samples, seed=seed)
    return x_train, x_test, y_train, y_test, x_train.shape[1], None


def circuit_parameters(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables if "parameters" in v.name)


def run(name: str, model_kind: str, n_experts: int, seed: int, args) -> dict:
    """Trains one model; returns its test accuracy, parameter counts and seconds per epoch."""
    qubits = cirq.GridQubit.rect(1, args.qubits)
    x_train, x_test, y_train, y_test, n_features, families = load(name, qubits, args.samples, seed)
    n_classes = int(y_train.max()) + 1
    keras.utils.set_random_seed(seed)
    if model_kind == "QNN":
        model = qmoe.build_qnn_classifier(qubits, n_classes, n_features=n_features,
                                          n_layers=matching_qnn_layers(n_experts, args.layers, args.layers),
                                          learning_rate=args.lr)
    else:
        options = ({"aggregation": "coherent"} if model_kind == COHERENT else
                   {"reuploading": model_kind == REUPLOAD, "top_k": 1 if model_kind == "QMoE top-1" else None})
        model = qmoe.build_qmoe_classifier(qubits, n_classes, n_features=n_features, n_experts=n_experts,
                                           expert_layers=args.layers + (model_kind == REUPLOAD), router_layers=args.layers,
                                           learning_rate=args.lr, backend=args.backend, **options)
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)
    seconds = (time.perf_counter() - start) / args.epochs
    accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    # Only the gates are kept, not the model: hundreds of traced models do not fit in memory.
    gates = model.get_layer("qmoe").gate_weights(x_test).numpy() if model_kind == "QMoE dense" else None  # [N, E]
    result = {"accuracy": accuracy, "circuit_params": circuit_parameters(model), "params": model.count_params(),
              "seconds_per_epoch": seconds, "gates": gates, "y_test": y_test, "families": families}
    keras.backend.clear_session()
    return result


def paired_difference(runs: list[dict], baseline: list[dict]) -> str:
    """Mean +- std over seeds of (accuracy - the QNN's on the same split), and the paired t-test's p."""
    accuracy = np.array([r["accuracy"] for r in runs])  # [seeds]
    reference = np.array([b["accuracy"] for b in baseline])  # [seeds]
    difference = accuracy - reference  # [seeds]
    if len(difference) < 2 or np.allclose(difference, difference[0]):
        p = "n/a"
    else:
        p = f"{stats.ttest_rel(accuracy, reference).pvalue:.3f}"
    return f"{np.mean(difference):+.3f} +- {np.std(difference):.3f} (p {p})"


def family_routing(name: str, run_result: dict, out: Path, n_experts: int) -> list[str]:
    """Heatmap of the mean gate per state family, and a table: which expert each family goes to."""
    families, gates = QUANTUM[name], run_result["gates"]  # gates [N, E]
    routing = routing_statistics(gates, run_result["families"])
    plot_gate_heatmap(routing.class_gates, out / f"gates_{name}_families.png", class_names=list(families),
                      title=f"{name}: mean gate weight per state family (dense, E={n_experts})")
    top = gates.argmax(axis=1)  # [N] each sample's strongest expert
    lines = ["", f"{name}, per state family (dense, E={n_experts}, first seed, test set): the expert with the "
             "largest mean gate, the share of the family's samples whose strongest expert it is, and the "
             "family's mean routing entropy.", "",
             "| family | expert | share | routing entropy |", "|---|---:|---:|---:|"]
    for index, family in enumerate(families):
        mine = run_result["families"] == index
        expert = int(routing.class_gates[index].argmax())
        entropy = routing_statistics(gates[mine]).entropy
        lines.append(f"| {family} | {expert} | {np.mean(top[mine] == expert):.2f} | {entropy:.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer", "moons", "cluster", "mixture"],
                        choices=["digits", "breast_cancer", "moons", *QUANTUM])
    parser.add_argument("--experts", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--qubits", type=int, default=4)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--layers", type=int, default=2, help="depth of every expert and of the router")
    parser.add_argument("--backend", default="auto", choices=["auto", "statevector", "noiseless"])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:  # on qsim: for so few steps compiling the statevector kernel would take most of the time
        args.datasets, args.experts, args.seeds, args.samples, args.epochs, args.layers = ["moons", "mixture"], [2], 1, 90, 3, 1
        args.backend = "noiseless"
    args.out.mkdir(parents=True, exist_ok=True)

    kinds = ["QNN", "QMoE dense", "QMoE top-1", REUPLOAD, COHERENT]
    results: dict[tuple[str, str, int], list[dict]] = {}
    for name in args.datasets:
        for n_experts in args.experts:
            for kind in kinds:
                if kind in CLASSICAL_ONLY and name in QUANTUM:
                    continue  # quantum data has no classical features to upload again
                runs = [run(name, kind, n_experts, seed, args) for seed in range(args.seeds)]
                results[(name, kind, n_experts)] = runs
                accuracies = [r["accuracy"] for r in runs]
                print(f"{name:<14} E={n_experts:<2} {kind:<11} accuracy {np.mean(accuracies):.3f} "
                      f"+- {np.std(accuracies):.3f}  ({runs[0]['circuit_params']} circuit params, "
                      f"{np.mean([r['seconds_per_epoch'] for r in runs]):.2f} s/epoch)")

    lines = ["# QMoE paper experiments", "",
             f"`python examples/paper_experiments.py {' '.join(sys.argv[1:])}`: {args.qubits} qubits, "
             f"{args.samples} samples (70/30 split), {args.epochs} epochs, {args.seeds} seed(s); {args.layers}-layer "
             "experts and router; the QNN has the same number of circuit parameters "
             f"({args.layers} (E + 1) layers). Test accuracy, mean +- std over seeds.", "",
             "QMoE+ re-upload: dense experts one layer deeper with the features re-uploaded before each layer "
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

    lines += ["", "Paired difference to the QNN (same split and initial seed): mean +- std of the accuracy "
              "difference over seeds, and the paired t-test's p-value.", "",
              "| data set | E | " + " | ".join(kinds[1:]) + " |", "|---|---:|" + "---:|" * (len(kinds) - 1)]
    for name in args.datasets:
        for n_experts in args.experts:
            baseline = results[(name, "QNN", n_experts)]
            cells = [paired_difference(results[(name, kind, n_experts)], baseline)
                     if (name, kind, n_experts) in results else "n/a" for kind in kinds[1:]]
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
    family_lines = []
    for name in args.datasets:
        best = results[(name, "QMoE dense", args.experts[-1])][0]
        gates = best["gates"]  # [N, E]
        routing = routing_statistics(gates, best["y_test"])
        plot_gate_heatmap(routing.class_gates, args.out / f"gates_{name}.png", class_names=CLASS_NAMES[name][
            :routing.class_gates.shape[0]], title=f"{name}: mean gate weight (dense, E={args.experts[-1]})")
        lines.append(f"| {name} | {routing.entropy:.3f} | {routing.usage_entropy:.3f} | "
                     + ", ".join(f"{s:.2f}" for s in routing.specialisation) + " | "
                     + ", ".join(CLASS_NAMES[name][c] for c in routing.top_class) + " |")
        if len(QUANTUM.get(name, ())) > 1:
            family_lines += family_routing(name, best, args.out, args.experts[-1])
        plt.close("all")
    lines += family_lines
    lines += ["", f"Routing entropy is out of log(E) = {np.log(args.experts[-1]):.3f} nats (uniform gates)."]
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print("\n" + text + f"\nwrote {args.out}/results.md, scaling.png and gates_*.png")


if __name__ == "__main__":
    main()
