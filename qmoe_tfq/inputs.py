"""What a layer takes, decided once when it is built: serialized circuits (checked in-graph for foreign
qubits and leftover symbols, then prepared once for the executor) or float features (turned into
their encoder's angles)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cirq
import numpy as np
import tensorflow as tf

from qmoe_tfq.encoding import FeatureEncoder
from qmoe_tfq.execution.input_checks import CheckedCircuits
from qmoe_tfq.execution.program import Executor, Inputs


class Batch(NamedTuple):
    """One batch as the router and the experts read it."""

    inputs: Inputs | None  # the input circuits, checked and prepared for the executor (None for features)
    features: tf.Tensor | None  # <float32>[B, F] (None for circuits)
    angles: tf.Tensor  # <float32>[B, D] data symbol values (D = 0 for circuits or without an encoder)


def circuit_batch(inputs: tf.Tensor, layer: str) -> tf.Tensor:
    """Checks serialized circuits <string>[batch] (or [batch, 1]) and returns them as [batch]."""
    if inputs.dtype != tf.string:
        raise TypeError(
            f"{layer} expects serialized circuits <string>[batch] (from tfq.convert_to_tensor or "
            f"qmoe_tfq.encode), got a tensor of dtype {inputs.dtype.name}.")
    if inputs.shape.rank == 2 and inputs.shape[1] == 1:
        inputs = tf.squeeze(inputs, axis=1)
    if inputs.shape.rank != 1:
        raise ValueError(f"{layer} expects circuits of shape [batch] or [batch, 1], got {inputs.shape}.")
    return inputs


def feeds_features(inputs: object) -> bool:
    """True when `inputs` (a tensor, Keras tensor or array) holds numbers rather than circuits."""
    try:
        dtype = tf.as_dtype(getattr(inputs, "dtype", None) or np.asarray(inputs).dtype)
    except TypeError:
        return False
    return dtype.is_floating or dtype.is_integer


class InputReader:
    """Reads one built layer's inputs as a `Batch`, with errors naming the layer and what it takes.

    Args:
        layer: the layer's name, for messages.
        qubits: the layer's qubits (input circuits may act on these only).
        executor: what runs the layer's circuits; it prepares input circuits once per batch.
        encoder: the encoder of float features, or None.
        n_features: the feature count for a layer that takes features; None for one taking circuits.
        why: for features, why the layer takes them (``"it encodes them with angle_encoder"``).
    """

    def __init__(self, layer: str, qubits: Sequence[cirq.Qid], executor: Executor, encoder: FeatureEncoder | None,
                 n_features: int | None, why: str = "") -> None:
        self.layer, self.qubits, self.executor = layer, qubits, executor
        self.encoder, self.n_features, self.why = encoder, n_features, why
        self.checked = CheckedCircuits(qubits, layer) if n_features is None else None

    @classmethod
    def for_shape(cls, layer: str, qubits: Sequence[cirq.Qid], executor: Executor, encoder: FeatureEncoder | None,
                  input_shape: tf.TensorShape, why: str | None) -> InputReader:
        """The reader of a layer built on `input_shape`: of features when there is `why` it takes them, else of
        circuits. Features must come as [batch, n_features]."""
        if why is None:
            return cls(layer, qubits, executor, encoder, None)
        if input_shape.rank != 2 or input_shape[-1] is None:
            raise ValueError(f"{layer} takes float features [batch, n_features] ({why}), got inputs of shape "
                             f"{input_shape}.")
        return cls(layer, qubits, executor, encoder, int(input_shape[-1]), why)

    def read(self, inputs: tf.Tensor) -> Batch:
        if self.n_features is None:
            if inputs.dtype != tf.string:
                raise TypeError(f"{self.layer} was built for serialized circuits <string>[batch], got a tensor of "
                                f"dtype {inputs.dtype.name}; for float features make a layer with an encoder.")
            circuits = circuit_batch(inputs, self.layer)  # <string>[B]
            circuits = self.checked(circuits)
            return Batch(self.executor.prepare(circuits, self.qubits), None, tf.zeros([tf.shape(circuits)[0], 0]))
        if not (inputs.dtype.is_floating or inputs.dtype.is_integer):
            raise TypeError(f"{self.layer} takes float features [batch, n_features] ({self.why}), got a tensor of "
                            f"dtype {inputs.dtype.name}.")
        if inputs.shape.rank != 2 or inputs.shape[-1] != self.n_features:
            raise ValueError(f"{self.layer} expects float features of shape [batch, {self.n_features}], "
                             f"got {inputs.shape}.")
        features = tf.cast(inputs, tf.float32)  # <float32>[B, F]
        angles = tf.zeros([tf.shape(features)[0], 0]) if self.encoder is None else self.encoder.angles(features)
        return Batch(None, features, angles)
