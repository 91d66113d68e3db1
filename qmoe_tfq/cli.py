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


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="qmoe-tfq", description="Quantum mixture-of-experts models on TFQ.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except CliError as error:
        print(f"qmoe-tfq: error: {error}", file=sys.stderr)
        return 2
    return 0
