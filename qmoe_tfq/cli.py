"""The ``qmoe-tfq`` command line (also ``python -m qmoe_tfq``): a thin shell over the library."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


class CliError(Exception):
    """A user-facing error: printed as ``qmoe-tfq: error: ...`` with exit code 2."""


def read_features(path: str) -> np.ndarray:
    """Float features [n_samples, n_features] from a .npy or .csv file (CSV: comma separated, no header)."""
    file = Path(path)
    if not file.is_file():
        raise CliError(f"input file {path!r} does not exist.")
    if file.suffix == ".npy":
        data = np.load(file, allow_pickle=False)
    elif file.suffix == ".csv":
        data = np.loadtxt(file, delimiter=",", ndmin=2)
    else:
        raise CliError(f"input file {path!r} must end in .npy or .csv.")
    if data.ndim != 2:
        raise CliError(f"input {path!r} must hold a 2-D array [n_samples, n_features], got shape {data.shape}.")
    return data.astype(np.float32)


def write_array(path: str, data: np.ndarray) -> None:
    if path.endswith(".csv"):
        np.savetxt(path, data, delimiter=",", fmt="%.6g")
    else:
        np.save(path, data)


def load_predictor(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function features -> predictions for a SavedModel directory or a .keras/.h5 Keras file."""
    from qmoe_tfq import serialization
    import tf_keras as keras

    if serialization.is_saved_model(path):
        loaded = serialization.load_saved_model(path)
        return lambda x: serialization.run_serving(loaded, x).numpy()
    if os.path.isfile(path) and path.endswith((".keras", ".h5")):
        model = keras.models.load_model(path)
        if model.inputs[0].dtype.name == "string":
            raise CliError(f"{path!r} takes circuits; the command line feeds float features, so "
                           "build the model with an in-graph encoder (n_features=...).")
        return lambda x: model.predict(x, verbose=0)
    raise CliError(f"{path!r} is not a model: expected a SavedModel directory or a .keras/.h5 file.")


def command_predict(args: argparse.Namespace) -> None:
    features = read_features(args.input)
    try:
        predictions = load_predictor(args.model)(features)
    except ValueError as error:
        raise CliError(str(error)) from error
    if args.output:
        write_array(args.output, predictions)
        print(f"wrote {len(predictions)} predictions to {args.output}")
    else:
        for row in predictions:
            print(f"{int(np.argmax(row))}\t" + " ".join(f"{p:.4f}" for p in row))


def command_export(args: argparse.Namespace) -> None:
    from qmoe_tfq import serialization
    import tf_keras as keras

    if not (os.path.isfile(args.model) and args.model.endswith((".keras", ".h5"))):
        raise CliError(f"{args.model!r} is not a Keras model file (.keras or .h5).")
    spec = serialization.export_saved_model(keras.models.load_model(args.model), args.output)
    print(f"exported SavedModel to {args.output} (serving_default takes {spec.name} "
          f"{spec.dtype.name}{list(spec.shape)})")


def read_labels(path: str, n_samples: int) -> np.ndarray:
    """Integer class labels 0..C-1 from a .npy or .csv file, one per sample."""
    labels = read_features(path).reshape(-1) if path.endswith(".csv") else None
    if labels is None:
        if not Path(path).is_file():
            raise CliError(f"labels file {path!r} does not exist.")
        labels = np.load(path, allow_pickle=False).reshape(-1)
    if len(labels) != n_samples:
        raise CliError(f"labels file {path!r} has {len(labels)} labels for {n_samples} samples.")
    if not np.allclose(labels, np.round(labels)) or labels.min() < 0:
        raise CliError(f"labels in {path!r} must be class indices 0, 1, 2, ...")
    return labels.astype(np.int32)


