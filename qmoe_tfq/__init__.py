"""qmoe_tfq: quantum mixture-of-experts (QMoE) Keras layers on Cirq and TensorFlow Quantum.

Importing this package selects the legacy Keras 2 implementation (``tf_keras``) that
TensorFlow Quantum is built on. It must therefore be imported before ``tensorflow.keras`` is
first touched; otherwise an ``ImportError`` explains what to change.
"""
import importlib
import os
import sys
from pathlib import Path

if os.environ.get("TF_USE_LEGACY_KERAS", "1") != "1":
    raise ImportError(
        "qmoe_tfq needs TF_USE_LEGACY_KERAS=1 (TensorFlow Quantum only works with tf_keras), "
        f"but the environment sets TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']!r}.")
os.environ["TF_USE_LEGACY_KERAS"] = "1"

__version__ = "0.1.0"


def _command_line() -> bool:
    """True in the ``qmoe-tfq`` console script, which parses its arguments before it loads the library
    (TensorFlow takes seconds to import; ``--help`` and usage errors need none of it)."""
    return Path(sys.argv[0]).stem == "qmoe-tfq"


if _command_line():
    def __getattr__(name: str) -> object:
        # import_module, not `from qmoe_tfq import api`: that would ask this function for `api` while it loads
        return getattr(importlib.import_module("qmoe_tfq.api"), name)
else:
    from qmoe_tfq.api import *  # noqa: E402,F401,F403
    from qmoe_tfq.api import __all__  # noqa: E402,F401
