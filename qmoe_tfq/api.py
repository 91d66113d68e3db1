"""The library's public names, which ``import qmoe_tfq`` loads: TensorFlow with tf_keras, TFQ's ops, and every
Keras class of this package registered for loaders.

The ``qmoe-tfq`` command parses its arguments first and loads this module only then (see `qmoe_tfq.cli`).
"""
import tensorflow as tf  # after qmoe_tfq/__init__ set TF_USE_LEGACY_KERAS
import tf_keras

if tf.keras.layers.Layer is not tf_keras.layers.Layer:
    raise ImportError(
        "tensorflow.keras was already loaded as Keras 3 before qmoe_tfq was imported, and "
        "TensorFlow Quantum layers cannot work with it. Import qmoe_tfq (or set the environment "
        "variable TF_USE_LEGACY_KERAS=1) before the first use of tf.keras.")

from qmoe_tfq.compat import patch_seed_generator, skip_autograph  # noqa: E402

patch_seed_generator()  # Python 3.12: keras.utils.set_random_seed, then any initializer, crashed in tf_keras 2.18
skip_autograph()  # transpiling this package's functions took ~2.2 s before a first step

from qmoe_tfq.circuits import (  # noqa: E402
    Ansatz,
    default_readouts,
    hardware_efficient_ansatz,
)
from qmoe_tfq.encoding import AngleEncoder, CircuitEncoder, encode  # noqa: E402
from qmoe_tfq.qcnn import QCNN  # noqa: E402
from qmoe_tfq.experts import ExpertPQC  # noqa: E402
from qmoe_tfq.coherent import CoherentQMoELayer  # noqa: E402
from qmoe_tfq.layers import QMoELayer  # noqa: E402
from qmoe_tfq.interpretability import RoutingLogger, plot_gate_heatmap, routing_statistics  # noqa: E402
from qmoe_tfq.routers import QuantumRouter, router_readouts  # noqa: E402
from qmoe_tfq.gating import DenseGate, ExpertChoice, TopK  # noqa: E402
from qmoe_tfq.execution.backends import Execution  # noqa: E402
from qmoe_tfq.models import build_qmoe_classifier, build_qnn_classifier, with_backend  # noqa: E402
from qmoe_tfq.saving import export_saved_model, load_model, load_saved_model, save_model  # noqa: E402
from qmoe_tfq.serialization import register_tfq_ops  # noqa: E402

register_tfq_ops()  # so keras/tf loaders in this process find every TFQ op a saved model may use

__all__ = [
    "Ansatz",
    "AngleEncoder",
    "CircuitEncoder",
    "CoherentQMoELayer",
    "DenseGate",
    "Execution",
    "ExpertChoice",
    "ExpertPQC",
    "QCNN",
    "QMoELayer",
    "QuantumRouter",
    "RoutingLogger",
    "build_qmoe_classifier",
    "build_qnn_classifier",
    "default_readouts",
    "encode",
    "export_saved_model",
    "hardware_efficient_ansatz",
    "load_model",
    "load_saved_model",
    "plot_gate_heatmap",
    "register_tfq_ops",
    "router_readouts",
    "routing_statistics",
    "save_model",
    "TopK",
    "with_backend",
]
