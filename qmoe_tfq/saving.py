"""Model files: safe loading, atomic saving, and SavedModel export for serving.

Loading never runs code stored in a file unless asked: `load_model` reads every stored config as
JSON first and refuses, unless ``safe_mode=False``, ``Lambda`` layers and any other stored Python
function (a ``*_type: "lambda"`` entry, e.g. a ``ResidualWrapper``'s ``residual_fn``) at any depth,
a config naming a module outside Keras, TensorFlow, TFQ and this package (importing it would run
it), and a TF-format directory whose Keras config cannot be read before loading. Saving never destroys the previous model: every file or directory is written
beside its destination under a temporary name and moved into place when complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import h5py
import tensorflow as tf
import tf_keras as keras
from tf_keras.src.utils.generic_utils import to_snake_case  # how .keras files name layers' weights

from qmoe_tfq.execution.backends import runs_in_python
from qmoe_tfq.execution.input_checks import CheckedCircuits
from qmoe_tfq.experts import ExpertPQC
from qmoe_tfq.mixture import MixtureLayer
from qmoe_tfq.serialization import register_tfq_ops

SERVING_OUTPUT = "output"
UNSAFE_CLASSES = ("Lambda",)
SAFE_MODULES = ("keras", "tf_keras", "tensorflow", "tensorflow_quantum", "qmoe_tfq", "builtins")


def is_saved_model(path: str | os.PathLike) -> bool:
    """True when `path` is a SavedModel directory."""
    return os.path.isfile(os.path.join(os.fspath(path), "saved_model.pb"))


def _stored_code(tree: Any) -> Iterator[str]:
    """What in a (nested) Keras config would run code on loading: Lambda layers, stored lambdas, foreign modules."""
    if isinstance(tree, dict):
        if tree.get("class_name") in UNSAFE_CLASSES:
            yield f"a {tree['class_name']} layer"
        for key, value in tree.items():
            if key.endswith("_type") and value == "lambda":
                yield f"a stored Python function ({key[:-len('_type')]})"
        module = tree.get("module")
        if isinstance(module, str) and module.split(".")[0] not in SAFE_MODULES:
            yield f"the module {module!r}, which loading would import"
        for value in tree.values():
            yield from _stored_code(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _stored_code(value)


def _stored_configs(path: str) -> list[Any]:
    """The Keras configs a .keras or .h5 file or a TF-format directory holds, read as JSON (nothing deserialized)."""
    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            return [json.loads(archive.read("config.json"))]
    if is_saved_model(path):
        from tf_keras.protobuf import saved_metadata_pb2

        metadata_file = os.path.join(path, "keras_metadata.pb")
        if not os.path.isfile(metadata_file):
            raise ValueError("it has no keras_metadata.pb, so its Keras config cannot be checked before loading "
                             "(a serving SavedModel from export_saved_model loads with qmoe_tfq.load_saved_model; a "
                             "pre-2.5 TF-format model only with safe_mode=False)")
        metadata = saved_metadata_pb2.SavedMetadata()
        with open(metadata_file, "rb") as file:
            metadata.ParseFromString(file.read())
        return [json.loads(node.metadata) for node in metadata.nodes if node.metadata]
    with h5py.File(path, "r") as file:
        text = file.attrs.get("model_config")
    return [] if text is None else [json.loads(text.decode() if isinstance(text, bytes) else text)]


def load_model(path: str | os.PathLike, *, safe_mode: bool = True, custom_objects: dict | None = None,
               compile: bool = True) -> keras.Model:
    """Loads a ``.keras``, ``.h5`` or TF-format Keras model, refusing code stored in the file.

    With ``safe_mode=True`` (the default) a model holding a ``Lambda`` layer or any other stored
    Python function, at the top level or inside a QMoE router or expert, or naming a module outside
    Keras, TensorFlow, TFQ and this package, is refused before anything in it is deserialized or
    imported, in every format. Pass ``safe_mode=False`` only for files you trust.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: the file holds layers that would run stored code, or is not a Keras model.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model at {path!r}.")
    if not (path.endswith((".keras", ".h5")) or is_saved_model(path)):
        raise ValueError(f"{path!r} is not a Keras model: expected a .keras or .h5 file or a SavedModel directory.")
    if safe_mode:
        try:
            unsafe = sorted({found for config in _stored_configs(path) for found in _stored_code(config)})
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path!r} is not a readable Keras model: {error}") from None
        if unsafe:
            raise ValueError(f"{path!r} holds {', '.join(unsafe)}: code that would run on loading; refused. "
                             "Pass safe_mode=False only if you trust the file.")
    register_tfq_ops()
    with _upgraded_keras_file(path) as readable:
        return keras.models.load_model(readable, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)


def _weight_paths(config: dict, coherent_class: bool) -> list[str]:
    """Where a `.keras` file keeps each top-level layer's weights: ``layers/<class in snake case>[_<count>]``.

    With `coherent_class`, a format 1-3 ``QMoELayer(aggregation="coherent")`` counts as the
    `CoherentQMoELayer` it loads as.
    """
    used, paths = {}, []
    for layer in config.get("config", {}).get("layers", []):
        name = layer.get("class_name", "")
        if coherent_class and name == "QMoELayer" and layer.get("config", {}).get("aggregation") == "coherent":
            name = "CoherentQMoELayer"
        snake = to_snake_case(name)
        used[snake] = used.get(snake, -1) + 1
        paths.append(f"layers/{snake}" + (f"_{used[snake]}" if used[snake] else ""))
    return paths


