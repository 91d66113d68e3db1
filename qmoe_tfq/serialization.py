"""Layer configs: Cirq-JSON fields (read with limits), the format version, TFQ op registration.

Keras configs carry circuits, qubits and observables as Cirq JSON text (never pickles), and every
layer config of ours carries ``format_version`` so a model written by a newer qmoe_tfq is refused
with a clear message instead of being half-loaded. Files (loading, saving, export) are `saving`'s.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import cirq

# 2: QMoELayer's built-in circuits entangle first and its router reads correlations by default; its
#    config stores entangle_first and the router's readouts (version-1 configs load as they were built).
# 3: expert choice's default capacity factor is 2 (was 1); balance='bias' adds the bias to the logits
#    (was the probabilities).
# 4: QMoELayer's config holds its parts (gate, router, ansatz with its depth, execution), not settings.
FORMAT_VERSION = 4
# What sympy may appear in a config: numbers, symbols, sums, products and small integer powers
# (cirq writes rotations as symbol * pi**-1). Evaluating anything else, or huge numbers, can hang.
SYMPY_TYPES = ("sympy.Symbol", "sympy.Integer", "sympy.Float", "sympy.Rational", "sympy.Add", "sympy.Mul",
               "sympy.Pow", "sympy.pi", "sympy.E")
MAX_INTEGER = 10**15
MAX_POWER = 16
MAX_NODES = 1_000_000


def to_cirq_json(value: Any) -> str:
    """Cirq objects (qubits, circuits, Pauli sums, lists of them) as Cirq JSON text."""
    return cirq.to_json(value)


def _check_sympy(tree: Any, field: str) -> None:
    """Raises unless every sympy node of a parsed Cirq JSON tree is a bounded number or expression.

    Bounded in total, not only per node: powers multiply down a nest (``((10**16)**16)**16`` is
    10**4096, and a few more levels took sympy minutes), so the product of the exponents on any
    path may be at most `MAX_POWER`.
    """
    stack, nodes = [(tree, 1)], 0
    while stack:
        node, power = stack.pop()  # power: the product of the exponents of the powers above `node`
        nodes += 1
        if nodes > MAX_NODES:
            raise ValueError(f"config field {field!r} has more than {MAX_NODES} JSON nodes; refused.")
        if isinstance(node, list):
            stack.extend((child, power) for child in node)
        elif isinstance(node, dict):
            kind = node.get("cirq_type")
            if isinstance(kind, str) and kind.startswith("sympy."):
                power *= _check_sympy_node(node, kind, field)
                if power > MAX_POWER:
                    raise ValueError(f"config field {field!r} nests powers whose exponents multiply to {power}; "
                                     f"configs may hold powers up to {MAX_POWER} in total.")
            stack.extend((child, power) for child in node.values())


def _check_sympy_node(node: dict, kind: str, field: str) -> int:
    """Checks one sympy node; returns |its exponent| for a power (what its arguments are raised to), else 1."""
    if kind not in SYMPY_TYPES:
        raise ValueError(f"config field {field!r} holds a {kind} expression; configs may hold only {SYMPY_TYPES}.")
    numbers = [node.get(key) for key in ("i", "p", "q") if isinstance(node.get(key), int)]
    if any(abs(n) > MAX_INTEGER for n in numbers):
        raise ValueError(f"config field {field!r} holds the integer {max(numbers, key=abs)} in a {kind}; "
                         f"configs may hold integers up to {MAX_INTEGER}.")
    if kind != "sympy.Pow":
        return 1
    exponent = (node.get("args") or [None, None])[-1]
    value = exponent.get("i") if isinstance(exponent, dict) else exponent
    if not isinstance(value, int) or abs(value) > MAX_POWER:
        raise ValueError(f"config field {field!r} holds a power with exponent {exponent!r}; configs may hold "
                         f"only integer powers up to {MAX_POWER}.")
    return max(abs(value), 1)


def from_cirq_json(text: str | None, field: str = "cirq") -> Any:
    """Inverse of `to_cirq_json`, after `_check_sympy`; lists come back as lists; None stays None."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"config field {field!r} must be Cirq JSON text, got {type(text).__name__}.")
    try:
        tree = json.loads(text)
    except ValueError as error:
        raise ValueError(f"config field {field!r} is not valid JSON: {error}") from None
    _check_sympy(tree, field)
    return cirq.read_json(json_text=text)


