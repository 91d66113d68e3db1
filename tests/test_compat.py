"""tf_keras 2.18's float seed bound: seeding, then building layers (TypeError on 3.12, warnings on 3.11)."""
import warnings

import random

import numpy as np
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
