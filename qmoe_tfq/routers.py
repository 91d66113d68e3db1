"""The router: its default readouts, the `QuantumRouter` part (circuit, observables, head), the
program it runs behind the data encoding, and `RouterLogits`, the step of a layer's call that turns
a batch into logits (readouts times the layer's learned `logit_scale`, or through the head).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import cirq
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq.circuits import (ROUTER_PREFIX, Ansatz, Observable, validate_observables, validate_positive_int,
                               validate_qubits)
from qmoe_tfq.dispatch import refuse_data_symbols, single_program
from qmoe_tfq.execution.backends import Noise
from qmoe_tfq.execution.program import Executor, Program, RowParts, decode_strings
from qmoe_tfq.experts import ExpertPQC, deserialize_part, quantum_part
from qmoe_tfq.inputs import Batch
from qmoe_tfq.qcnn import BUILTINS, QCNN, builtin_from_config
from qmoe_tfq.serialization import from_cirq_json, to_cirq_json

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
            "QuantumRouter(observables=...) or a head.")
    return candidates[:n_experts]


class QuantumRouter:
    """A quantum router: a circuit read with `observables`, whose readouts times a learned scale (the
    layer's ``logit_scale``, one weight) or through `head` are the gating logits.

    A part made on its own and handed to a mixture layer (``QMoELayer(..., router=QuantumRouter(...))``),
    which makes its `ExpertPQC` on the layer's qubits (``layer.router``) and runs it behind the data
    encoding in the same executor as the experts.

    >>> router = QuantumRouter(Ansatz(layers=3))  # the built-in ansatz, 3 layers deep
    >>> router.make(cirq.LineQubit.range(4), n_experts=2, ansatz=Ansatz()).symbol_names.shape  # 3 x 4 x (ry, rz)
    TensorShape([24])

    Args:
        circuit: None (the layer's ansatz), an `Ansatz` or `QCNN`, a `cirq.Circuit` (its symbols are its weights)
            or a `tfq.layers.PQC` / `ExpertPQC` (with its own operators; then no `observables`).
        observables: what the circuit is read with; `router_readouts(qubits, n_experts)` by default:
            neighbouring Z Z correlators first, which entangled (quantum-data) inputs carry.
        head: None, or a `tf_keras` layer mapping the readouts to E logits (e.g. ``Dense(n_experts)``,
            the hybrid QMoE router); then any number of readouts works.
    """

    def __init__(self, circuit: Ansatz | QCNN | cirq.Circuit | tfq.layers.PQC | None = None,
                 observables: Sequence[Observable] | None = None, head: keras.layers.Layer | None = None) -> None:
        if circuit is not None and not isinstance(circuit, (*BUILTINS, cirq.Circuit, tfq.layers.PQC)):
            raise TypeError(f"QuantumRouter's circuit must be None, a qmoe_tfq.Ansatz or QCNN, a cirq.Circuit or a "
                            f"tfq.layers.PQC / qmoe_tfq.ExpertPQC, got {circuit!r}.")
        if isinstance(circuit, tfq.layers.PQC) and observables is not None:
            raise ValueError("QuantumRouter: a PQC circuit brings its own operators; give no observables.")
        if head is not None and not isinstance(head, keras.layers.Layer):
            raise TypeError(f"QuantumRouter's head must be None or a tf_keras layer, got {head!r}.")
        self.circuit, self.observables, self.head = circuit, observables, head

    def make(self, qubits: Sequence[cirq.Qid], n_experts: int, ansatz: Ansatz | QCNN, **executor_args) -> ExpertPQC:
        """The router's `ExpertPQC` on `qubits` (`ansatz` when `circuit` is None). Without a head it must
        read one value per expert."""
        circuit = ansatz if self.circuit is None else self.circuit  # an empty cirq.Circuit is falsy
        if isinstance(circuit, BUILTINS):
            circuit = circuit.circuit(qubits, prefix=ROUTER_PREFIX)
        observables = None
        if not isinstance(circuit, tfq.layers.PQC):
            observables = (router_readouts(qubits, n_experts) if self.observables is None
                           else validate_observables(self.observables, qubits, "router observables"))
        layer = quantum_part(circuit, "router", qubits, observables, "router", **executor_args)
        if self.head is None and len(layer.readouts) != n_experts:
            raise ValueError(f"router reads {len(layer.readouts)} operators, but n_experts = {n_experts}: give as "
                             "many router observables as experts, or a head such as keras.layers.Dense(n_experts) "
                             "to map them to logits.")
        return layer

    def get_config(self) -> dict:
        circuit = self.circuit
        if isinstance(circuit, BUILTINS):
            circuit = {"ansatz": circuit.get_config()}
        elif isinstance(circuit, tfq.layers.PQC):
            circuit = keras.layers.serialize(circuit)
        elif circuit is not None:
            circuit = to_cirq_json(circuit)
        return {"circuit": circuit, "observables": None if self.observables is None else to_cirq_json(
            list(self.observables)), "head": None if self.head is None else keras.layers.serialize(self.head)}

    def serialize(self, made: ExpertPQC) -> dict:
        """This router as a layer's config holds it, given `made`, the `ExpertPQC` it made: a PQC circuit as that
        PQC, any other circuit with the observables it reads (a saved model must not change with the defaults)."""
        pqc = isinstance(self.circuit, tfq.layers.PQC)
        router = QuantumRouter(made if pqc else self.circuit, None if pqc else made.readouts, self.head)
        return {"class_name": "QuantumRouter", "config": router.get_config()}

    @classmethod
    def from_config(cls, config: dict, execution: dict) -> QuantumRouter:
        """`execution`: the layer config's stored execution fields, for a PQC circuit (see `deserialize_part`)."""
        circuit = config.get("circuit")
        if isinstance(circuit, dict) and "ansatz" in circuit:
            circuit = builtin_from_config(circuit["ansatz"])
        elif isinstance(circuit, dict):
            circuit = deserialize_part(circuit, execution)
        elif circuit is not None:
            circuit = from_cirq_json(circuit, "router.circuit")
        head = config.get("head")
        return cls(circuit, from_cirq_json(config.get("observables"), "router.observables"),
                   None if head is None else deserialize_part(head, execution))


def deserialize_router(entry: dict, execution: dict) -> QuantumRouter | keras.layers.Layer:
    """A layer config's ``router`` entry: a `QuantumRouter`, or a classical router's Keras layer."""
    if entry.get("class_name") == "QuantumRouter":
        return QuantumRouter.from_config(entry["config"], execution)
    return deserialize_part(entry, execution)


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
        if hasattr(self.run, "by_parts"):  # the kernel's: the weight part's unitary once per batch, where that pays
            readouts = self.run.by_parts(RowParts.shared(batch.angles, self.router.parameters), batch.inputs)
        else:
            values = self.program.values(batch.angles, self.router.parameters)  # <float32>[B, D + n_router_symbols]
            readouts = self.run(values, inputs=batch.inputs)  # <float32>[B, n_router_readouts]
        return self.scale * readouts if self.head is None else self.head(readouts)