def check_format_version(config: dict, layer: str) -> dict:
    """Pops and checks ``format_version`` from a layer config; returns the rest."""
    config = dict(config)
    version = config.pop("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{layer} config has format_version={version!r}, but this qmoe_tfq reads versions up to "
            f"{FORMAT_VERSION}; upgrade qmoe_tfq to load this model.")
    return config


def upgrade_qmoe_config(config: dict, version: int, readouts_v1: Callable[[], list]) -> None:
    """Makes a `QMoELayer` config of an older `version` build what it was saved with.

    `readouts_v1` gives version 1's router readouts (the Pauli order) for this config's qubits.
    """
    if version < 2:  # saved before the defaults read correlations: rebuild the circuits they had
        config["entangle_first"] = False
        if config.get("router") is None and config.get("aggregation") != "coherent":
            config["router_observables"] = readouts_v1()
    if version < 3 and config.get("routing") == "expert_choice" and config.get("capacity_factor") is None:
        config["capacity_factor"] = 1.0  # version 2's default
    if version < 3 and config.get("balance") == "bias":
        raise ValueError(f"this model was saved by qmoe_tfq format version {version} with balance='bias', whose "
                         "bias was added to the gate probabilities; version 3 adds it to the logits, so the saved "
                         "bias would select other experts. Load it with the qmoe_tfq that saved it, or retrain.")


def read_layer_config(config: dict, layer: str, cirq_fields: tuple[str, ...]) -> dict:
    """A layer config ready for ``cls(**config)``: version checked, `cirq_fields` decoded from Cirq JSON."""
    config = check_format_version(config, layer)
    for name in cirq_fields:
        config[name] = from_cirq_json(config.get(name), f"{layer}.{name}")
    return config


def register_tfq_ops() -> None:
    """Loads every TFQ op library, so a SavedModel with TFQ ops can be loaded in a fresh process.

    TFQ 0.7.6 loads its op libraries lazily, on first use from Python; `tf.saved_model.load`
    needs them registered beforehand ("Op type not registered 'TfqAdjointGradient'").
    ``import qmoe_tfq`` calls it. Without qmoe_tfq installed the same is done by touching each
    library module (the noisy one too, for models exported on ``backend="noisy"``)::

        from tensorflow_quantum.core.ops import tfq_adj_grad_op, tfq_simulate_ops, tfq_utility_ops
        from tensorflow_quantum.core.ops.noise import noisy_expectation_op
        for module in (tfq_adj_grad_op.SIM_OP_MODULE, tfq_simulate_ops.SIM_OP_MODULE,
                       tfq_utility_ops.UTILITY_OP_MODULE, noisy_expectation_op.NOISY_OP_MODULE):
            dir(module)
    """
    from tensorflow_quantum.core.ops import (
        tfq_adj_grad_op, tfq_ps_util_ops, tfq_simulate_ops, tfq_unitary_op, tfq_utility_ops)
    from tensorflow_quantum.core.ops.math_ops import inner_product_op
    from tensorflow_quantum.core.ops.noise import noisy_expectation_op

    for library in (tfq_adj_grad_op.SIM_OP_MODULE, tfq_simulate_ops.SIM_OP_MODULE,
                    tfq_utility_ops.UTILITY_OP_MODULE, tfq_ps_util_ops.PS_UTIL_MODULE,
                    tfq_unitary_op.OP_MODULE, inner_product_op.MATH_OP_MODULE,
                    noisy_expectation_op.NOISY_OP_MODULE):
        dir(library)
