"""Classical features into circuits: `AngleEncoder`, `CircuitEncoder` (any feature map) and `encode`.

Both encoders hold a symbolic circuit whose symbols stand for the features: symbol ``i`` takes
``scale * x[i]``. As Keras layers they resolve it in-graph into serialized circuits; inside
`QMoELayer` the circuit is prepended to the router's and experts' programs once, and only the
angles travel to the simulator, so no circuit is built per sample.
"""
from __future__ import annotations

from collections.abc import Sequence

import cirq
import numpy as np
import sympy
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq.circuits import ENCODER_PREFIX, ROTATIONS, validate_positive_int, validate_qubits, validate_rotations
from qmoe_tfq.execution.input_checks import assert_in_graph
from qmoe_tfq.serialization import FORMAT_VERSION, read_layer_config, to_cirq_json

def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}.")
    return float(scale)


class FeatureEncoder(keras.layers.Layer):
    """What every encoder shares: a feature-map circuit, its symbols in feature order and a scale.

    Subclasses call `_set_circuit` once they know their circuit (`AngleEncoder` when it knows
    ``n_features``, `CircuitEncoder` at construction).
    """

    def __init__(self, scale: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = _check_scale(scale)
        self.n_features: int | None = None

    def _set_circuit(self, circuit: cirq.Circuit, symbols: Sequence[sympy.Symbol]) -> None:
        self.circuit = circuit
        self.symbols = list(symbols)
        self.n_features = len(self.symbols)
        self._template = tfq.convert_to_tensor([circuit])  # <string>[1]
        self._symbol_names = tf.constant([str(s) for s in self.symbols])  # <string>[n_features]

    @property
    def symbol_names(self) -> tf.Tensor:
        """<string>[n_features] the circuit's symbol names, in feature order."""
        return self._symbol_names

    def build(self, input_shape: tf.TensorShape) -> None:
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 2 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name} expects float features of shape [batch, n_features], got {input_shape}.")
        if self.n_features is None:
            self._infer_n_features(int(input_shape[-1]))
        elif input_shape[-1] != self.n_features:
            raise ValueError(
                f"{self.name} was configured for n_features={self.n_features} but got inputs of "
                f"shape {input_shape}.")
        super().build(input_shape)

    def _infer_n_features(self, n_features: int) -> None:
        raise NotImplementedError

    def angles(self, features: tf.Tensor) -> tf.Tensor:
        """<float32>[batch, n_features] symbol values for `features`, in `symbol_names` order.

        NaN or inf features, or features so large that their angles overflow float32 (2e38 x pi),
        raise `tf.errors.InvalidArgumentError` (in-graph, also when served).
        """
        features = tf.cast(features, tf.float32)  # <float32>[B, F]
        angles = self.scale * features  # <float32>[B, F]
        checked = assert_in_graph(self._usable(angles), lambda: [self._problem(features, angles)])
        with tf.control_dependencies([checked]):
            return tf.identity(angles)

    def _usable(self, angles: tf.Tensor) -> tf.Tensor:
        """<bool>[] whether every angle can be a symbol's value: finite."""
        return tf.reduce_all(tf.math.is_finite(angles))

    def _problem(self, features: tf.Tensor, angles: tf.Tensor) -> tf.Tensor:
        """<string>[] what is wrong with `features` whose `angles` are not `_usable` (made only then)."""
        return tf.where(tf.reduce_all(tf.math.is_finite(features)),
                        f"{self.name}: features times scale={self.scale:g} overflow float32; rescale the features "
                        "(e.g. to [0, 1])", f"{self.name}: features must be finite (no NaN or inf)")

    def call(self, features: tf.Tensor) -> tf.Tensor:
        if not (features.dtype.is_integer or features.dtype.is_floating):
            raise TypeError(f"{self.name} expects float features, got a tensor of dtype {features.dtype.name}.")
        batch = tf.shape(features)[0]
        # circuits <string>[batch]
        return tfq.resolve_parameters(tf.tile(self._template, [batch]), self._symbol_names, self.angles(features))


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class AngleEncoder(FeatureEncoder):
    """Encodes float features ``[batch, n_features]`` as rotation angles, in-graph.

    Feature ``i`` of ``n`` qubits is the angle ``scale * x[i]`` of gate ``rotations[i // n]`` on
    qubit ``i % n``, so one encoder holds up to ``len(qubits) * len(rotations)`` features.

    >>> qubits = cirq.GridQubit.rect(1, 2)
    >>> encoder = AngleEncoder(qubits)
    >>> circuits = encoder(tf.constant([[0.0, 1.0]]))
    >>> print(tfq.from_tensor(circuits)[0])  # TFQ stores Ry(pi * x) as Y**x
    (0, 0): ───Y^0───
    <BLANKLINE>
    (0, 1): ───Y─────

    Args:
        qubits: the qubits features are written on.
        rotations: rotation gates, each adding one feature slot per qubit (``"rx"``, ``"ry"``,
            ``"rz"``).
        scale: angle per unit of feature; features in [0, 1] with ``scale=pi`` span half a turn.
        n_features: number of input features; inferred from the input shape when None.
    """

    def __init__(self, qubits: Sequence[cirq.Qid], rotations: Sequence[str] = ("ry",),
                 scale: float = np.pi, n_features: int | None = None, **kwargs) -> None:
        super().__init__(scale, **kwargs)
        self.qubits = validate_qubits(qubits)
        self.rotations = validate_rotations(rotations)
        if self.rotations[0] == "rz":
            raise ValueError(f"rotations={self.rotations!r} starts with 'rz': the first {len(self.qubits)} features would "
                             "only change the phase of |0>, which no readout sees (every input would give the same "
                             "output); start with 'rx' or 'ry', e.g. ('ry', 'rz').")
        if n_features is not None:
            self._infer_n_features(n_features)

    def _usable(self, angles: tf.Tensor) -> tf.Tensor:
        """<bool>[] whether every angle lies within a full turn either way (so none is NaN or inf).

        Beyond a full turn a feature gives the gate of one a turn smaller (with ``scale=pi``, 5.0, 3.0 and 1.0 give
        one gate; raw data such as wine's 1680 would scatter at random). Features a little beyond their training
        range (a test set after a MinMaxScaler) stay well within it.
        """
        return tf.reduce_all(tf.abs(angles) <= 2 * np.pi * (1 + 1e-5))

    def _problem(self, features: tf.Tensor, angles: tf.Tensor) -> tf.Tensor:
        bound = 2 * np.pi / abs(self.scale) if self.scale else np.inf
        largest = tf.strings.as_string(tf.reduce_max(tf.abs(features)), shortest=True)  # <string>[]
        beyond = tf.strings.join([
            f"{self.name}: features must lie in [-{bound:.4g}, {bound:.4g}] (scale={self.scale:g} times a feature is "
            "a rotation angle, and beyond a full turn features alias): rescale them, e.g. with a MinMaxScaler to "
            "[0, 1], or lower scale. Largest |feature|: ", largest])  # <string>[]
        return tf.where(tf.reduce_all(tf.math.is_finite(angles)), beyond, super()._problem(features, angles))

    @property
    def capacity(self) -> int:
        """The largest number of features this encoder can hold."""
        return len(self.qubits) * len(self.rotations)

    def _infer_n_features(self, n_features: int) -> None:
        validate_positive_int(n_features, "n_features")
        if n_features > self.capacity:
            raise ValueError(
                f"n_features={n_features} is larger than this encoder supports: {len(self.qubits)} "
                f"qubits x {len(self.rotations)} rotations {self.rotations} = {self.capacity} "
                "features. Add qubits or rotations, or reduce the features (e.g. with PCA).")
        symbols = [sympy.Symbol(f"{ENCODER_PREFIX}_{i:03d}") for i in range(n_features)]
        n = len(self.qubits)
        self._set_circuit(cirq.Circuit(ROTATIONS[self.rotations[i // n]](symbol).on(self.qubits[i % n])
                                       for i, symbol in enumerate(symbols)), symbols)

    def get_config(self) -> dict:
        return {**super().get_config(), "qubits": to_cirq_json(self.qubits), "rotations": list(self.rotations),
                "scale": self.scale, "n_features": self.n_features, "format_version": FORMAT_VERSION}

    @classmethod
    def from_config(cls, config: dict) -> AngleEncoder:
        return cls(**read_layer_config(config, cls.__name__, ("qubits",)))


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class CircuitEncoder(FeatureEncoder):
    """Any Cirq feature map as an encoder: symbol ``feature_symbols[i]`` takes ``scale * x[i]``.

    The circuit may use each feature symbol in several gates and with coefficients, as TFQ allows
    (``cirq.ZZPowGate(exponent=2 * x0)``; products of symbols are not allowed), e.g. an IQP-style
    map of single-qubit and ZZ phases:

    >>> q = cirq.LineQubit.range(2)
    >>> x0, x1 = sympy.symbols("x0 x1")
    >>> iqp = cirq.Circuit(cirq.H.on_each(*q), cirq.rz(x0)(q[0]), cirq.rz(x1)(q[1]),
    ...                    cirq.ZZPowGate(exponent=x0)(*q))
    >>> encoder = CircuitEncoder(iqp, [x0, x1], scale=np.pi)
    >>> encoder(tf.constant([[0.5, 0.25]])).shape, encoder.n_features
    (TensorShape([1]), 2)

    Args:
        circuit: the feature map, a `cirq.Circuit` whose only symbols are `feature_symbols`.
        feature_symbols: the symbols (or their names) standing for features 0, 1, ..., in order.
        scale: symbol value per unit of feature.
    """

    def __init__(self, circuit: cirq.Circuit, feature_symbols: Sequence[sympy.Symbol | str],
                 scale: float = 1.0, **kwargs) -> None:
        super().__init__(scale, **kwargs)
        if not isinstance(circuit, cirq.Circuit):
            raise TypeError(f"circuit must be a cirq.Circuit, got {circuit!r}.")
        if isinstance(feature_symbols, (str, sympy.Symbol)) or not isinstance(feature_symbols, Sequence):
            raise TypeError(f"feature_symbols must be a list of sympy symbols or names, got {feature_symbols!r}.")
        symbols = [sympy.Symbol(s) if isinstance(s, str) else s for s in feature_symbols]
        if not symbols or not all(isinstance(s, sympy.Symbol) for s in symbols) or len(set(symbols)) != len(symbols):
            raise ValueError(f"feature_symbols must be a non-empty list of distinct sympy symbols, got {feature_symbols!r}.")
        in_circuit = cirq.parameter_symbols(circuit)
        unused = [str(s) for s in symbols if s not in in_circuit]
        unknown = sorted(str(s) for s in in_circuit - set(symbols))
        if unused or unknown:
            raise ValueError(f"circuit's symbols must be exactly feature_symbols: {unused} are not in the "
                             f"circuit and {unknown} are not features.")
        self.qubits = sorted(circuit.all_qubits())
        self._set_circuit(circuit, symbols)

    def get_config(self) -> dict:
        return {**super().get_config(), "circuit": to_cirq_json(self.circuit),
                "feature_symbols": [str(s) for s in self.symbols], "scale": self.scale,
                "format_version": FORMAT_VERSION}

    @classmethod
    def from_config(cls, config: dict) -> CircuitEncoder:
        return cls(**read_layer_config(config, cls.__name__, ("circuit",)))


def check_encoder(encoder: object, qubits: Sequence[cirq.Qid]) -> FeatureEncoder | None:
    """A layer's ``encoder=`` argument: None, or a `FeatureEncoder` on some of `qubits`."""
    if encoder is not None and not isinstance(encoder, FeatureEncoder):
        raise TypeError(f"encoder must be None, a qmoe_tfq.AngleEncoder or a qmoe_tfq.CircuitEncoder, got {encoder!r}.")
    if encoder is not None and not set(encoder.qubits) <= set(qubits):
        raise ValueError(f"encoder qubits {[str(q) for q in encoder.qubits]} must be among the layer's "
                         f"qubits {[str(q) for q in qubits]}.")
    return encoder


def encode(features: np.ndarray, qubits: Sequence[cirq.Qid], rotations: Sequence[str] = ("ry",),
           scale: float = np.pi) -> tf.Tensor:
    """Angle-encodes a numpy array ``[n_samples, n_features]`` into a TFQ circuit tensor.

    >>> circuits = encode(np.array([[0.1, 0.5], [0.9, 0.2]]), cirq.GridQubit.rect(1, 2))
    >>> circuits.shape, circuits.dtype
    (TensorShape([2]), tf.string)
    """
    try:
        features = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(f"features must be numbers [n_samples, n_features]: {error}") from None
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array [n_samples, n_features], got shape {features.shape}.")
    if not np.isfinite(features).all():
        rows = np.flatnonzero(~np.isfinite(features).all(axis=1))
        raise ValueError(f"features contain NaN or inf (rows {rows[:5].tolist()}); encode finite values only.")
    return AngleEncoder(qubits, rotations=rotations, scale=scale)(features)
