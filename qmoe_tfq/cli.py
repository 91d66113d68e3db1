"""The ``qmoe-tfq`` command line (also ``python -m qmoe_tfq``): a thin shell over the library."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from qmoe_tfq.cli_files import (CliError, check_classes, parse_float, positive_int, read_features, read_labels,
                                writable_output, write_array)


class Parser(argparse.ArgumentParser):
    """Argument errors as one line, ``qmoe-tfq: error: ...``, exit code 2 (as every other misuse)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def seed(text: str) -> int:
    value = int(text) if text.isdigit() else None
    if value is None or value >= 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32 - 1], got {text!r}")
    return value


def fraction(text: str) -> float:
    value = parse_float(text)
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number strictly between 0 and 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = parse_float(text)
    if value is None or not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def is_keras_directory(path: str) -> bool:
    """A TF-format Keras model (``model.save(dir)``), not a serving SavedModel from ``export``."""
    return os.path.isfile(os.path.join(path, "keras_metadata.pb"))


def load_keras(path: str):
    """A Keras model (.keras, .h5 or TF-format directory) through the safe loader, any failure as a `CliError`."""
    from qmoe_tfq import saving

    if not (os.path.isfile(path) and path.endswith((".keras", ".h5")) or is_keras_directory(path)):
        raise CliError(f"{path!r} is not a Keras model (a .keras or .h5 file, or a TF-format directory).")
    try:
        return saving.load_model(path)
    except Exception as error:  # noqa: BLE001  (any corrupt or foreign file: one line, exit 2)
        raise CliError(f"cannot load {path!r}: {str(error).splitlines()[0]}") from None


