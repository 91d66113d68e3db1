"""The QMoE paper's accuracy claim at 8 qubits: QCNN experts on quantum data, against fair baselines.

Models (circuit input, readouts -> softmax Dense(2)):
- QMoE top-1 and QMoE dense: 3 QCNN experts (`qmoe.QCNN()`), the router a QCNN too (the layer's defaults).
- QMoE top-1 / dense, Z/X router: the same experts; the router a one-layer ansatz read with Z and X on every
  qubit and Z Z and X X on neighbouring pairs through a Dense head, its gate with an information loss
  (`--information-weight`), so that it routes surely and evenly.
- QMoE top-1, correlator router: the same, but the router circuit is one trained rz per qubit, read with
  Z Z and X X on neighbouring pairs. On the hard mixture these two-body correlators do not depend on the
  label (the sign of every Z; of every Z and X; the n-body X parity), so it can route by what tells the
  families apart, not by label.
- QCNN: one QCNN alone, the circuit each QMoE expert is (Cong et al.; TFQ's QCNN tutorial).
- QCNN per family: one QCNN per family, each trained and tested on its own family: perfect routing.
- QNN, per-sample cost: the hardware-efficient ansatz with as many two-qubit gates per sample as a
  top-1 QMoE with the default router runs (its router and one expert).
- QNN, total parameters: the hardware-efficient ansatz with about as many circuit parameters as that QMoE.
Data (`qmoe_tfq.quantum_data`): the excited cluster states of TFQ's QCNN tutorial, the mixture of cluster,
GHZ and product families, and the hard mixture (GHZ parity, product, product in X), each family hiding its
label elsewhere. Reported: test accuracy (mean +- std over seeds; paired t-test of the top-1 QMoE with the
Z/X router against each other model on the same splits), circuit parameters, circuits and two-qubit gates
per sample, the depth of the deepest circuit a sample runs, training time; the trained models' accuracy
under depolarising noise (`--noise`, TFQ's trajectories); on the mixtures how the routers separate the
families (total-variation distance between the families' mean gates, mutual information between family
and top expert, each family's share on its most frequent expert, and each (family, label) cell's share on
its own most frequent expert). Every run also prints its per-seed accuracies and separation.

    python examples/qcnn_study.py            # 8 qubits, 5 seeds
    python examples/qcnn_study.py --data mixture hard --models "QMoE top-1" "QMoE top-1, correlator router" --noise
    python examples/qcnn_study.py --quick    # 4 qubits, 1 seed, the hard mixture, on qsim: 40 s
Writes to --out (examples/results by default) qcnn_study.json (every run's results, saved after each model),
the tables qcnn_study.md, and the figures qcnn_noise.png (accuracy against noise) and qcnn_routing.png (the
first seed's mean gate per (family, label) and expert); `--write-only` rewrites the tables and figures from
the json, `--resume` keeps the models the json has (same settings) and runs the rest. Each model's seeds
train in a process of their own (not with --quick): XLA keeps every kernel it compiles until its process
ends, ~0.3 GB per 8-qubit run here, and the 130 runs in one process ran out of 23 GB.
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import qmoe_tfq as qmoe  # noqa: F401  (sets up tf_keras first)
import cirq
import matplotlib
import numpy as np
import sympy
import tensorflow as tf
import tf_keras as keras
from scipy import stats

from qmoe_tfq import quantum_data
from qmoe_tfq.circuits import EXPERT_PREFIX, Ansatz

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
DATA = {"cluster": ("cluster",), "mixture": quantum_data.MIXTURE, "hard": quantum_data.HARD_MIXTURE}
N_EXPERTS = 3
QMOE = ("QMoE top-1", "QMoE dense", "QMoE top-1, Z/X router", "QMoE dense, Z/X router", "QMoE top-1, correlator router")
ORACLE = "QCNN per family"
REFERENCE = "QMoE top-1, Z/X router"  # the paired tests compare every other model with it
MODELS = (*QMOE, "QCNN", ORACLE, "QNN, per-sample cost", "QNN, total parameters")


def two_qubit_gates(circuit: cirq.Circuit) -> int:
    return sum(len(op.qubits) == 2 for op in circuit.all_operations())


def correlator_readouts(qubits: list[cirq.Qid]) -> list[cirq.PauliString]:
    """Z Z and X X on neighbouring pairs: even under flipping every spin, so blind to a magnetisation's sign."""
    pairs = list(zip(qubits, qubits[1:] + qubits[:1]))
    return [p(a) * p(b) for p in (cirq.Z, cirq.X) for a, b in pairs]


