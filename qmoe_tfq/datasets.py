"""Small classification data sets that work offline, scaled to [0, 1] for angle encoding."""
from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, make_moons
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

DATASETS = ("digits", "breast_cancer", "moons")


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
