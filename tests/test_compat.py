"""tf_keras 2.18's float seed bound: seeding, then building layers (TypeError on 3.12, warnings on 3.11)."""
import warnings

import random

import cirq
import numpy as np
import tensorflow as tf
import tf_keras as keras

import qmoe_tfq as qmoe  # noqa: F401  (applies the patch)
from qmoe_tfq.compat import IntegralRandom


def test_integral_float_bounds_draw_what_integer_bounds_draw():
    assert [IntegralRandom(7).randint(1, 1e9) for _ in range(1)] == [random.Random(7).randint(1, 10**9)]


def test_seeded_initializers_build_and_repeat():
    # on Python 3.12 the second line raised TypeError inside tf_keras before the patch
    draws = []
    for _ in range(2):
        keras.utils.set_random_seed(3)
        layer = keras.layers.Dense(2)
        layer.build((None, 3))
        draws.append(layer.kernel.numpy())
    np.testing.assert_array_equal(*draws)


def test_seeded_initializers_warn_nothing():
    keras.utils.set_random_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Python 3.11 warned "non-integer arguments to randrange()"
        keras.layers.Dense(2).build((None, 3))


class SignedFeatures(keras.layers.Layer):
    """A user's classical expert whose `call` needs AutoGraph: a Python `if` on a tensor."""

    def call(self, features):
        if tf.reduce_sum(features) > 0:
            return -features[:, :2]
        return features[:, :2]


def test_autograph_calls_the_package_as_is_and_still_converts_a_users_layer_inside_it():
    from tensorflow.python.autograph.impl import conversion

    from qmoe_tfq import dispatch, layers

    assert conversion.is_allowlisted(dispatch.combine) and conversion.is_allowlisted(layers.QMoELayer.call)
    assert not conversion.is_allowlisted(SignedFeatures.call)
    keras.utils.set_random_seed(0)
    moe = qmoe.QMoELayer(cirq.GridQubit.rect(1, 2), experts=[SignedFeatures(), SignedFeatures()],
                         router=keras.layers.Dense(2), top_k=1)
    for sign in (1.0, -1.0):
        x = sign * np.random.default_rng(0).uniform(0.5, 1.0, size=(6, 3)).astype(np.float32)  # [6, 3]
        # traced (Keras's steps are), the user's `if` ran as a tf.cond, converted; eagerly it is plain Python
        np.testing.assert_allclose(tf.function(moe)(tf.constant(x)).numpy(), moe(tf.constant(x)).numpy(), rtol=1e-6)
