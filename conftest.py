"""Names the docstring examples of qmoe_tfq use (run with ``pytest --doctest-modules``)."""
import pytest

import qmoe_tfq  # noqa: F401  (selects tf_keras before TensorFlow is imported)
import cirq
import numpy as np
import sympy
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(cirq=cirq, np=np, sympy=sympy, tf=tf, tfq=tfq, keras=keras)
