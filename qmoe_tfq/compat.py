"""Python 3.12 with tf_keras 2.18: `keras.utils.set_random_seed` made every later unseeded initializer fail.

tf_keras seeds its initializers with ``generator.randint(1, 1e9)`` on the `random.Random` that
`set_random_seed` installs. Python 3.12 refuses a float bound there (``TypeError: 'float' object cannot
be interpreted as an integer``; keras-team/tf-keras#803, fix proposed in #815, not in 2.18), so on 3.12
any seeded script building a Dense layer or a PQC crashed. `patch_seed_generator` makes the generator
that tf_keras installs take integral float bounds, and touches nothing else.
"""
from __future__ import annotations

import random
import sys
import types


class IntegralRandom(random.Random):
    """`random.Random` whose `randint` takes integral floats (``1e9``), as Python 3.11 did."""

    def randint(self, a: float, b: float) -> int:
        return super().randint(int(a), int(b))


def patch_seed_generator() -> None:
    """On Python >= 3.12, tf_keras's `set_random_seed` installs an `IntegralRandom`."""
    if sys.version_info < (3, 12):
        return
    from tf_keras.src.utils import tf_utils

    module = types.ModuleType("random", "the random module, with IntegralRandom as Random (qmoe_tfq.compat)")
    module.__dict__.update(random.__dict__)
    module.Random = IntegralRandom
    tf_utils.random = module
