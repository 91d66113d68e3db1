"""Quantum data, generated locally: families of states, each with its own labelling rule.

Every sample is a `cirq.Circuit` that prepares a state from |0...0>; a model reads it as circuit
input (`tfq.convert_to_tensor`). A *family* is a kind of state, and what makes its label visible
differs by family, so a model that routes each family to its own expert has something to gain:

``"cluster"``
    The cluster state (H on every qubit, a CZ ring) with ``rx(a)`` on one random qubit; label 1
    when the excitation is large, ``a`` in [3 pi/4, pi], label 0 when ``a`` is in [0, pi/4]. The
    label sits in the three-body stabilisers ``Z X Z`` next to the excited qubit; every one- and
    two-qubit Pauli expectation is 0.
``"ghz"``
    The GHZ state (H, then a CNOT chain) with ``rx(a)`` on one random qubit, ``a`` drawn as for
    the cluster family: label 1 is (nearly) a bit flip. Every single-qubit expectation is 0; the
    label is in the two-body ``Z Z`` across the flipped qubit, ``cos a``, 1 for every other pair.
``"product"``
    A product state: ``ry(t)`` on every qubit with one ``t`` per sample, in [pi/8, 3 pi/8] (label 0)
    or [5 pi/8, 7 pi/8] (label 1), then ``rz`` of a random phase on each qubit. The label is the
    sign of every single-qubit ``Z``; X and Y carry only the random phases.
``"ghz_parity"``
    The GHZ state with ``rz(a)`` on one random qubit, ``a`` drawn as for the cluster family: label 1
    turns GHZ+ (nearly) into GHZ-. The label is in the n-body parity ``X X ... X`` (``cos a``) alone:
    every correlator of fewer than n qubits is blind to it, so a circuit must entangle all the qubits
    to read it.
``"product_x"``
    The product family turned a quarter: ``ry(t)`` on every qubit, ``t`` in [-3 pi/8, -pi/4] (label 1)
    or [5 pi/8, 3 pi/4] (label 0). The label is the sign of every ``X`` (negative for 1), and every
    ``Z`` says the opposite of the product family's rule (positive for 1), so one readout axis cannot
    label both families: mixed with ``"product"``, the right reading depends on the family. Its
    ``X X`` correlations (at least 0.5) tell it from the product family (whose phases average them out).

Every state then gets a small ``ry`` (normal, std 0.1) on each qubit, so no two are alike.
`generate` balances the data: each family gets ``n_samples // len(families)`` samples, half of
each label, and the order is shuffled before the train/test split.

>>> data = generate(cirq.LineQubit.range(3), 12, ("cluster", "ghz"), seed=1)
>>> len(data.x_train), len(data.x_test), int(data.y_train.sum() + data.y_test.sum())
(8, 4, 6)
>>> data.families, sorted(set(data.family_train.tolist() + data.family_test.tolist()))
(('cluster', 'ghz'), [0, 1])
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import cirq
import numpy as np
import tensorflow as tf
import tensorflow_quantum as tfq

from qmoe_tfq.circuits import validate_positive_int, validate_qubits

LOW, HIGH = (0.0, 0.25 * np.pi), (0.75 * np.pi, np.pi)


def _ring(qubits: Sequence[cirq.Qid]) -> list[tuple[cirq.Qid, cirq.Qid]]:
    pairs = list(zip(qubits[:-1], qubits[1:]))
    return pairs + [(qubits[-1], qubits[0])] if len(qubits) > 2 else pairs


def _cluster(qubits: Sequence[cirq.Qid], label: int, rng: np.random.Generator) -> cirq.Circuit:
    excite = cirq.rx(rng.uniform(*(HIGH if label else LOW))).on(qubits[rng.integers(len(qubits))])
    return cirq.Circuit(cirq.H.on_each(qubits), (cirq.CZ(a, b) for a, b in _ring(qubits)), excite)


def _ghz(qubits: Sequence[cirq.Qid], label: int, rng: np.random.Generator) -> cirq.Circuit:
    flip = cirq.rx(rng.uniform(*(HIGH if label else LOW))).on(qubits[rng.integers(len(qubits))])
    return cirq.Circuit(cirq.H(qubits[0]), (cirq.CNOT(a, b) for a, b in zip(qubits[:-1], qubits[1:])), flip)


def _ghz_parity(qubits: Sequence[cirq.Qid], label: int, rng: np.random.Generator) -> cirq.Circuit:
    phase = cirq.rz(rng.uniform(*(HIGH if label else LOW))).on(qubits[rng.integers(len(qubits))])
    return cirq.Circuit(cirq.H(qubits[0]), (cirq.CNOT(a, b) for a, b in zip(qubits[:-1], qubits[1:])), phase)


def _product_x(qubits: Sequence[cirq.Qid], label: int, rng: np.random.Generator) -> cirq.Circuit:
    angle = rng.uniform(-3 * np.pi / 8, -np.pi / 4) if label else rng.uniform(5 * np.pi / 8, 3 * np.pi / 4)
    return cirq.Circuit(cirq.ry(angle).on_each(qubits))


def _product(qubits: Sequence[cirq.Qid], label: int, rng: np.random.Generator) -> cirq.Circuit:
    angle = rng.uniform(5 * np.pi / 8, 7 * np.pi / 8) if label else rng.uniform(np.pi / 8, 3 * np.pi / 8)
    phases = rng.uniform(0, 2 * np.pi, len(qubits))
    return cirq.Circuit(cirq.ry(angle).on_each(qubits), (cirq.rz(p).on(q) for p, q in zip(phases, qubits)))


FAMILIES: dict[str, Callable[[Sequence[cirq.Qid], int, np.random.Generator], cirq.Circuit]] = {
    "cluster": _cluster, "ghz": _ghz, "product": _product, "ghz_parity": _ghz_parity, "product_x": _product_x}
MIXTURE = ("cluster", "ghz", "product")  # the default mixture: labels in three-, two- and one-body Z/X terms
# Labels in the n-body X parity, in Z, and in X with Z reversed: no one readout serves them all.
HARD_MIXTURE = ("ghz_parity", "product", "product_x")


class QuantumSplit(NamedTuple):
    """Circuits and labels, split: labels int32 in {0, 1}, families int32 indices into `families`."""

    x_train: list[cirq.Circuit]
    x_test: list[cirq.Circuit]
    y_train: np.ndarray
    y_test: np.ndarray
    family_train: np.ndarray
    family_test: np.ndarray
    families: tuple[str, ...]

    def tensors(self) -> tuple[tf.Tensor, tf.Tensor, np.ndarray, np.ndarray]:
        """(x_train, x_test, y_train, y_test) with the circuits as `tfq.convert_to_tensor` strings."""
        return tfq.convert_to_tensor(self.x_train), tfq.convert_to_tensor(self.x_test), self.y_train, self.y_test


def generate(qubits: Sequence[cirq.Qid], n_samples: int, families: Sequence[str] = MIXTURE, *,
             seed: int = 0, test_size: float = 0.3, jitter: float = 0.1) -> QuantumSplit:
    """A balanced, shuffled, split data set of `families` (see the module docstring), reproducible by `seed`.

    Args:
        qubits: the qubits the states live on (at least 2).
        n_samples: total samples; each family gets ``n_samples // len(families)``, half per label.
        families: names from `FAMILIES`, each at most once.
        seed: the only source of randomness.
        test_size: fraction of the shuffled samples held out for testing.
        jitter: std of the ``ry`` applied to every qubit last.
    """
    qubits = validate_qubits(qubits)
    if len(qubits) < 2:
        raise ValueError(f"qubits has {len(qubits)} qubit; the state families need at least 2.")
    families = (families,) if isinstance(families, str) else tuple(families)
    unknown = [f for f in families if f not in FAMILIES]
    if not families or unknown or len(set(families)) != len(families):
        raise ValueError(f"families={families!r} is not allowed; use distinct names from {tuple(FAMILIES)}.")
    per_family = validate_positive_int(n_samples, "n_samples") // len(families)
    if per_family < 2:
        raise ValueError(f"n_samples={n_samples} gives fewer than 2 samples to each of {len(families)} families.")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}.")
    rng = np.random.default_rng(seed)
    family = np.repeat(np.arange(len(families)), per_family)  # <int>[N]
    label = np.tile(np.arange(per_family) % 2, len(families))  # <int>[N]
    order = rng.permutation(len(family))
    family, label = family[order].astype(np.int32), label[order].astype(np.int32)
    circuits = [FAMILIES[families[f]](qubits, y, rng) + cirq.Circuit(
        cirq.ry(rng.normal(0.0, jitter)).on(q) for q in qubits) for f, y in zip(family, label)]
    split = int(round(len(circuits) * (1 - test_size)))
    return QuantumSplit(circuits[:split], circuits[split:], label[:split], label[split:],
                        family[:split], family[split:], families)


def excited_cluster_states(qubits: Sequence[cirq.Qid], n_samples: int, *, seed: int = 0, test_size: float = 0.3
                           ) -> tuple[list[cirq.Circuit], list[cirq.Circuit], np.ndarray, np.ndarray]:
    """The ``"cluster"`` family alone, as (train circuits, test circuits, train labels, test labels).

    A continuous version of `tfq.datasets.excited_cluster_states` with as many samples as asked.
    """
    return tuple(generate(qubits, n_samples, ("cluster",), seed=seed, test_size=test_size)[:4])
