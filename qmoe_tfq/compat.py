"""tf_keras 2.18 seeds its initializers with ``generator.randint(1, 1e9)``, a float bound.

On the `random.Random` that `keras.utils.set_random_seed` installs, Python 3.12 refuses it
(``TypeError: 'float' object cannot be interpreted as an integer``; keras-team/tf-keras#803, fix
proposed in #815, not in 2.18), so any seeded script building a Dense layer or a PQC crashed; Python
3.11 accepts it with a DeprecationWarning per initializer (1,200 in our test suite).
`patch_seed_generator` makes the generator that tf_keras installs take integral float bounds (the
same draws), and touches nothing else.
"""
from __future__ import annotations

import random
import types


class IntegralRandom(random.Random):
    """`random.Random` whose `randint` takes integral floats (``1e9``), as Python 3.11 did."""

    def randint(self, a: float, b: float) -> int:
        return super().randint(int(a), int(b))


def patch_seed_generator() -> None:
    """tf_keras's `set_random_seed` installs an `IntegralRandom`."""
    from tf_keras.src.utils import tf_utils

    module = types.ModuleType("random", "the random module, with IntegralRandom as Random (qmoe_tfq.compat)")
    module.__dict__.update(random.__dict__)
    module.Random = IntegralRandom
    tf_utils.random = module
