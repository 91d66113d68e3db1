"""QMoE layers compose like any Keras layer: two stacked QMoE layers, and QMoE after a classical
feature extractor, each trained, saved, reloaded and checked to predict the same.

    python examples/stacking.py            # digits 3 vs 5
    python examples/stacking.py --quick    # fewer samples and epochs
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import qmoe_tfq as qmoe  # noqa: F401  (sets up tf_keras first)
import cirq
import numpy as np
import tf_keras as keras

from qmoe_tfq import datasets


def two_qmoe_layers(qubits, n_features: int, backend: str) -> keras.Model:
    """features -> QMoE (4 experts, top-2) -> QMoE (2 experts, top-1, on the first one's readouts) -> classes."""
    inputs = keras.Input(shape=(n_features,))
    shallow = qmoe.Ansatz(layers=1)  # one layer for the experts and the router
    first = qmoe.QMoELayer(qubits, 4, ansatz=shallow, gate=qmoe.TopK(2), encoder=qmoe.AngleEncoder(qubits),
                           execution=backend, name="qmoe_1")(inputs)
    # Readouts are in [-1, 1]; an angle scale of pi/2 maps them onto [-pi/2, pi/2].
    second = qmoe.QMoELayer(qubits, 2, ansatz=shallow, gate=qmoe.TopK(1),
                            encoder=qmoe.AngleEncoder(qubits, scale=np.pi / 2), execution=backend, name="qmoe_2")(first)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(second), name="two_qmoe_layers")


def classical_then_qmoe(qubits, n_features: int, backend: str) -> keras.Model:
    """features -> Dense(n_qubits, sigmoid) feature extractor -> QMoE (4 experts, top-1) -> classes."""
    inputs = keras.Input(shape=(n_features,))
    extracted = keras.layers.Dense(len(qubits), activation="sigmoid", name="extractor")(inputs)
    readouts = qmoe.QMoELayer(qubits, 4, ansatz=qmoe.Ansatz(layers=1), gate=qmoe.TopK(1), execution=backend,
                              name="qmoe")(extracted)  # AngleEncoder(qubits) by default
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(readouts), name="classical_then_qmoe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--backend", default=None, help="where circuits run (default: auto; --quick: noiseless)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:  # on qsim: a few dozen steps do not repay compiling the statevector kernel
        args.samples, args.epochs, args.backend = 120, 3, args.backend or "noiseless"

    qubits = cirq.GridQubit.rect(1, 4)
    x_train, x_test, y_train, y_test = datasets.load("digits", 4, n_samples=args.samples, seed=0)
    keras.utils.set_random_seed(0)
    for build, features in ((two_qmoe_layers, x_train.shape[1]), (classical_then_qmoe, x_train.shape[1])):
        model = build(qubits, features, args.backend or "auto")
        model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)
        accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "model.keras"
            qmoe.save_model(model, path)
            reloaded = qmoe.load_model(path)
        difference = np.abs(reloaded.predict(x_test, verbose=0) - model.predict(x_test, verbose=0)).max()
        print(f"{model.name}: test accuracy {accuracy:.3f}; reloaded predictions differ by {difference:.1e}")


if __name__ == "__main__":
    main()
