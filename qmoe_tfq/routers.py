"""The router's parts: its default readouts, the router layer made from the ``router=`` argument, and
the program a quantum router runs behind the data encoding. `QMoELayer` turns its readouts into logits
(times a learned `logit_scale`, or through a `router_head`).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import cirq
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq.circuits import validate_positive_int, validate_qubits
from qmoe_tfq.dispatch import refuse_data_symbols, single_program
from qmoe_tfq.execution.backends import Noise
from qmoe_tfq.execution.program import Executor, Program, decode_strings
from qmoe_tfq.experts import ExpertPQC, Part, is_quantum_part, quantum_part
from qmoe_tfq.inputs import Batch

ROUTER_READOUTS = ("local", "pauli")


def _neighbour_pairs(qubits: Sequence[cirq.Qid]) -> list[tuple[cirq.Qid, cirq.Qid]]:
    """Neighbouring pairs in list order, closed into a ring: disjoint pairs (0 1), (2 3), ... first."""
    ring = [(qubits[i], qubits[(i + 1) % len(qubits)]) for i in range(len(qubits) if len(qubits) > 2 else 1)]
    return ring[0::2] + ring[1::2]


def router_readouts(qubits: Sequence[cirq.Qid], n_experts: int, kind: str = "local") -> list[cirq.PauliString]:
    """`n_experts` distinct Pauli strings whose expectations serve as the router's logits.

    ``kind="local"`` (the default) reads correlations first, which is what quantum data carries:
    Z Z on neighbouring qubits (disjoint pairs first, then the rest of the ring), then single Z,
    then the three-body ``Z X Z`` around each qubit (a cluster state's stabilisers), then the rest
    of the ``"pauli"`` strings. Single-qubit expectations vanish on entangled states such as
    cluster and GHZ states, so a router reading only them cannot tell such inputs apart.
    ``kind="pauli"`` is the order of format-version-1 models (single Z, Z Z on every pair, then
    the same with X and with Y), kept so that they load as they were built.

    >>> [str(readout) for readout in router_readouts(cirq.LineQubit.range(4), 3)]
    ['Z(q(0))*Z(q(1))', 'Z(q(2))*Z(q(3))', 'Z(q(1))*Z(q(2))']
    >>> [str(readout) for readout in router_readouts(cirq.LineQubit.range(2), 3, "pauli")]
    ['Z(q(0))', 'Z(q(1))', 'Z(q(0))*Z(q(1))']
    """
    qubits = validate_qubits(qubits)
    validate_positive_int(n_experts, "n_experts")
    if kind not in ROUTER_READOUTS:
        raise ValueError(f"kind={kind!r} is not allowed; use one of {ROUTER_READOUTS}.")
    candidates = [cirq.PauliString({q: pauli for q in group}) for pauli in (cirq.Z, cirq.X, cirq.Y)
                  for size in (1, 2) for group in itertools.combinations(qubits, size)]
    if kind == "local":
        local = [cirq.Z(a) * cirq.Z(b) for a, b in _neighbour_pairs(qubits)] if len(qubits) > 1 else []
        local += [cirq.Z(q) for q in qubits]
        if len(qubits) > 2:
            local += [cirq.Z(qubits[i - 1]) * cirq.X(q) * cirq.Z(qubits[(i + 1) % len(qubits)])
                      for i, q in enumerate(qubits)]
        candidates = local + [c for c in candidates if c not in local]
    if n_experts > len(candidates):
        raise ValueError(
            f"n_experts={n_experts} needs more router readouts than {len(qubits)} qubits offer with "
            f"kind={kind!r} (at most {len(candidates)}); use more qubits, fewer experts, another kind, "
            "router_observables= or a router_head.")
    return candidates[:n_experts]


def make_router(router: Part | None, qubits: Sequence[cirq.Qid], observables: Callable[[], list[cirq.PauliSum]],
                builtin: Callable[[], cirq.Circuit], n_experts: int, has_head: bool,
                **executor_args) -> keras.layers.Layer:
    """The router layer: a classical layer as given, else an `ExpertPQC` (built-in, circuit or PQC).

    `observables` makes the readouts of a built-in or circuit router (a PQC brings its own). Without a
    head, a quantum router must read one value per expert.
    """
    if router is not None and not (is_quantum_part(router) or isinstance(router, keras.layers.Layer)):
        raise TypeError(f"router must be None, a cirq.Circuit, a tfq.layers.PQC / qmoe_tfq.ExpertPQC or a "
                        f"tf_keras layer, got {router!r}.")
    if router is not None and not is_quantum_part(router):
        return router
    circuit = builtin() if router is None else router
    readouts = None if isinstance(circuit, tfq.layers.PQC) else observables()
    layer = quantum_part(circuit, "router", qubits, readouts, "router", **executor_args)
    if not has_head and len(layer.readouts) != n_experts:
        raise ValueError(f"router reads {len(layer.readouts)} operators, but n_experts = {n_experts}: give as many "
                         "router readouts as experts, or a router_head such as keras.layers.Dense(n_experts) "
                         "to map them to logits.")
    return layer


def router_program(data_circuit: cirq.Circuit, data_names: Sequence[str], router_circuit: cirq.Circuit,
                   router_names: Sequence[str], observables: Sequence[cirq.PauliSum], qubits: Sequence[cirq.Qid],
                   noise: Noise | None) -> Program:
    """The quantum router behind the data encoding; values are laid out [data | router weights]."""
    refuse_data_symbols("router", router_names, data_names)
    return single_program(data_circuit + router_circuit, observables, [*data_names, *router_names], qubits, noise,
                          len(data_names))


class RouterLogits:
    """The router as one step of the layer's call: `logits(batch)` <float32>[B, E].

    A classical router reads the features; a quantum one runs its program (compiled once, here) on
    the batch's angles or input circuits, and its readouts times `scale` (or through `head`) are the
    logits. Built in `QMoELayer.build`; the router's weights, `scale` and `head` are read at every call.
    """

    def __init__(self, router: keras.layers.Layer, head: keras.layers.Layer | None, scale: tf.Variable | None,
                 executor: Executor, data_circuit: cirq.Circuit, data_names: Sequence[str],
                 qubits: Sequence[cirq.Qid], noise: Noise | None) -> None:
        self.router, self.head, self.scale = router, head, scale
        self.program = self.run = None
        if isinstance(router, ExpertPQC):
            self.program = router_program(data_circuit, data_names, router.model_circuit,
                                          decode_strings(router.symbol_names), router.readouts, qubits, noise)
            self.run = executor.compile(self.program)

    def logits(self, batch: Batch) -> tf.Tensor:
        if self.run is None:
            return self.router(batch.features)
        values = self.program.values(batch.angles, self.router.parameters)  # <float32>[B, D + n_router_symbols]
        readouts = self.run(values, inputs=batch.inputs)  # <float32>[B, n_router_readouts]
        return self.scale * readouts if self.head is None else self.head(readouts)
