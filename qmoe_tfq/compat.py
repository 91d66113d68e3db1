"""tf_keras 2.18 seeds its initializers with ``generator.randint(1, 1e9)``, a float bound.

On the `random.Random` that `keras.utils.set_random_seed` installs, Python 3.12 refuses it
(``TypeError: 'float' object cannot be interpreted as an integer``; keras-team/tf-keras#803, fix
proposed in #815, not in 2.18), so any seeded script building a Dense layer or a PQC crashed; Python
3.11 accepts it with a DeprecationWarning per initializer (1,200 in our test suite).
`patch_seed_generator` makes the generator that tf_keras installs take integral float bounds (the
same draws), and touches nothing else.

Keras converts a subclassed layer's `call` with AutoGraph, and AutoGraph then converts every function
that call reaches, recursively: this package's ~30 functions (reading inputs, routing, the routing terms,
dispatch) took ~2.2 s to transpile before a model's first step (8 qubits; the step after took 3.8 s to
trace, against 1.2 s on qsim). None of them needs it: their control flow is on Python values, and tensor
control flow is written with TF's ops. `skip_autograph` adds the package to AutoGraph's own list of
libraries it calls as they are (as it does with ``tensorflow`` and ``tf_keras``); a user's layer called
from ours (a classical expert or router) is still converted, as AutoGraph stays enabled around it.
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


def skip_autograph() -> None:
    """AutoGraph calls this package's functions unconverted (TensorFlow 2.18's rule list; see above)."""
    from tensorflow.python.autograph.core import config

    if not any(isinstance(rule, config.DoNotConvert) and rule.matches(__package__) for rule in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (config.DoNotConvert(__package__),) + config.CONVERSION_RULES