def z_x_readouts(qubits: list[cirq.Qid]) -> list[cirq.PauliString]:
    """Z and X on every qubit, then the correlators: what tells states apart in either basis."""
    return [p(q) for p in (cirq.Z, cirq.X) for q in qubits] + correlator_readouts(qubits)


def mixture_layer(kind: str, qubits: list[cirq.Qid], readout: list[cirq.PauliString], backend: str,
                  information_weight: float) -> qmoe.QMoELayer:
    if kind.endswith(("Z/X router", "correlator router")):
        # Read in both bases through a Dense head, trained to route surely and evenly. The correlator router's
        # rz layer turns X X into X X, X Y and Y Y, which stay two-body correlators, so it cannot expose labels.
        router = (qmoe.QuantumRouter(Ansatz(layers=1), z_x_readouts(qubits), keras.layers.Dense(N_EXPERTS))
                  if kind.endswith("Z/X router") else
                  qmoe.QuantumRouter(cirq.Circuit(cirq.rz(sympy.Symbol(f"phase_{i}")).on(q) for i, q in enumerate(qubits)),
                                     correlator_readouts(qubits), keras.layers.Dense(N_EXPERTS)))
        gate = (qmoe.TopK(1, information_weight=information_weight) if "top-1" in kind
                else qmoe.DenseGate(information_weight=information_weight))
    else:
        router, gate = None, qmoe.TopK(1) if kind == "QMoE top-1" else qmoe.DenseGate()
    return qmoe.QMoELayer(qubits, N_EXPERTS, ansatz=qmoe.QCNN(), observables=readout, name="qmoe", router=router,
                          gate=gate, execution=backend)


def depth(circuit: cirq.Circuit) -> int:
    """Moments once every operation is moved as early as it can go."""
    return len(cirq.Circuit(circuit.all_operations()))


