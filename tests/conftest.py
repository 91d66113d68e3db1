"""Shared fixtures: small qubit counts and seeded data keep the suite fast and deterministic."""
import numpy as np
import pytest

import qmoe_tfq  # noqa: F401  (selects tf_keras before TensorFlow is imported by tests)
import cirq
import tensorflow as tf
import tf_keras as keras

from qmoe_tfq.execution import CircuitExecutor


@pytest.fixture(autouse=True)
def _seed():
    # Python's random too: tf_keras draws the seeds of unseeded initializers from it, so without it
    # a test's initial weights would depend on which tests ran before.
    keras.utils.set_random_seed(0)


@pytest.fixture
def qubits():
    return cirq.GridQubit.rect(1, 3)


@pytest.fixture
def features():
    return np.random.default_rng(1).uniform(0, 1, size=(6, 3)).astype(np.float32)


def separable_data(n: int = 64, n_features: int = 2, seed: int = 0):
    """Points in [0, 1]^d labelled by which side of x0 = 0.5 they fall (a margin of 0.1 kept clear)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(4 * n, n_features)).astype(np.float32)
    x = x[np.abs(x[:, 0] - 0.5) > 0.1][:n]
    return x, (x[:, 0] > 0.5).astype(np.int32)


class RowCounter(CircuitExecutor):
    """An exact executor that records how many (program, values) rows reach the simulator per call.

    The layer's router runs first (one row per sample), then the experts."""

    def __init__(self):
        super().__init__()
        self.rows, self.values = [], []

    def __call__(self, programs, names, values, operators):
        self.rows.append(int(tf.shape(programs)[0]))
        self.values.append(values.numpy())
        return super().__call__(programs, names, values, operators)
