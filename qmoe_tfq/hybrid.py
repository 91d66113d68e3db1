"""Classical parts for hybrid mixtures: a small classical expert and the classical router.

`QMoELayer(experts=[...], router=...)` takes any `tf_keras` layers beside its PQC experts; these
are the ones the model builders use, so that quantum and classical parts are compared at similar
size and output range.
"""
from __future__ import annotations

import tf_keras as keras

from qmoe_tfq.circuits import validate_positive_int


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class ClassicalExpert(keras.layers.Layer):
    """A two-layer tanh MLP, features ``[batch, F]`` -> ``[batch, units]`` in (-1, 1), like Pauli readouts.

    >>> ClassicalExpert(units=4, hidden=8)(tf.zeros([2, 3])).shape
    TensorShape([2, 4])
    """

    def __init__(self, units: int, hidden: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = validate_positive_int(units, "units")
        self.hidden = validate_positive_int(hidden, "hidden")
        self.inner = keras.layers.Dense(hidden, activation="tanh")
        self.outer = keras.layers.Dense(units, activation="tanh")

    def call(self, features):
        return self.outer(self.inner(features))

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "hidden": self.hidden}


def classical_router(n_experts: int) -> keras.layers.Dense:
    """The classical router: one dense layer from features to `n_experts` logits."""
    return keras.layers.Dense(validate_positive_int(n_experts, "n_experts"), name="classical_router")
