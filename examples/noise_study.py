"""Train the same QMoE and QNN classifiers noiseless and under depolarising noise, and compare.

Noise is applied after every moment of the encoder, router and expert circuits (a
`cirq.depolarize(p)` channel on every qubit) and simulated with TFQ's trajectory simulator;
gradients come from parameter shift. Amplitude damping works the same way (`--channel damp`).
With ``--data cluster`` or ``--data mixture`` the inputs are quantum data (`qmoe_tfq.quantum_data`):
the states arrive as given and the noise acts on the models' router and expert circuits.

    python examples/noise_study.py                  # digits 3 vs 5: 4 qubits, 160 training samples, 6 epochs
    python examples/noise_study.py --data mixture   # the quantum state families instead
    python examples/noise_study.py --quick          # 3 qubits, 60 training samples, 8 epochs, 20 trajectories
"""
from __future__ import annotations

import argparse
import time

import qmoe_tfq as qmoe  # noqa: F401  (sets up tf_keras first)
import cirq
import tf_keras as keras

from qmoe_tfq import datasets, quantum_data

CHANNELS = {"depolarize": cirq.depolarize, "damp": cirq.amplitude_damp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["digits", "cluster", "mixture"], default="digits")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.001, 0.01])
    parser.add_argument("--channel", choices=sorted(CHANNELS), default="depolarize")
    parser.add_argument("--qubits", type=int, default=4)
    parser.add_argument("--samples", type=int, default=230, help="samples before the 70/30 split")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--trajectories", type=int, default=100)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.qubits, args.samples, args.epochs, args.trajectories = 3, 86, 8, 20

    qubits = cirq.GridQubit.rect(1, args.qubits)
    if args.data == "digits":
        n_features, title = args.qubits, "digits 3 vs 5"
        x_train, x_test, y_train, y_test = datasets.load(
            "digits", args.qubits, classes=(3, 5), n_samples=args.samples, seed=0)
    else:
        families = quantum_data.MIXTURE if args.data == "mixture" else ("cluster",)
        n_features, title = None, f"quantum data ({', '.join(families)} states)"
        x_train, x_test, y_train, y_test = quantum_data.generate(qubits, args.samples, families, seed=0).tensors()
    # One-layer parts: rotations before the CNOT ring did better at that depth than the default order
    # on both classical and quantum data (README, "Circuits").
    shape = {"n_experts": 2, "expert_layers": 1, "router_layers": 1}
    ansatz = {"entangler": "cnot_ring", "entangle_first": False}
    builders = {"QMoE": lambda **kw: qmoe.build_qmoe_classifier(qubits, 2, n_features=n_features,
                                                                top_k=1, **shape, **ansatz, **kw),
                "QNN": lambda **kw: qmoe.build_qnn_classifier(
                    qubits, 2, n_features=n_features, n_layers=qmoe.models.matching_qnn_layers(**shape), **ansatz,
                    **kw)}
    print(f"{title}, {len(y_train)} train / {len(y_test)} test, {args.qubits} qubits, "
          f"{args.channel} noise, {args.trajectories} trajectories")
    rows = []
    for level in args.levels:
        row = [level]
        for name, build in builders.items():
            keras.utils.set_random_seed(0)
            noisy = {} if level == 0 else {"backend": "noisy", "repetitions": args.trajectories,
                                           "noise": CHANNELS[args.channel](level)}
            model = build(**noisy)
            start = time.perf_counter()
            model.fit(x_train, y_train, epochs=args.epochs, batch_size=16, verbose=0)
            accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
            row += [accuracy]
            print(f"p={level:<6} {name}: test accuracy {accuracy:.3f} ({time.perf_counter() - start:.1f} s)")
        rows.append(row)
    print(f"\n| {args.channel} p | QMoE test accuracy | QNN test accuracy |\n|---:|---:|---:|")
    for level, moe, qnn in rows:
        print(f"| {level:g} | {moe:.3f} | {qnn:.3f} |")


if __name__ == "__main__":
    main()