def load_predictor(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function features -> predictions for a SavedModel directory or a .keras/.h5 Keras file."""
    from qmoe_tfq import saving

    if saving.is_saved_model(path) and not is_keras_directory(path):
        loaded = saving.load_saved_model(path)
        return lambda x: saving.run_serving(loaded, x).numpy()
    if os.path.isfile(path) and path.endswith((".keras", ".h5")) or is_keras_directory(path):
        model = load_keras(path)
        if model.inputs[0].dtype.name == "string":
            raise CliError(f"{path!r} takes circuits; the command line feeds float features, so "
                           "build the model with an in-graph encoder (n_features=...).")
        return lambda x: model.predict(x, verbose=0)
    raise CliError(f"{path!r} is not a model: expected a SavedModel directory or a .keras/.h5 file.")


def command_predict(args: argparse.Namespace) -> None:
    if args.output:
        writable_output(args.output, (".npy", ".csv"))
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
    from qmoe_tfq import saving

    writable_output(args.output, exists_ok=False)
    try:
        spec = saving.export_saved_model(load_keras(args.model), args.output)
    except ValueError as error:
        raise CliError(str(error)) from None
    print(f"exported SavedModel to {args.output} (serving_default takes {spec.name} "
          f"{spec.dtype.name}{list(spec.shape)})")


def training_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_train, y_test) from a built-in data set or from --features/--labels."""
    from sklearn.model_selection import train_test_split

    from qmoe_tfq import datasets

    if args.dataset and (args.features or args.labels):
        raise CliError("give either --dataset NAME or --features FILE with --labels FILE, not both.")
    if args.dataset:
        return datasets.load(args.dataset, args.features_count, seed=args.seed, test_size=args.test_fraction)
    if not (args.features and args.labels):
        raise CliError("give --dataset NAME, or both --features FILE and --labels FILE.")
    x = read_features(args.features)
    y = read_labels(args.labels, len(x))
    check_classes(y, args.labels)
    return train_test_split(x, y, test_size=args.test_fraction, random_state=args.seed, stratify=y)


def min_max_scaling(x_train: np.ndarray):
    """A `Rescaling` layer mapping each training feature's [min, max] onto [0, 1]."""
    import tf_keras as keras

    low, high = x_train.min(axis=0), x_train.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return keras.layers.Rescaling(scale=(1.0 / span).tolist(), offset=(-low / span).tolist(), name="min_max")


def command_train(args: argparse.Namespace) -> None:
    import json

    import cirq
    import tf_keras as keras

    import qmoe_tfq as qmoe
    from qmoe_tfq.interpretability import plot_gate_heatmap, routing_statistics

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {args.out!r} is a file; give a directory for model.keras, metrics.json and gates.png.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CliError(f"--out {args.out!r} cannot be made: {error.strerror}.") from None
    writable_output(str(out / "model.keras"))
    if not os.access(out, os.W_OK):
        raise CliError(f"--out {args.out!r} is not writable.")
    x_train, x_test, y_train, y_test = training_data(args)
    n_features = x_train.shape[1]
    qubits = cirq.GridQubit.rect(1, args.qubits or n_features)
    keras.utils.set_random_seed(args.seed)
    try:
        classifier = qmoe.build_qmoe_classifier(
            qubits, int(max(y_train.max(), y_test.max())) + 1, n_features=n_features, n_experts=args.experts,
            expert_layers=args.expert_layers, router_layers=args.router_layers, top_k=args.top_k,
            learning_rate=args.lr, backend=args.backend, repetitions=args.repetitions,
            encoder_rotations=tuple(args.encoder_rotations))
    except (ValueError, TypeError) as error:
        raise CliError(str(error)) from error
    # The encoder takes features in about [0, 1] (at most [-2, 2]): the model scales raw ones itself, so predict
    # takes them as they come.
    scaling = min_max_scaling(x_train)
    inputs = keras.Input(shape=(n_features,), name="features")
    model = keras.Model(inputs, classifier(scaling(inputs)), name="qmoe_classifier")
    model.compile(classifier.optimizer, classifier.loss, metrics=["accuracy"])
    # val_* from a tenth of the training data: the test set stays unseen until the final evaluation.
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, validation_split=0.1,
                        verbose=1)
    qmoe.save_model(model, out / "model.keras")
    test = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    stats = routing_statistics(classifier.get_layer("qmoe").gate_weights(scaling(x_test)).numpy(), y_test)
    plot_gate_heatmap(stats.class_gates, out / "gates.png")
    metrics = {"test": test, "history": history.history, "routing_entropy": stats.entropy,
               "class_gates": stats.class_gates.tolist(), "n_train": len(x_train), "n_test": len(x_test)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    print(f"test accuracy {test['accuracy']:.3f}; wrote {out / 'model.keras'}, metrics.json, gates.png")


def command_evaluate(args: argparse.Namespace) -> None:
    import json

    model = load_keras(args.model)
    x = read_features(args.features)
    y = read_labels(args.labels, len(x))
    if y.max() >= model.output_shape[-1]:
        raise CliError(f"labels in {args.labels!r} go up to {y.max()}, but the model has {model.output_shape[-1]} classes.")
    try:
        logs = model.evaluate(x, y, verbose=0, return_dict=True)
    except ValueError as error:
        raise CliError(f"the model cannot take {args.features!r}: {error}") from error
    print(json.dumps({"loss": logs["loss"], "accuracy": logs["accuracy"]}))


BENCH = "Training and inference throughput of QMoE against a naive composition of tfq.layers.PQC experts."


def bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the benchmark's options to `parser` (shared by ``qmoe-tfq bench`` and `qmoe_tfq.benchmark.main`)."""
    parser.add_argument("--qubits", type=positive_int, default=8)
    parser.add_argument("--layers", type=positive_int, default=3)
    parser.add_argument("--batch", type=positive_int, default=64)
    parser.add_argument("--experts", type=positive_int, default=8)
    parser.add_argument("--steps", type=positive_int, default=16, help="batches per timed round")
    parser.add_argument("--rounds", type=positive_int, default=3, help="timed rounds per model")
    parser.add_argument("--sweep", type=positive_int, nargs="+", default=[1, 2, 4, 8, 16, 32],
                        help="numbers of experts to time")
    parser.add_argument("--batch-sweep", type=positive_int, nargs="+", default=[16, 64, 256, 1024],
                        help="batch sizes to time (at --experts experts, --steps x --batch samples per round)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 3 qubits, 1 layer, 2 experts, batch 16, 1 round of 1 batch, sweeps 1 2 "
                             "experts and batch 8 16")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"), help="where throughput.md and scaling.png go")
    return parser


def command_bench(args: argparse.Namespace) -> None:
    from qmoe_tfq import benchmark

    benchmark.run(args)


def parser() -> argparse.ArgumentParser:
    root = Parser(prog="qmoe-tfq", description="Quantum mixture-of-experts models on TFQ.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    train = commands.add_parser("train", help="train a QMoE classifier and save it",
                                description="Train a QMoE classifier on float features; save the model, "
                                            "metrics.json and the routing heatmap gates.png to --out.")
    source = train.add_argument_group("data (a built-in data set, or files)")
    source.add_argument("--dataset", choices=["digits", "breast_cancer", "moons"],
                        help="offline data set (digits: 3 vs 5), PCA to --features-count")
    source.add_argument("--features-count", type=positive_int, default=4, help="features kept for --dataset")
    source.add_argument("--features", help="features [n_samples, n_features] in [0, 1], .npy or .csv")
    source.add_argument("--labels", help="class indices, .npy or .csv")
    source.add_argument("--test-fraction", type=fraction, default=0.3)
    train.add_argument("--qubits", type=positive_int, help="default: one per feature")
    train.add_argument("--experts", type=positive_int, default=4)
    train.add_argument("--top-k", type=positive_int, help="default: dense routing")
    train.add_argument("--expert-layers", type=positive_int, default=2)
    train.add_argument("--router-layers", type=positive_int, default=2)
    train.add_argument("--encoder-rotations", nargs="+", default=["ry"], choices=["rx", "ry", "rz"])
    train.add_argument("--backend", choices=["auto", "statevector", "noiseless", "noisy"], default="auto")
    train.add_argument("--repetitions", type=positive_int, help="shots or trajectories (default: exact)")
    train.add_argument("--epochs", type=positive_int, default=10)
    train.add_argument("--batch-size", type=positive_int, default=32)
    train.add_argument("--lr", type=positive_float, default=0.05)
    train.add_argument("--seed", type=seed, default=0)
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

    bench = commands.add_parser("bench", help="run the throughput benchmark", description=BENCH)
    bench_arguments(bench).set_defaults(run=command_bench)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import qmoe_tfq.api  # noqa: F401  (TensorFlow, TFQ and the Keras classes: loaded once the arguments parse)

    try:
        args.run(args)
    except CliError as error:
        print(f"qmoe-tfq: error: {error}", file=sys.stderr)
        return 2
    return 0
