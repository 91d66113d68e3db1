"""Train a QMoE classifier exactly, compile it for a Google processor and evaluate it on that
processor's quantum virtual machine (device + noise calibration shipped with cirq_google).

    python examples/google_hardware.py --processor weber --shots 1000
    python examples/google_hardware.py --quick

With Google Quantum AI access, run on the real processor by swapping the virtual machine for
    sampler = qmoe_tfq.hardware.DeviceSampler(cirq_google.get_engine().get_sampler("weber"), device)
"""
from __future__ import annotations

import argparse
import time

import qmoe_tfq as qmoe  # noqa: F401  (sets up tf_keras first)
import cirq
import numpy as np
import tensorflow as tf
import tf_keras as keras

from qmoe_tfq import datasets
from qmoe_tfq.hardware import circuit_stats, compile_for_device, google_virtual_machine


def compilation_report(model: tf.keras.Model, device: cirq.Device, sample: np.ndarray) -> list[str]:
    """Depth and two-qubit gates before/after compilation: ansatz circuits, and one resolved program."""
    moe = model.get_layer("qmoe")
    expert = moe.experts[0]
    resolved = cirq.resolve_parameters(
        moe.encoder.circuit + expert.model_circuit,
        {**{s: moe.encoder.scale * v for s, v in zip(moe.encoder.symbols, sample)},
         **{s: float(v) for s, v in expert.symbol_values().items()}})
    lines = [f"{'circuit':<34}{'depth':>7}{'2q gates':>10}   ->{'depth':>7}{'2q gates':>10}"]
    for name, circuit in (("expert ansatz (symbolic)", expert.model_circuit),
                          ("router ansatz (symbolic)", moe.router.model_circuit),
                          ("encoder + expert 0, sample 0", resolved)):
        before, after = circuit_stats(circuit), circuit_stats(compile_for_device(circuit, device).circuit)
        lines.append(f"{name:<34}{before['depth']:>7}{before['two_qubit_gates']:>10}   ->"
                     f"{after['depth']:>7}{after['two_qubit_gates']:>10}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processor", default="weber", choices=["weber", "rainbow"])
    parser.add_argument("--shots", type=int, default=1000)
    parser.add_argument("--qubits", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--eval-samples", type=int, default=60, help="test samples run on the QVM")
    parser.add_argument("--finetune-steps", type=int, default=2, help="parameter-shift steps on the QVM")
    parser.add_argument("--finetune-batch", type=int, default=8, help="samples per fine-tuning step")
    parser.add_argument("--quick", action="store_true",
                        help="3 qubits, 3 epochs, 12 QVM samples, 1 fine-tuning step on 2 samples")
    args = parser.parse_args()
    if args.quick:
        args.qubits, args.epochs, args.eval_samples, args.shots = 3, 3, 12, 300
        args.finetune_steps, args.finetune_batch = 1, 2
    keras.utils.set_random_seed(0)  # Python, NumPy and TF: initializers draw from Python's random

    x_train, x_test, y_train, y_test = datasets.load("digits", args.qubits, classes=(3, 5))
    qubits = cirq.GridQubit.rect(1, args.qubits)
    model = qmoe.build_qmoe_classifier(qubits, 2, n_features=args.qubits, n_experts=2, expert_layers=2,
                                       router_layers=1, top_k=1, learning_rate=0.05)
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=2)
    x_eval, y_eval = x_test[:args.eval_samples], y_test[:args.eval_samples]
    exact = model.evaluate(x_eval, y_eval, verbose=0, return_dict=True)["accuracy"]

    sampler = google_virtual_machine(args.processor)
    print(f"\ncompiled for {args.processor} ({len(sampler.device.metadata.qubit_set)} qubits, CZ gate set):")
    print("\n".join(compilation_report(model, sampler.device, x_eval[0])))

    on_qvm = qmoe.with_backend(model, sampler, repetitions=args.shots)
    start = time.perf_counter()
    qvm = on_qvm.evaluate(x_eval, y_eval, verbose=0, return_dict=True)["accuracy"]
    seconds = time.perf_counter() - start
    print(f"\naccuracy on {len(y_eval)} test samples: exact simulator {exact:.3f}, "
          f"{args.processor} QVM with {args.shots} shots {qvm:.3f} ({seconds:.1f} s)")

    if args.finetune_steps:
        batch = slice(0, args.finetune_batch)
        for step in range(args.finetune_steps):
            logs = on_qvm.train_on_batch(x_train[batch], y_train[batch], return_dict=True)
            print(f"QVM fine-tuning step {step + 1} (parameter shift): loss {logs['loss']:.4f}")
        tuned = on_qvm.evaluate(x_eval, y_eval, verbose=0, return_dict=True)["accuracy"]
        print(f"accuracy on the QVM after fine-tuning: {tuned:.3f}")


if __name__ == "__main__":
    main()