def build(kind: str, qubits: list[cirq.Qid], args: argparse.Namespace) -> tuple[keras.Model, int, int, int]:
    """(compiled model, circuits per sample, two-qubit gates per sample, depth of the deepest of those circuits)."""
    qcnn = qmoe.QCNN()
    readout = [cirq.Z(q) for q in qcnn.output_qubits(qubits)]
    inputs = keras.Input(shape=(), dtype=tf.string)
    if kind in QMOE:
        layer = mixture_layer(kind, qubits, readout, args.backend, args.information_weight)
        readouts, experts = layer(inputs), 1 if "top-1" in kind else N_EXPERTS
        circuits = 1 + experts
        gates = two_qubit_gates(layer.router.model_circuit) + experts * two_qubit_gates(layer.experts[0].model_circuit)
        deepest = max(depth(layer.router.model_circuit), depth(layer.experts[0].model_circuit))
    else:
        if kind in ("QCNN", ORACLE):
            circuit, observables = qcnn.circuit(qubits, prefix=EXPERT_PREFIX), readout
        else:
            ring = len(qubits)  # CNOTs per layer of the default ansatz
            qcnn_gates = two_qubit_gates(qcnn.circuit(qubits))
            layers = (round(2 * qcnn_gates / ring) if kind == "QNN, per-sample cost"
                      else round((N_EXPERTS + 1) * len(cirq.parameter_symbols(qcnn.circuit(qubits))) / (2 * ring)))
            circuit, observables = Ansatz(layers=layers).circuit(qubits), [cirq.Z(q) for q in qubits]
        readouts = qmoe.ExpertPQC(circuit, observables, name="qnn", backend=args.backend)(inputs)
        circuits, gates, deepest = 1, two_qubit_gates(circuit), depth(circuit)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(readouts))
    model.compile(keras.optimizers.Adam(args.lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, circuits, gates, deepest


def shares(groups: np.ndarray, top: np.ndarray, n_experts: int) -> np.ndarray:
    """<[G, E]> joint distribution of (group, top expert) over the samples."""
    joint = np.zeros((groups.max() + 1, n_experts))
    np.add.at(joint, (groups, top), 1.0)
    return joint / joint.sum()


def separation(gates: np.ndarray, families: np.ndarray, labels: np.ndarray) -> tuple[float, ...]:
    """On `gates` <[N, E]>: (mean total-variation distance between the families' mean gates, mutual information
    in bits between family and top expert, the mean over (family, label) cells of the cell's share on its most
    frequent top expert, then each family's share on its most frequent top expert)."""
    means = [gates[families == f].mean(axis=0) for f in np.unique(families)]  # [F] x <[E]>
    tv = np.mean([0.5 * np.abs(a - b).sum() for a, b in itertools.combinations(means, 2)])
    top = gates.argmax(axis=1)  # <[N]>
    joint = shares(families, top, gates.shape[1])  # <[F, E]>
    outer = joint.sum(axis=1, keepdims=True) @ joint.sum(axis=0, keepdims=True)
    mask = joint > 0
    purity = joint.max(axis=1) / joint.sum(axis=1)  # <[F]>
    cells = shares(2 * families + labels, top, gates.shape[1])  # <[2F, E]>
    cells = cells[cells.sum(axis=1) > 0]
    cell_purity = np.mean(cells.max(axis=1) / cells.sum(axis=1))
    return (float(tv), float((joint[mask] * np.log2(joint[mask] / outer[mask])).sum()), float(cell_purity),
            *map(float, purity))


def fit(kind: str, qubits: list[cirq.Qid], x_train: tf.Tensor, y_train: np.ndarray, x_test: tf.Tensor,
        y_test: np.ndarray, seed: int, args: argparse.Namespace) -> dict:
    """Trains one model; its test accuracy (noiseless and at each ``--noise`` level) and costs."""
    keras.utils.set_random_seed(seed)
    model, circuits, gates, deepest = build(kind, qubits, args)
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=16, verbose=0)
    seconds = time.perf_counter() - start
    correct = {0.0: model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"] * len(y_test)}
    for level in args.noise:  # trained exactly, evaluated under depolarising noise after every moment
        noisy = qmoe.with_backend(model, "noisy", repetitions=args.trajectories, noise=cirq.depolarize(level))
        correct[level] = noisy.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"] * len(y_test)
    return {"correct": correct, "params": sum(int(np.prod(v.shape)) for v in model.trainable_variables
                                              if "parameters" in v.name),
            "circuits": circuits, "gates": gates, "depth": deepest, "seconds": seconds, "model": model}


def run(data: str, kind: str, seed: int, args: argparse.Namespace) -> dict:
    qubits = cirq.GridQubit.rect(1, args.qubits)
    split = quantum_data.generate(qubits, args.samples, DATA[data], seed=seed)
    x_train, x_test, y_train, y_test = split.tensors()
    if kind == ORACLE:  # one QCNN per family, each trained and tested on its own family: perfect routing
        parts = [fit(kind, qubits, tf.boolean_mask(x_train, split.family_train == f), y_train[split.family_train == f],
                     tf.boolean_mask(x_test, split.family_test == f), y_test[split.family_test == f], seed, args)
                 for f in range(len(split.families))]
        result = {**parts[0], "seconds": sum(p["seconds"] for p in parts), "params": sum(p["params"] for p in parts),
                  "correct": {level: sum(p["correct"][level] for p in parts) for level in parts[0]["correct"]}}
    else:
        result = fit(kind, qubits, x_train, y_train, x_test, y_test, seed, args)
    # keyed by the level's text, as the saved json has it
    result["accuracy"] = {f"{level:g}": correct / len(y_test) for level, correct in result.pop("correct").items()}
    if kind in QMOE and len(split.families) > 1:
        gates = result["model"].get_layer("qmoe").gate_weights(x_test).numpy()  # <[N, E]>
        result["separation"] = separation(gates, split.family_test, y_test)
        result["cell_gates"] = [gates[(split.family_test == f) & (y_test == y)].mean(axis=0).tolist()
                                for f in range(len(split.families)) for y in (0, 1)]  # [2F] x [E]
    del result["model"]
    keras.backend.clear_session()
    print(f"{data} {kind} seed {seed}: accuracy {result['accuracy']}, separation {result.get('separation')}", flush=True)
    return result


def seeds(data: str, kind: str, args: argparse.Namespace) -> list[dict]:
    """Every seed's run of model `kind` on `data`."""
    return [run(data, kind, seed, args) for seed in range(args.seeds)]


def accuracies(runs: list[dict], level: float = 0.0) -> np.ndarray:
    return np.array([r["accuracy"][f"{level:g}"] for r in runs])


def paired(runs: list[dict], baseline: list[dict], level: float = 0.0) -> str:
    """`runs` minus the baseline on the same splits (at noise `level`): mean +- std, and the paired t-test's p."""
    a, b = accuracies(runs, level), accuracies(baseline, level)
    p = "n/a" if len(a) < 2 or np.allclose(a - b, (a - b)[0]) else f"{stats.ttest_rel(a, b).pvalue:.3f}"
    return f"{np.mean(a - b):+.3f} +- {np.std(a - b):.3f} (p {p})"


def report(record: dict) -> str:
    """The markdown tables of a study `record` (what `main` saves as qcnn_study.json)."""
    settings, noise = record["settings"], record["settings"]["noise"]
    lines = [f"# QCNN experts at {settings['qubits']} qubits", "",
             f"`{record['command']}`: {settings['seeds']} seeds, {settings['samples']} samples (70% train), "
             f"{settings['epochs']} epochs, batch 16, Adam {settings['lr']}; QMoE of {N_EXPERTS} QCNN experts; backend "
             f"{settings['backend']!r}; the Z/X and correlator routers' information weight "
             f"{settings['information_weight']:g}; noise evaluated with {settings['trajectories']} trajectories.", ""]
    for data, results in record["results"].items():
        lines += [f"## {data}", "", f"| model | test accuracy | {REFERENCE} minus it | circuit parameters | "
                  "circuits / sample | two-qubit gates / sample | deepest circuit (moments) | training (s) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for kind, runs in results.items():
            accuracy = accuracies(runs)
            versus = "" if kind == REFERENCE else paired(results[REFERENCE], runs)
            lines.append(f"| {kind} | {accuracy.mean():.3f} +- {accuracy.std():.3f} | {versus} | {runs[0]['params']} | "
                         f"{runs[0]['circuits']} | {runs[0]['gates']} | {runs[0]['depth']} | "
                         f"{np.mean([r['seconds'] for r in runs]):.1f} |")
        if noise:
            lines += ["", f"Under depolarising noise (`cirq.depolarize(p)` on every qubit after every moment of the "
                      f"models' circuits; trained exactly, evaluated with {settings['trajectories']} trajectories):", "",
                      "| model | two-qubit gates / sample | " + " | ".join(f"p = {p:g}" for p in (0.0, *noise))
                      + f" | {REFERENCE} minus it, p = {max(noise):g} |", "|---|---:|" + "---:|" * (2 + len(noise))]
            for kind, runs in results.items():
                cells = [f"{accuracies(runs, p).mean():.3f} +- {accuracies(runs, p).std():.3f}" for p in (0.0, *noise)]
                versus = "" if kind == REFERENCE else paired(results[REFERENCE], runs, max(noise))
                lines.append(f"| {kind} | {runs[0]['gates']} | " + " | ".join(cells) + f" | {versus} |")
        if len(DATA[data]) > 1:
            families = DATA[data]
            lines += ["", "Router separation of the families (test set, mean over seeds): total-variation distance "
                      "between the families' mean gates (0: the same, 1: disjoint experts), mutual information "
                      f"between family and top expert (bits; at most log2(3) = {np.log2(3):.2f}), the share of each "
                      "(family, label) cell's samples whose top expert is the cell's most frequent one (mean over "
                      "cells), and for each family the share of its samples whose top expert is the family's most "
                      "frequent one.", "",
                      "| model | TV distance | mutual information | (family, label) cells | " + " | ".join(families) + " |",
                      "|---|---:|---:|---:|" + "---:|" * len(families)]
            for kind in (kind for kind in QMOE if kind in results):
                tv, mi, cells, *purity = np.mean([r["separation"] for r in results[kind]], axis=0)
                lines.append(f"| {kind} | {tv:.2f} | {mi:.2f} | {cells:.2f} | " + " | ".join(f"{p:.2f}" for p in purity)
                             + " |")
        lines.append("")
    return "\n".join(lines)


def plot(record: dict, out: Path) -> list[Path]:
    """qcnn_noise.png (mean test accuracy against the noise level, a panel per data set) and, when the run has a
    mixture, qcnn_routing.png (the first seed's mean gate per (family, label) cell and expert, per QMoE)."""
    results, levels = record["results"], [0.0, *record["settings"]["noise"]]
    written = []
    if len(levels) > 1:
        figure, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
        for axis, (data, models) in zip(axes[0], results.items()):
            for index, (kind, runs) in enumerate(models.items()):
                axis.plot(range(len(levels)), [accuracies(runs, p).mean() for p in levels], marker="o",
                          linestyle="--" if kind in QMOE else "-", label=kind, color=plt.cm.tab10(index))
            axis.set(xticks=range(len(levels)), xticklabels=[f"{p:g}" for p in levels], ylim=(0.4, 1.02),
                     xlabel="depolarising p per qubit and moment", ylabel="test accuracy", title=data)
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        figure.tight_layout()
        figure.savefig(out / "qcnn_noise.png", dpi=110)
        written.append(out / "qcnn_noise.png")
    mixtures = {data: models for data, models in results.items() if len(DATA[data]) > 1}
    if mixtures:
        kinds = [kind for kind in QMOE if any(kind in models for models in mixtures.values())]
        figure, axes = plt.subplots(len(mixtures), len(kinds), figsize=(2.6 * len(kinds), 2.8 * len(mixtures)),
                                    squeeze=False)
        for row, (data, models) in zip(axes, mixtures.items()):
            cells = [f"{family}, label {label}" for family in DATA[data] for label in (0, 1)]
            for axis, kind in zip(row, kinds):
                axis.imshow(np.array(models[kind][0]["cell_gates"]), vmin=0, vmax=1, cmap="viridis")
                axis.set(xticks=range(N_EXPERTS), xlabel="expert", yticks=range(len(cells)),
                         yticklabels=cells if axis is row[0] else [], title=f"{data}: {kind}")
                axis.title.set_fontsize(7)
        figure.suptitle("mean gate per (family, label) and expert, test set, first seed", fontsize=9)
        figure.tight_layout()
        figure.savefig(out / "qcnn_routing.png", dpi=110)
        written.append(out / "qcnn_routing.png")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--backend", default="auto", choices=["auto", "statevector", "noiseless"])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--data", nargs="+", choices=list(DATA), default=list(DATA))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help=f"the paired tests compare with {REFERENCE!r}, which is always run")
    parser.add_argument("--information-weight", type=float, default=1.0,
                        help="the Z/X and correlator routers' TopK(information_weight=...)")
    parser.add_argument("--noise", type=float, nargs="*", default=[0.001, 0.01],
                        help="depolarising rates per qubit and moment to evaluate the trained models at")
    parser.add_argument("--trajectories", type=int, default=100)
    parser.add_argument("--write-only", action="store_true",
                        help="rewrite the tables and figures from --out's qcnn_study.json without training")
    parser.add_argument("--resume", action="store_true",
                        help="keep the models --out's qcnn_study.json has for the same settings; run the rest")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        # qsim: at 4 qubits compiling the statevector kernel would take most of the minute
        args.qubits, args.seeds, args.samples, args.epochs, args.backend = 4, 1, 48, 2, "noiseless"
        args.data, args.noise, args.trajectories = ["hard"], [0.01], 10
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "qcnn_study.json"
    if args.write_only:
        record = json.loads(saved.read_text())
    else:
        settings = {name: getattr(args, name) for name in ("qubits", "seeds", "samples", "epochs", "lr", "backend",
                                                           "information_weight", "noise", "trajectories")}
        record = {"command": shlex.join(["python", "examples/qcnn_study.py", *sys.argv[1:]]), "settings": settings,
                  "results": {}}
        previous = json.loads(saved.read_text()) if args.resume and saved.exists() else {}
        if previous.get("settings") == settings:
            record["results"] = previous["results"]
        for data in args.data:
            results = record["results"].setdefault(data, {})
            for kind in (kind for kind in MODELS if kind in args.models or kind == REFERENCE):
                if kind in results:
                    continue
                if kind == ORACLE and len(DATA[data]) == 1 and "QCNN" in results:
                    results[kind] = results["QCNN"]  # one family: perfect routing is the lone QCNN, trained alike
                elif args.quick:
                    results[kind] = seeds(data, kind, args)
                else:
                    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                        results[kind] = pool.submit(seeds, data, kind, args).result()
                print(f"{data:<8} {kind:<24} accuracy {accuracies(results[kind]).mean():.3f} +- "
                      f"{accuracies(results[kind]).std():.3f}", flush=True)
                record["results"][data] = results = {k: results[k] for k in MODELS if k in results}  # in table order
                saved.write_text(json.dumps(record, indent=1))
    tables = args.out / "qcnn_study.md"
    tables.write_text(report(record))
    written = ([] if args.write_only else [saved]) + [tables, *plot(record, args.out)]
    print(f"wrote {', '.join(map(str, written))}")


if __name__ == "__main__":
    main()
