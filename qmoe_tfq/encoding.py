"""Angle encoding of classical features into circuits, in numpy (`encode`) and in-graph (`AngleEncoder`).

Feature ``i`` of ``n`` qubits is written as the angle ``scale * x[i]`` of gate
``rotations[i // n]`` on qubit ``i % n``, so one encoder holds up to
``len(qubits) * len(rotations)`` features.
"""
from __future__ import annotations

from collections.abc import Sequence

import cirq
import numpy as np
import sympy
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq.circuits import ROTATIONS, validate_positive_int, validate_qubits, validate_rotations
from qmoe_tfq.serialization import FORMAT_VERSION, read_layer_config, to_cirq_json

ENCODER_PREFIX = "x"


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class AngleEncoder(keras.layers.Layer):
    """Encodes float features ``[batch, n_features]`` as circuits ``<string>[batch]``, in-graph.

    The layer resolves a symbolic template circuit with ``scale * features`` using
    `tfq.resolve_parameters`, so a Keras model can take plain float inputs and still feed
    TFQ layers. `QMoELayer(encoder=...)` goes further and never materialises the circuits: it
    hands the angles straight to the simulator next to the expert weights.

    >>> qubits = cirq.GridQubit.rect(1, 2)
    >>> encoder = AngleEncoder(qubits)
    >>> circuits = encoder(tf.constant([[0.0, 1.0]]))
    >>> print(tfq.from_tensor(circuits)[0])
    (0, 0): ───Ry(0)───
    <BLANKLINE>
    (0, 1): ───Ry(π)───

    Args:
        qubits: the qubits features are written on.
        rotations: rotation gates, each adding one feature slot per qubit (``"rx"``, ``"ry"``,
            ``"rz"``).
        scale: angle per unit of feature; features in [0, 1] with ``scale=pi`` span half a turn.
        n_features: number of input features; inferred from the input shape when None.
    """

    def __init__(self, qubits: Sequence[cirq.Qid], rotations: Sequence[str] = ("ry",),
                 scale: float = np.pi, n_features: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.qubits = validate_qubits(qubits)
        self.rotations = validate_rotations(rotations)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale):
            raise ValueError(f"scale must be a finite number, got {scale!r}.")
        self.scale = float(scale)
        self.n_features = None
        if n_features is not None:
            self._set_n_features(n_features)

    @property
    def capacity(self) -> int:
        """The largest number of features this encoder can hold."""
        return len(self.qubits) * len(self.rotations)

    @property
    def symbol_names(self) -> tf.Tensor:
        """<string>[n_features] the template's symbol names, in feature order."""
        return self._symbol_names

    def _set_n_features(self, n_features: int) -> None:
        validate_positive_int(n_features, "n_features")
        if n_features > self.capacity:
            raise ValueError(
                f"n_features={n_features} is larger than this encoder supports: {len(self.qubits)} "
                f"qubits x {len(self.rotations)} rotations {self.rotations} = {self.capacity} "
                "features. Add qubits or rotations, or reduce the features (e.g. with PCA).")
        self.n_features = n_features
        self.symbols = [sympy.Symbol(f"{ENCODER_PREFIX}_{i:03d}") for i in range(n_features)]
        n = len(self.qubits)
        self.circuit = cirq.Circuit(
            ROTATIONS[self.rotations[i // n]](symbol).on(self.qubits[i % n])
            for i, symbol in enumerate(self.symbols))
        self._template = tfq.convert_to_tensor([self.circuit])
        self._symbol_names = tf.constant([str(s) for s in self.symbols])

    def build(self, input_shape: tf.TensorShape) -> None:
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 2 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name} expects float features of shape [batch, n_features], got {input_shape}.")
        if self.n_features is None:
            self._set_n_features(int(input_shape[-1]))
        elif input_shape[-1] != self.n_features:
            raise ValueError(
                f"{self.name} was configured for n_features={self.n_features} but got inputs of "
                f"shape {input_shape}.")
        super().build(input_shape)

    def angles(self, features: tf.Tensor) -> tf.Tensor:
        """<float32>[batch, n_features] rotation angles for `features`."""
        return self.scale * tf.cast(features, tf.float32)

    def call(self, features: tf.Tensor) -> tf.Tensor:
        if features.dtype.is_integer or features.dtype.is_floating:
            batch = tf.shape(features)[0]
            return tfq.resolve_parameters(
                tf.tile(self._template, [batch]), self._symbol_names, self.angles(features))
        raise TypeError(f"{self.name} expects float features, got a tensor of dtype {features.dtype.name}.")

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "qubits": to_cirq_json(self.qubits),
            "rotations": list(self.rotations),
            "scale": self.scale,
            "n_features": self.n_features,
            "format_version": FORMAT_VERSION,
        }

    @classmethod
    def from_config(cls, config: dict) -> AngleEncoder:
        return cls(**read_layer_config(config, cls.__name__, ("qubits",)))


def encode(features: np.ndarray, qubits: Sequence[cirq.Qid], rotations: Sequence[str] = ("ry",),
           scale: float = np.pi) -> tf.Tensor:
    """Angle-encodes a numpy array ``[n_samples, n_features]`` into a TFQ circuit tensor.

    >>> circuits = encode(np.array([[0.1, 0.5], [0.9, 0.2]]), cirq.GridQubit.rect(1, 2))
    >>> circuits.shape, circuits.dtype
    (TensorShape([2]), tf.string)
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array [n_samples, n_features], got shape {features.shape}.")
    return AngleEncoder(qubits, rotations=rotations, scale=scale)(features)
