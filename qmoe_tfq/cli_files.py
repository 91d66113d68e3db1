"""The command line's inputs: numeric arrays in (.npy without pickles, .csv with an optional header),
labels checked, outputs checked before any work, counts as argument types; every problem a `CliError`
or the parser's one-line error."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


class CliError(Exception):
    """A user-facing error: printed as ``qmoe-tfq: error: ...`` with exit code 2."""


def positive_int(text: str) -> int:
    """An argparse type: a positive integer."""
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _load_csv(file: Path) -> np.ndarray:
    """Comma-separated numbers; a first row of names only (a header, as pandas writes) is skipped."""
    try:
        return np.loadtxt(file, delimiter=",", ndmin=2)
    except ValueError:
        with file.open() as stream:
            header = stream.readline()
        if all(parse_float(field) is None for field in header.strip().split(",")):
            return np.loadtxt(file, delimiter=",", ndmin=2, skiprows=1)
        raise


def read_array(path: str, what: str) -> np.ndarray:
    """A numeric 2-D array from a .npy (no pickles) or .csv (comma separated, an optional header row) file."""
    file = Path(path)
    if not file.is_file():
        raise CliError(f"{what} file {path!r} does not exist.")
    if file.suffix not in (".npy", ".csv"):
        raise CliError(f"{what} file {path!r} must end in .npy or .csv.")
    try:
        data = np.load(file, allow_pickle=False) if file.suffix == ".npy" else _load_csv(file)
    except (ValueError, OSError, EOFError) as error:
        raise CliError(f"{what} file {path!r} cannot be read as numbers: {str(error).splitlines()[0]}") from None
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise CliError(f"{what} file {path!r} must hold real numbers, got dtype {data.dtype}.")
    if not np.isfinite(data).all():
        raise CliError(f"{what} file {path!r} contains NaN or inf.")
    return data


def read_features(path: str) -> np.ndarray:
    """Float features [n_samples, n_features] from a .npy or .csv file."""
    data = read_array(path, "input")
    if data.ndim != 2 or len(data) == 0:
        raise CliError(f"input {path!r} must hold a 2-D array [n_samples, n_features], got shape {data.shape}.")
    return data.astype(np.float32)


def writable_output(path: str, suffixes: tuple[str, ...] | None = None, exists_ok: bool = True) -> None:
    """Raises unless `path` can be written: its directory exists, its suffix fits, it is free if required."""
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise CliError(f"cannot write {path!r}: the directory {str(parent)!r} does not exist.")
    if suffixes and not path.endswith(suffixes):
        raise CliError(f"output {path!r} must end in {' or '.join(suffixes)}.")
    if not exists_ok and os.path.exists(path):
        raise CliError(f"output {path!r} already exists; remove it or choose another path.")


def write_array(path: str, data: np.ndarray) -> None:
    if path.endswith(".csv"):
        np.savetxt(path, data, delimiter=",", fmt="%.6g")
    else:
        np.save(path, data)


def read_labels(path: str, n_samples: int) -> np.ndarray:
    """Integer class labels 0..C-1 from a .npy or .csv file, one per sample."""
    labels = read_array(path, "labels").reshape(-1)
    if len(labels) != n_samples:
        raise CliError(f"labels file {path!r} has {len(labels)} labels for {n_samples} samples.")
    if not np.allclose(labels, np.round(labels)) or labels.min() < 0:
        raise CliError(f"labels in {path!r} must be class indices 0, 1, 2, ...")
    return labels.astype(np.int32)


def check_classes(labels: np.ndarray, path: str) -> None:
    """Training labels must use every class 0..C-1, each at least twice (once for training, once for testing):
    a missing one would be a class the model never sees."""
    missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.tolist()))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise CliError(f"labels in {path!r} must be class indices 0..C-1 with every class present; classes {shown} "
                       f"have no sample (labels 1..C: subtract 1).")
    counts = np.bincount(labels)
    if counts.min() < 2:
        raise CliError(f"labels in {path!r}: class {int(counts.argmin())} has {int(counts.min())} sample; every class "
                       "needs at least 2, one for training and one for testing.")
