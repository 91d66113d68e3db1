"""Every configuration the README documents survives every save format, and files of earlier format versions load."""
import functools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import qmoe_tfq as qmoe
from configurations import CONFIGURATIONS, QUBITS, features, model_and_inputs, moe_layer

FIXTURES = Path(__file__).parent / "fixtures"
OLDER_FILES = sorted((folder.name, name, suffix) for folder in FIXTURES.glob("format*") for name in CONFIGURATIONS
                     for suffix in (".keras", ".h5") if (folder / f"{name}{suffix}").exists())


@functools.cache
def built(name: str) -> tuple:
    """(model, inputs, predictions) of configuration `name`, built once for the three formats (saving changes nothing)."""
    model, inputs = model_and_inputs(name)
    return model, inputs, model.predict(inputs, verbose=0)


@pytest.mark.parametrize("name, suffix", [(name, suffix) for name in CONFIGURATIONS for suffix in (".keras", ".h5", "_tf")])
def test_every_configuration_round_trips(tmp_path, name, suffix):
    model, inputs, expected = built(name)
    with logged_by_tensorflow() as messages:
        qmoe.save_model(model, tmp_path / f"model{suffix}")
    assert [m for m in messages if "Skipping full serialization" in m] == []  # every part is exported whole
    reloaded = qmoe.load_model(str(tmp_path / f"model{suffix}"))
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0), expected, atol=1e-5)
    assert as_text(moe_layer(reloaded).get_config()) == as_text(moe_layer(model).get_config())


class logged_by_tensorflow(logging.Handler):
    """The messages TensorFlow's logger writes inside the `with` block."""

    def __enter__(self) -> list[str]:
        self.messages = []
        tf.get_logger().addHandler(self)
        return self.messages

    def __exit__(self, *exc) -> None:
        tf.get_logger().removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def as_text(config: dict) -> str:
    """The config as sorted JSON lines, so a difference shows as a line diff."""
    return json.dumps(config, sort_keys=True, indent=1)


@pytest.mark.parametrize("folder, name, suffix", OLDER_FILES)
def test_files_of_every_format_version_load_with_their_predictions(folder, name, suffix):
    model = qmoe.load_model(str(FIXTURES / folder / f"{name}{suffix}"))
    x = features(name)
    inputs = x if model.inputs[0].dtype.is_floating else qmoe.encode(x, QUBITS)
    np.testing.assert_allclose(model.predict(inputs, verbose=0), np.load(FIXTURES / folder / f"{name}.npy"), atol=1e-5)


def test_the_fixtures_cover_every_configuration():
    assert len(OLDER_FILES) >= 2 * len(CONFIGURATIONS)
