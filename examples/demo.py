"""`make demo`: train a small QMoE classifier and the single-QNN baseline on scikit-learn digits.

Digits 3 vs 5, PCA to 4 features, 4 qubits; QMoE with 4 experts (dense routing) against a QNN
with the same number of circuit parameters. Prints test accuracies, the mean gate weight of each
expert per class, and the wall time.
"""
import time

import cirq
import numpy as np
import tf_keras as keras

import qmoe_tfq as qmoe
from qmoe_tfq import datasets

EPOCHS = 8
BATCH = 32


def main() -> None:
    x_train, x_test, y_train, y_test = datasets.load("digits", n_features=4, classes=(3, 5), seed=0)
    qubits = cirq.GridQubit.rect(1, 4)
    print(f"digits 3 vs 5: {len(x_train)} train / {len(x_test)} test samples, 4 features -> {len(qubits)} qubits")
    results = {}
    for name, build in (("QMoE (4 experts, dense)", qmoe.build_qmoe_classifier),
                        ("QNN baseline", qmoe.build_qnn_classifier)):
        model = build(qubits, n_classes=2, n_features=4, learning_rate=0.05)
        n_params = model.count_params()
        print(f"\n== {name}: {n_params} parameters")
        start = time.perf_counter()
        model.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH, verbose=1)
        seconds = time.perf_counter() - start
        accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
        results[name] = (accuracy, seconds, n_params, model)

    print("\nmodel                      test accuracy   train time   parameters")
    for name, (accuracy, seconds, n_params, _) in results.items():
        print(f"{name:<26} {accuracy:>13.3f} {seconds:>11.1f}s {n_params:>12d}")

    moe = results["QMoE (4 experts, dense)"][3].get_layer("qmoe")
    gates = moe.gate_weights(x_test).numpy()
    print("\nmean gate weight per expert (rows: true class)")
    print("class  " + "  ".join(f"expert_{i}" for i in range(moe.n_experts)))
    for label, digit in enumerate((3, 5)):
        print(f"  {digit}    " + "  ".join(f"{g:>8.3f}" for g in gates[y_test == label].mean(axis=0)))
    print("all    " + "  ".join(f"{g:>8.3f}" for g in gates.mean(axis=0)))


if __name__ == "__main__":
    keras.utils.set_random_seed(0)  # Python's random too: tf_keras's unseeded initializers draw from it
    main()
