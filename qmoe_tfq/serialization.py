"""Saving QMoE models: Cirq-JSON config fields, the format version, TFQ op loading and SavedModel export.

Keras configs carry circuits, qubits and observables as Cirq JSON text (never pickles), and every
layer config of ours carries ``format_version`` so a model written by a newer qmoe_tfq is refused
with a clear message instead of being half-loaded.
"""
from __future__ import annotations

import os
from typing import Any

import cirq
import tensorflow as tf
import tf_keras as keras

FORMAT_VERSION = 1
SERVING_OUTPUT = "output"


def to_cirq_json(value: Any) -> str:
    """Cirq objects (qubits, circuits, Pauli sums, lists of them) as Cirq JSON text."""
    return cirq.to_json(value)


def from_cirq_json(text: str | None) -> Any:
    """Inverse of `to_cirq_json`; lists come back as lists; None stays None."""
    if text is None:
        return None
    return cirq.read_json(json_text=text)


def check_format_version(config: dict, layer: str) -> dict:
    """Pops and checks ``format_version`` from a layer config; returns the rest."""
    config = dict(config)
    version = config.pop("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{layer} config has format_version={version!r}, but this qmoe_tfq reads versions up to "
            f"{FORMAT_VERSION}; upgrade qmoe_tfq to load this model.")
    return config


def read_layer_config(config: dict, layer: str, cirq_fields: tuple[str, ...]) -> dict:
    """A layer config ready for ``cls(**config)``: version checked, `cirq_fields` decoded from Cirq JSON."""
    config = check_format_version(config, layer)
    for name in cirq_fields:
        config[name] = from_cirq_json(config.get(name))
    return config


def register_tfq_ops() -> None:
    """Loads every TFQ op library, so a SavedModel with TFQ ops can be loaded in a fresh process.

    TFQ 0.7.6 loads its op libraries lazily, on first use from Python; `tf.saved_model.load`
    needs them registered beforehand ("Op type not registered 'TfqAdjointGradient'").
    Without qmoe_tfq installed the same is done by touching each library module::

        from tensorflow_quantum.core.ops import tfq_adj_grad_op, tfq_simulate_ops, tfq_utility_ops
        for module in (tfq_adj_grad_op.SIM_OP_MODULE, tfq_simulate_ops.SIM_OP_MODULE,
                       tfq_utility_ops.UTILITY_OP_MODULE):
            dir(module)
    """
    from tensorflow_quantum.core.ops import (
        tfq_adj_grad_op, tfq_ps_util_ops, tfq_simulate_ops, tfq_unitary_op, tfq_utility_ops)
    from tensorflow_quantum.core.ops.math_ops import inner_product_op
    from tensorflow_quantum.core.ops.noise import noisy_expectation_op

    for library in (tfq_adj_grad_op.SIM_OP_MODULE, tfq_simulate_ops.SIM_OP_MODULE,
                    tfq_utility_ops.UTILITY_OP_MODULE, tfq_ps_util_ops.PS_UTIL_MODULE,
                    tfq_unitary_op.OP_MODULE, inner_product_op.MATH_OP_MODULE,
                    noisy_expectation_op.NOISY_OP_MODULE):
        dir(library)


def serving_input_spec(model: keras.Model) -> tf.TensorSpec:
    """The serving signature's input: float features or serialized circuits, as the model takes."""
    if len(model.inputs) != 1:
        raise ValueError(f"export needs a model with one input, this one has {len(model.inputs)}.")
    model_input = model.inputs[0]
    if model_input.dtype == tf.string:
        return tf.TensorSpec([None], tf.string, name="circuits")
    return tf.TensorSpec([None, *model_input.shape[1:]], tf.float32, name="features")


def export_saved_model(model: keras.Model, path: str | os.PathLike) -> tf.TensorSpec:
    """Exports `model` as a TensorFlow SavedModel with a ``serving_default`` signature.

    The signature takes ``features`` <float32>[batch, n_features] when the model encodes floats
    in-graph, else ``circuits`` <string>[batch] (from `tfq.convert_to_tensor`), and returns
    ``{"output": predictions}``. Load it anywhere with TFQ's ops registered (`load_saved_model`).

    Returns:
        The input spec of the serving signature.
    """
    spec = serving_input_spec(model)

    @tf.function(input_signature=[spec])
    def serve(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {SERVING_OUTPUT: model(inputs, training=False)}

    model.save(os.fspath(path), save_format="tf", signatures={"serving_default": serve})
    return spec


def is_saved_model(path: str | os.PathLike) -> bool:
    """True when `path` is a SavedModel directory."""
    return os.path.isfile(os.path.join(os.fspath(path), "saved_model.pb"))


def load_saved_model(path: str | os.PathLike) -> Any:
    """Loads a SavedModel exported by `export_saved_model` (or any SavedModel with TFQ ops).

    Returns the `tf.saved_model.load` object; call ``loaded.signatures["serving_default"]``.
    """
    path = os.fspath(path)
    if not is_saved_model(path):
        raise ValueError(f"{path!r} is not a SavedModel directory (no saved_model.pb inside).")
    register_tfq_ops()
    return tf.saved_model.load(path)


def run_serving(loaded: Any, inputs: Any) -> tf.Tensor:
    """Calls a loaded SavedModel's ``serving_default`` on `inputs`, checking dtype and shape first.

    Raises:
        ValueError: the model has no serving signature, or `inputs` do not fit it; the message
            gives the expected and the received dtype and shape.
    """
    if "serving_default" not in getattr(loaded, "signatures", {}):
        raise ValueError("this SavedModel has no 'serving_default' signature; export it with "
                         "qmoe_tfq.export_saved_model.")
    signature = loaded.signatures["serving_default"]
    (name, spec), = signature.structured_input_signature[1].items()
    inputs = tf.convert_to_tensor(inputs)
    if spec.dtype.is_floating and (inputs.dtype.is_floating or inputs.dtype.is_integer):
        inputs = tf.cast(inputs, spec.dtype)
    if inputs.dtype != spec.dtype or not spec.shape.is_compatible_with(inputs.shape):
        expected = "[" + ", ".join("batch" if d is None else str(d) for d in spec.shape) + "]"
        raise ValueError(
            f"the SavedModel expects {name} of dtype {spec.dtype.name} and shape {expected}, "
            f"got dtype {inputs.dtype.name} and shape {list(inputs.shape)}.")
    return signature(**{name: inputs})[SERVING_OUTPUT]
