"""Routing collapse and the policies against it: 8 experts, top-1, on moons.

Policies (same data, seeds and epochs, the layer's default depths): no balancing, the Switch
auxiliary loss (the default, load_balance_weight=0.01), loss-free bias balancing (balance="bias"),
the routing information loss (information_weight=1) alone and with the bias, and expert choice (routing="expert_choice", at its default capacity factor 2 and at 1). After
every epoch the routing of the whole training set is recorded: each expert's share of the routed
(sample, expert) pairs and the usage entropy (1 = every expert equally used, 0 = one expert takes
everything). Writes routing_policies.md and routing_policies.png (usage entropy per epoch).

Adam's learning rate is 0.02 by default: at the builders' 0.05 the router moves faster than the
bias follows (the README gives both).

    python examples/routing_policies.py            # 5 seeds, 30 epochs
    python examples/routing_policies.py --learning-rate 0.05
    python examples/routing_policies.py --policies "bias (loss-free)" "bias + information loss"
    python examples/routing_policies.py --quick    # 1 seed, one-layer parts, fewer samples and epochs, on qsim
"""
from __future__ import annotations

import argparse
from pathlib import Path

import qmoe_tfq as qmoe  # noqa: F401  (sets up tf_keras first)
import cirq
import matplotlib
import numpy as np
import tf_keras as keras

from qmoe_tfq import datasets

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

POLICIES = {  # the gate each model is built with
    "no balancing": lambda: qmoe.TopK(1, load_balance_weight=0.0),
    "aux loss (default)": lambda: qmoe.TopK(1),
    "bias (loss-free)": lambda: qmoe.TopK(1, balance="bias"),
    "information loss": lambda: qmoe.TopK(1, information_weight=1.0),
    "bias + information loss": lambda: qmoe.TopK(1, balance="bias", information_weight=1.0),
    "expert choice": lambda: qmoe.ExpertChoice(),
    "expert choice, capacity 1": lambda: qmoe.ExpertChoice(capacity_factor=1.0),
}
FLOOR = 0.05  # the share every expert should keep


def expert_shares(layer: qmoe.QMoELayer, x: np.ndarray) -> np.ndarray:
    """<float>[E] share of the routed (sample, expert) pairs of `x` (one batch) per expert."""
    routed = layer.gate_weights(x).numpy() > 0
    return routed.sum(axis=0) / routed.sum()


def usage_entropy(shares: np.ndarray) -> float:
    """Entropy of the expert shares, normalised by log(E)."""
    used = shares[shares > 0]
    return float(-(used * np.log(used)).sum() / np.log(len(shares)))


class ShareLogger(keras.callbacks.Callback):
    """After each epoch: the expert shares of the model's routing of `x`, and of the epoch's training steps."""

    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        self.x, self.shares, self.trained = x, [], []

    def on_epoch_end(self, epoch, logs=None):
        layer = self.model.get_layer("qmoe")
        self.shares.append(expert_shares(layer, self.x))
        counts = layer.gate.health.counts.numpy()  # pairs per expert since the epoch began (reset by fit)
        self.trained.append(counts / counts.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--layers", type=int, default=2, help="depth of the experts and of the router")
    parser.add_argument("--learning-rate", type=float, default=0.02)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--backend", default="auto", choices=["auto", "statevector", "noiseless"])
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:  # on qsim: for so few steps compiling the statevector kernel would take most of the time
        args.seeds, args.samples, args.epochs, args.layers, args.backend = 1, 160, 4, 1, "noiseless"

    qubits = cirq.GridQubit.rect(1, 2)
    results = {}
    for name in args.policies:
        gate = POLICIES[name]
        accuracies, final, trained, curves = [], [], [], []
        for seed in range(args.seeds):
            x_train, x_test, y_train, y_test = datasets.load("moons", 2, n_samples=args.samples, seed=seed)
            keras.utils.set_random_seed(seed)
            model = qmoe.build_qmoe_classifier(qubits, 2, n_features=2, n_experts=args.experts, gate=gate(),
                                               expert_layers=args.layers, router_layers=args.layers,
                                               learning_rate=args.learning_rate, backend=args.backend)
            logger = ShareLogger(x_train)
            model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0, callbacks=[logger])
            accuracies.append(model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])
            final.append(logger.shares[-1])
            trained.append(logger.trained[-1])
            curves.append([usage_entropy(s) for s in logger.shares])
        results[name] = (np.array(accuracies), np.array(final), np.array(trained), np.array(curves))
        print(f"{name:<26} accuracy {np.mean(accuracies):.3f}  smallest expert share "
              f"{np.min(final, axis=1).mean():.3f}", flush=True)

    lines = [f"moons, {args.experts} experts, top-1, {args.layers}-layer experts and router, {args.epochs} epochs, "
             f"Adam at {args.learning_rate}, "
             f"{args.seeds} seed(s); each expert's share of the routed pairs, means over seeds: of the final "
             "model's routing of the training set, and of the last epoch's training steps.", "",
             f"| policy | test accuracy | minus aux loss's, same seed | smallest share, final | every expert >= "
             f"{FLOOR:.0%}, final | smallest share, last epoch | every expert >= {FLOOR:.0%}, last epoch | "
             "unused experts, final | usage entropy, final |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    baseline = results["aux loss (default)"][0] if "aux loss (default)" in results else None
    for name, (accuracies, final, trained, curves) in results.items():
        paired = "n/a" if baseline is None else f"{(accuracies - baseline).mean():+.3f} +- {(accuracies - baseline).std():.3f}"
        lines.append(f"| {name} | {accuracies.mean():.3f} +- {accuracies.std():.3f} | {paired} | {final.min(axis=1).mean():.3f} | "
                     f"{(final.min(axis=1) >= FLOOR).sum()} of {args.seeds} | {trained.min(axis=1).mean():.3f} | "
                     f"{(trained.min(axis=1) >= FLOOR).sum()} of {args.seeds} | "
                     f"{(final == 0).sum(axis=1).mean():.1f} | "
                     f"{curves[:, -1].mean():.3f} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routing_policies.md").write_text(text)
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for index, (name, (*_, curves)) in enumerate(results.items()):  # earlier lines dashed and on top
        axis.plot(range(1, args.epochs + 1), curves.mean(axis=0), marker="o", markersize=3, label=name,
                  linestyle="--" if index % 2 else "-", zorder=len(results) - index)
    axis.set(xlabel="epoch", ylabel="usage entropy / log(E)", ylim=(0, 1.05),
             title=f"Expert usage, {args.experts} experts, top-1, moons")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out / "routing_policies.png", dpi=120)
    print(f"wrote {args.out / 'routing_policies.md'} and {args.out / 'routing_policies.png'}")


if __name__ == "__main__":
    main()