@contextlib.contextmanager
def _upgraded_keras_file(path: str) -> Iterator[str]:
    """`path`, or for a `.keras` file of format 1-3 with coherent aggregation a copy whose weights sit where
    `CoherentQMoELayer` (a class of its own since format 4) looks for them: that format locates weights by
    class name."""
    config = {}
    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    moves = [(old, new) for old, new in zip(_weight_paths(config, False), _weight_paths(config, True)) if old != new]
    if not moves:
        yield path
        return
    with tempfile.TemporaryDirectory() as directory:
        copy = os.path.join(directory, os.path.basename(path))
        with zipfile.ZipFile(path) as source, zipfile.ZipFile(copy, "w") as target:
            for item in source.infolist():
                if item.filename != "model.weights.h5":
                    target.writestr(item, source.read(item))
            weights = os.path.join(directory, "model.weights.h5")
            with open(weights, "wb") as file:
                file.write(source.read("model.weights.h5"))
            with h5py.File(weights, "r+") as file:
                for index, (old, _) in enumerate(moves):  # in two steps: a new path may be another's old one
                    file.move(old, f"moving_{index}")
                for index, (_, new) in enumerate(moves):
                    file.move(f"moving_{index}", new)
            target.write(weights, "model.weights.h5")
        yield copy


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary sibling of `path` to write; when the block ends without error it replaces `path`.

    A file is replaced by one rename, so `path` is always either the old or the new model. A
    directory cannot be replaced in one step: the old one is renamed aside, the new one moved in, the
    old one removed; a kill between the two renames leaves the old model at ``<path>.old-<id>``.
    """
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: the directory {directory!r} does not exist.")
    stem, suffix = os.path.splitext(name) if name.endswith((".keras", ".h5")) else (name, "")
    token = uuid.uuid4().hex[:8]
    temporary = os.path.join(directory, f".{stem}.tmp-{token}{suffix}")
    try:
        yield temporary
        if os.path.isdir(temporary) and os.path.exists(path):
            aside = f"{path}.old-{token}"
            os.replace(path, aside)
            os.replace(temporary, path)
            shutil.rmtree(aside) if os.path.isdir(aside) else os.remove(aside)
        else:
            os.replace(temporary, path)
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        elif os.path.exists(temporary):
            os.remove(temporary)


def save_model(model: keras.Model, path: str | os.PathLike, **kwargs) -> None:
    """`model.save(path, **kwargs)`, atomically: a kill or a full disk leaves the previous model intact.

    A TF-format directory is written without custom gradients (unless `options` says otherwise):
    TFQ's finite-difference differentiators capture tensors that a SavedModel cannot store
    ("invalid capture"), and a Keras loader rebuilds each layer from its config, differentiator
    included, so the loaded model differentiates as it did.
    """
    keras_file = str(path).endswith((".keras", ".h5")) or kwargs.get("save_format") in ("h5", "keras")
    if not keras_file:
        kwargs.setdefault("options", tf.saved_model.SaveOptions(experimental_custom_gradients=False))
    with atomic_path(path) as temporary:
        model.save(temporary, **kwargs)


def serving_input_spec(model: keras.Model) -> tf.TensorSpec:
    """The serving signature's input: float features or serialized circuits, as the model takes."""
    if len(model.inputs) != 1:
        raise ValueError(f"export needs a model with one input, this one has {len(model.inputs)}.")
    model_input = model.inputs[0]
    if model_input.dtype == tf.string:
        return tf.TensorSpec([None], tf.string, name="circuits")
    return tf.TensorSpec([None, *model_input.shape[1:]], tf.float32, name="features")


def _unexportable_layers(model: keras.Model) -> list[str]:
    """Our layers running on a Cirq backend: a Python callback, which a SavedModel cannot carry."""
    return [layer.name for layer in model.submodules
            if isinstance(layer, (MixtureLayer, ExpertPQC)) and runs_in_python(layer.backend)]


def export_saved_model(model: keras.Model, path: str | os.PathLike) -> tf.TensorSpec:
    """Exports `model` as a TensorFlow SavedModel with a ``serving_default`` signature, atomically.

    The signature takes ``features`` <float32>[batch, n_features] when the model encodes floats
    in-graph, else ``circuits`` <string>[batch] (from `tfq.convert_to_tensor`), and returns
    ``{"output": predictions}``, and nothing else: only the serving function is traced. A model on
    the statevector simulator taking features is then plain TensorFlow, served by ``tensorflow``
    alone; one that runs TFQ ops loads where they are registered (`load_saved_model`). A model on
    a Cirq simulator or sampler is refused: move it with ``with_backend(model, "noiseless")`` (or
    ``"noisy"``) first.

    Returns:
        The input spec of the serving signature.
    """
    unexportable = _unexportable_layers(model)
    if unexportable:
        raise ValueError(f"layers {unexportable} run on a Cirq simulator or sampler, a Python callback that a "
                         "SavedModel cannot carry; export qmoe_tfq.with_backend(model, 'noiseless') instead.")
    spec = serving_input_spec(model)

    @tf.function(input_signature=[spec])
    def serve(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {SERVING_OUTPUT: model(inputs, training=False)}

    # A tf.Module rather than the Keras model: Keras would also trace every layer's own call, and an
    # ExpertPQC's standalone call holds TFQ ops even when the model runs on the statevector kernel.
    module = tf.Module()
    module.serve = serve
    module.captured = list(serve.get_concrete_function().variables)  # weights, and the gate's metric state
    # and the tables of checked input circuits (saved empty)
    module.checks = [t for t in tf.train.TrackableView(model).descendants() if isinstance(t, CheckedCircuits)]
    with atomic_path(path) as temporary:
        tf.saved_model.save(module, temporary, signatures={"serving_default": serve})
    return spec


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
