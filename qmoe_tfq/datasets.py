"""Small classification data sets that work offline, scaled to [0, 1] for angle encoding."""
from __future__ import annotations

import cirq
import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, make_moons
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

DATASETS = ("digits", "breast_cancer", "moons")
QUANTUM_DATASETS = ("cluster",)


class Split(tuple):
    """(x_train, x_test, y_train, y_test), features float32 in [0, 1], labels int32 from 0."""

    __slots__ = ()


def load(name: str, n_features: int, *, classes: tuple[int, ...] = (3, 5), n_samples: int | None = None,
         seed: int = 0, test_size: float = 0.3) -> Split:
    """Loads an offline data set reduced to `n_features` (PCA) and min-max scaled to [0, 1].

    Args:
        name: ``"digits"`` (scikit-learn's 8x8 digits, restricted to `classes`),
            ``"breast_cancer"`` or ``"moons"`` (2 features, noise 0.15, padded by PCA if needed).
        n_features: number of features kept (PCA components; moons has 2).
        classes: which digits to keep, relabelled 0..len(classes)-1 (digits only).
        n_samples: keep at most this many samples (stratified), for quick runs.
        seed: controls the split and the moons sample.
    """
    if name == "digits":
        data = load_digits()
        keep = np.isin(data.target, classes)
        x, y = data.data[keep], np.searchsorted(np.array(classes), data.target[keep])
    elif name == "breast_cancer":
        x, y = load_breast_cancer(return_X_y=True)
    elif name == "moons":
        x, y = make_moons(n_samples=n_samples or 400, noise=0.15, random_state=seed)
    else:
        raise ValueError(f"name={name!r} is not a known data set; use one of {DATASETS}.")
    if n_samples is not None and n_samples < len(x):
        x, _, y, _ = train_test_split(x, y, train_size=n_samples, stratify=y, random_state=seed)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed)
    if x.shape[1] > n_features:
        pca = PCA(n_components=n_features, random_state=seed).fit(x_train)
        x_train, x_test = pca.transform(x_train), pca.transform(x_test)
    scaler = MinMaxScaler().fit(x_train)
    x_train = np.clip(scaler.transform(x_train), 0, 1).astype(np.float32)
    x_test = np.clip(scaler.transform(x_test), 0, 1).astype(np.float32)
    return Split((x_train, x_test, y_train.astype(np.int32), y_test.astype(np.int32)))


def excited_cluster_states(qubits: list[cirq.Qid], n_samples: int, *, seed: int = 0,
                           test_size: float = 0.3) -> tuple[list[cirq.Circuit], list[cirq.Circuit], np.ndarray, np.ndarray]:
    """Quantum data: cluster states, half of them excited on one random qubit; label 1 = excited.

    A continuous version of `tfq.datasets.excited_cluster_states` with as many samples as asked:
    every state is the cluster state (H on each qubit, CZ ring) followed by ``rx(angle)`` on a
    random qubit, the angle drawn from [0, pi/4] (label 0) or [3 pi/4, pi] (label 1), then a small
    random ``ry`` on every qubit so no two states are alike.

    Returns:
        (train circuits, test circuits, train labels, test labels), labels int32.
    """
    rng = np.random.default_rng(seed)
    ring = list(zip(qubits, qubits[1:] + qubits[:1])) if len(qubits) > 2 else list(zip(qubits, qubits[1:]))
    cluster = cirq.Circuit(cirq.H.on_each(qubits), (cirq.CZ(a, b) for a, b in ring))
    labels = rng.integers(0, 2, size=n_samples).astype(np.int32)
    circuits = []
    for label in labels:
        low, high = (0.75 * np.pi, np.pi) if label else (0.0, 0.25 * np.pi)
        excite = cirq.rx(rng.uniform(low, high)).on(qubits[rng.integers(len(qubits))])
        jitter = (cirq.ry(rng.normal(0, 0.1)).on(q) for q in qubits)
        circuits.append(cluster + cirq.Circuit(excite) + cirq.Circuit(jitter))
    split = int(round(n_samples * (1 - test_size)))
    return circuits[:split], circuits[split:], labels[:split], labels[split:]
