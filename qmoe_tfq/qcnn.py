"""The quantum convolutional neural network (QCNN) ansatz of Cong, Choi and Lukin (2019), as in TFQ's
QCNN tutorial: convolution layers of two-qubit unitaries on neighbouring pairs, each followed by a
pooling layer that folds half the qubits into the other half, until `output_qubits` remain.

A built-in circuit like `Ansatz`: ``ansatz=QCNN()`` makes every built-in expert and the router a
QCNN; ``experts=[QCNN(), ...]`` and ``router=QuantumRouter(QCNN(), ...)`` use it for one part. Read a
QCNN expert on the qubits that remain (``observables=[cirq.Z(q) for q in QCNN().output_qubits(qubits)]``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cirq
import sympy

from qmoe_tfq.circuits import Ansatz, validate_positive_int, validate_qubits

CONV_SYMBOLS, POOL_SYMBOLS = 15, 6  # a general two-qubit unitary (Vatan-Williams form); a pooling step


def _one_qubit(qubit: cirq.Qid, symbols: Sequence[sympy.Symbol]) -> list[cirq.Operation]:
    return [cirq.X(qubit) ** symbols[0], cirq.Y(qubit) ** symbols[1], cirq.Z(qubit) ** symbols[2]]


def _two_qubit(a: cirq.Qid, b: cirq.Qid, symbols: Sequence[sympy.Symbol]) -> list[cirq.Operation]:
    """Single-qubit rotations, XX, YY and ZZ powers, single-qubit rotations: 15 symbols."""
    return (_one_qubit(a, symbols[0:3]) + _one_qubit(b, symbols[3:6])
            + [cirq.ZZ(a, b) ** symbols[6], cirq.YY(a, b) ** symbols[7], cirq.XX(a, b) ** symbols[8]]
            + _one_qubit(a, symbols[9:12]) + _one_qubit(b, symbols[12:15]))


def _pool(source: cirq.Qid, sink: cirq.Qid, symbols: Sequence[sympy.Symbol]) -> list[cirq.Operation]:
    """Rotates both into a basis, then CNOT source -> sink and the sink's rotation undone: 6 symbols."""
    sink_basis = _one_qubit(sink, symbols[0:3])
    return sink_basis + _one_qubit(source, symbols[3:6]) + [cirq.CNOT(source, sink), *cirq.inverse(sink_basis)]


@dataclasses.dataclass(frozen=True)
class QCNN:
    """A QCNN: `layers` levels of convolution then pooling (None: until `output` qubits remain).

    Each level shares its 15 convolution and 6 pooling symbols across its pairs, named
    ``{prefix}_l{level}_c{i}`` and ``{prefix}_l{level}_p{i}``; a level of an odd number of qubits
    leaves the last one unpooled.

    >>> qcnn = QCNN()
    >>> qubits = cirq.LineQubit.range(8)
    >>> len(cirq.parameter_symbols(qcnn.circuit(qubits))), qcnn.output_qubits(qubits)  # 3 levels: 8 -> 4 -> 2 -> 1
    (63, [cirq.LineQubit(7)])
    >>> QCNN(layers=1).output_qubits(qubits)
    [cirq.LineQubit(4), cirq.LineQubit(5), cirq.LineQubit(6), cirq.LineQubit(7)]
    """

    layers: int | None = None
    output: int = 1

    def __post_init__(self) -> None:
        if self.layers is not None:
            validate_positive_int(self.layers, "layers")
        validate_positive_int(self.output, "output")

    def get_config(self) -> dict:
        return {"kind": "qcnn", **dataclasses.asdict(self)}

    def _levels(self, qubits: Sequence[cirq.Qid]) -> list[list[cirq.Qid]]:
        """The qubits each level convolves (the last entry: those that remain)."""
        levels = [list(qubits)]
        while len(levels[-1]) > self.output and (self.layers is None or len(levels) <= self.layers):
            active = levels[-1]
            levels.append(active[len(active) // 2:])
        if self.layers is not None and len(levels) <= self.layers:
            raise ValueError(f"QCNN(layers={self.layers}) on {len(qubits)} qubits: only {len(levels) - 1} levels "
                             f"fit before {self.output} qubit(s) remain; use fewer layers or more qubits.")
        return levels

    def output_qubits(self, qubits: Sequence[cirq.Qid]) -> list[cirq.Qid]:
        """The qubits left after the last pooling: where to read the circuit."""
        return self._levels(validate_qubits(qubits))[-1]

    def circuit(self, qubits: Sequence[cirq.Qid], n_layers: int | None = None, prefix: str = "theta") -> cirq.Circuit:
        """The QCNN on `qubits` (`n_layers` levels instead of `layers` if given), symbols named with `prefix`."""
        qubits = validate_qubits(qubits)
        levels = (self if n_layers is None else dataclasses.replace(self, layers=n_layers))._levels(qubits)
        circuit = cirq.Circuit()
        for level, (active, kept) in enumerate(zip(levels[:-1], levels[1:])):
            conv = sympy.symbols(f"{prefix}_l{level:02d}_c0:{CONV_SYMBOLS}")
            pool = sympy.symbols(f"{prefix}_l{level:02d}_p0:{POOL_SYMBOLS}")
            ring = list(zip(active[0::2], active[1::2]))
            if len(active) > 2:
                ring += list(zip(active[1::2], active[2::2] + active[:1]))
            for a, b in ring:
                circuit += _two_qubit(a, b, conv)
            for source, sink in zip(active[:len(active) // 2], kept):
                circuit += _pool(source, sink, pool)
        return circuit


BUILTINS = (Ansatz, QCNN)  # the built-in circuit families: an expert entry, a router circuit or a layer's ansatz


def builtin_from_config(config: dict) -> Ansatz | QCNN:
    """The `Ansatz` or `QCNN` a config entry describes (a QCNN's says ``"kind": "qcnn"``)."""
    config = dict(config)
    return QCNN(**config) if config.pop("kind", "ansatz") == "qcnn" else Ansatz.from_config(config)