def training_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_train, y_test) from a built-in data set or from --features/--labels."""
    from sklearn.model_selection import train_test_split

    from qmoe_tfq import datasets

    if args.dataset:
        return datasets.load(args.dataset, args.features_count, seed=args.seed, test_size=args.test_fraction)
    if not (args.features and args.labels):
        raise CliError("give --dataset NAME, or both --features FILE and --labels FILE.")
    x = read_features(args.features)
    y = read_labels(args.labels, len(x))
    return train_test_split(x, y, test_size=args.test_fraction, random_state=args.seed, stratify=y)


def command_train(args: argparse.Namespace) -> None:
    import json

    import cirq
    import tf_keras as keras

    import qmoe_tfq as qmoe
    from qmoe_tfq.interpretability import plot_gate_heatmap, routing_statistics

    x_train, x_test, y_train, y_test = training_data(args)
    n_features = x_train.shape[1]
    qubits = cirq.GridQubit.rect(1, args.qubits or n_features)
    keras.utils.set_random_seed(args.seed)
    try:
        model = qmoe.build_qmoe_classifier(
            qubits, int(max(y_train.max(), y_test.max())) + 1, n_features=n_features, n_experts=args.experts,
            expert_layers=args.expert_layers, router_layers=args.router_layers, top_k=args.top_k,
            learning_rate=args.lr, backend=args.backend, repetitions=args.repetitions,
            encoder_rotations=tuple(args.encoder_rotations))
    except (ValueError, TypeError) as error:
        raise CliError(str(error)) from error
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_test, y_test), verbose=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    test = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    stats = routing_statistics(model.get_layer("qmoe").gate_weights(x_test).numpy(), y_test)
    plot_gate_heatmap(stats.class_gates, out / "gates.png")
    metrics = {"test": test, "history": history.history, "routing_entropy": stats.entropy,
               "class_gates": stats.class_gates.tolist(), "n_train": len(x_train), "n_test": len(x_test)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    print(f"test accuracy {test['accuracy']:.3f}; wrote {out / 'model.keras'}, metrics.json, gates.png")


def command_evaluate(args: argparse.Namespace) -> None:
    import json

    import tf_keras as keras

    if not (os.path.isfile(args.model) and args.model.endswith((".keras", ".h5"))):
        raise CliError(f"{args.model!r} is not a Keras model file (.keras or .h5).")
    x = read_features(args.features)
    y = read_labels(args.labels, len(x))
    model = keras.models.load_model(args.model)
    try:
        logs = model.evaluate(x, y, verbose=0, return_dict=True)
    except ValueError as error:
        raise CliError(f"the model cannot take {args.features!r}: {error}") from error
    print(json.dumps({"loss": logs["loss"], "accuracy": logs["accuracy"]}))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="qmoe-tfq", description="Quantum mixture-of-experts models on TFQ.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a QMoE classifier and save it",
                                description="Train a QMoE classifier on float features; save the model, "
                                            "metrics.json and the routing heatmap gates.png to --out.")
    source = train.add_argument_group("data (a built-in data set, or files)")
    source.add_argument("--dataset", choices=["digits", "breast_cancer", "moons"],
                        help="offline data set (digits: 3 vs 5), PCA to --features-count")
    source.add_argument("--features-count", type=int, default=4, help="features kept for --dataset")
    source.add_argument("--features", help="features [n_samples, n_features] in [0, 1], .npy or .csv")
    source.add_argument("--labels", help="class indices, .npy or .csv")
    source.add_argument("--test-fraction", type=float, default=0.3)
    train.add_argument("--qubits", type=int, help="default: one per feature")
    train.add_argument("--experts", type=int, default=4)
    train.add_argument("--top-k", type=int, help="default: dense routing")
    train.add_argument("--expert-layers", type=int, default=2)
    train.add_argument("--router-layers", type=int, default=2)
    train.add_argument("--encoder-rotations", nargs="+", default=["ry"], choices=["rx", "ry", "rz"])
    train.add_argument("--backend", choices=["noiseless", "noisy"], default="noiseless")
    train.add_argument("--repetitions", type=int, help="shots or trajectories (default: exact)")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=0.05)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="qmoe_run", help="output directory")
    train.set_defaults(run=command_train)

    evaluate = commands.add_parser("evaluate", help="loss and accuracy of a saved model",
                                   description="Print loss and accuracy as JSON.")
    evaluate.add_argument("--model", required=True, help=".keras or .h5 model file")
    evaluate.add_argument("--features", required=True, help=".npy or .csv features")
    evaluate.add_argument("--labels", required=True, help=".npy or .csv class indices")
    evaluate.set_defaults(run=command_evaluate)

    predict = commands.add_parser("predict", help="run a saved model on features from .npy/.csv",
                                  description="Print (or write) class probabilities for each input row.")
    predict.add_argument("--model", required=True, help="SavedModel directory or .keras/.h5 file")
    predict.add_argument("--input", required=True, help="features [n_samples, n_features], .npy or .csv")
    predict.add_argument("--output", help="write predictions to this .npy or .csv instead of printing")
    predict.set_defaults(run=command_predict)

    export = commands.add_parser("export", help="export a .keras/.h5 model as a SavedModel",
                                 description="Write a SavedModel with a serving_default signature.")
    export.add_argument("--model", required=True, help=".keras or .h5 model file")
    export.add_argument("--output", required=True, help="SavedModel directory to write")
    export.set_defaults(run=command_export)
    from qmoe_tfq import benchmark

    bench = commands.add_parser("bench", help="run the throughput benchmark",
                                description=benchmark.__doc__.splitlines()[0])
    benchmark.arguments(bench).set_defaults(run=benchmark.run)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except CliError as error:
        print(f"qmoe-tfq: error: {error}", file=sys.stderr)
        return 2
    return 0
