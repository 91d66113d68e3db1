"""Quantum and classical routers and experts in one QMoE layer, compared on one data set.

Variants (4 experts, top-1 routing, same data and epochs):
  quantum router + PQC experts (the QMoE paper), quantum router + classical experts (hybrid),
  classical router + PQC experts, classical router + classical experts (classical MoE),
  and the single-QNN baseline.

    python examples/hybrid_comparison.py            # moons, 3 seeds
    python examples/hybrid_comparison.py --quick    # 1 seed, fewer samples and epochs
"""
from __future__ import annotations

import argparse
import time

import qmoe_tfq as qmoe  # noqa: F401  (sets up tf_keras first)
import cirq
import numpy as np
import tf_keras as keras

from qmoe_tfq import datasets
from qmoe_tfq.models import matching_qnn_layers

VARIANTS = {
    "quantum router + PQC experts (paper)": ("quantum", "quantum"),
    "quantum router + classical experts": ("classical", "quantum"),
    "classical router + PQC experts": ("quantum", "classical"),
    "classical router + classical experts": ("classical", "classical"),
    "single QNN": None,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="moons", choices=["moons", "digits", "breast_cancer"])
    parser.add_argument("--qubits", type=int, default=4)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=2,
                        help="hidden units of each classical expert (2 keeps parameter counts close)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.qubits, args.seeds, args.samples, args.epochs = 2, 1, 100, 4

    qubits = cirq.GridQubit.rect(1, args.qubits)
    rows = []
    for name, kinds in VARIANTS.items():
        accuracies, params, seconds = [], 0, 0.0
        for seed in range(args.seeds):
            x_train, x_test, y_train, y_test = datasets.load(args.dataset, args.qubits, n_samples=args.samples,
                                                             seed=seed)
            n_features = x_train.shape[1]  # moons has 2 features whatever the qubit count
            keras.utils.set_random_seed(seed)
            if kinds is None:
                model = qmoe.build_qnn_classifier(qubits, 2, n_features=n_features,
                                                  n_layers=matching_qnn_layers(args.experts, 1, 1), learning_rate=0.05)
            else:
                model = qmoe.build_qmoe_classifier(qubits, 2, n_features=n_features, n_experts=args.experts,
                                                   expert_layers=1, router_layers=1, top_k=1, expert_kind=kinds[0],
                                                   router_kind=kinds[1], classical_hidden=args.hidden,
                                                   learning_rate=0.05)
            start = time.perf_counter()
            model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)
            seconds += time.perf_counter() - start
            accuracies.append(model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])
            params = model.count_params()
        rows.append((name, params, np.mean(accuracies), np.std(accuracies), seconds / args.seeds))
        print(f"{name:<40} {params:>5} params  accuracy {rows[-1][2]:.3f} +- {rows[-1][3]:.3f}  "
              f"({rows[-1][4]:.1f} s to train)")
    print(f"\n{args.dataset}, {args.qubits} qubits, {args.experts} experts (top-1), {args.epochs} epochs, "
          f"{args.seeds} seed(s):\n")
    print("| variant | parameters | test accuracy | train time (s) |\n|---|---:|---:|---:|")
    for name, params, mean, std, train_seconds in rows:
        print(f"| {name} | {params} | {mean:.3f} +- {std:.3f} | {train_seconds:.1f} |")
    best = max(rows, key=lambda row: row[2])
    print(f"\nbest: {best[0]} ({best[2]:.3f})")


if __name__ == "__main__":
    main()
