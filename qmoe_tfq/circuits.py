"""Cirq circuits for QMoE: the hardware-efficient ansatz, readout observables, symbol naming, checks.

Every parameterised circuit of a QMoE model is built or renamed here. Each kind of circuit gets its
own symbol prefix (experts ``theta``, router ``route``, encoder ``x``), and when experts with
different circuits share one executor call each gets its own prefix too (`expert_symbol_prefix`),
so symbols never clash when circuits are concatenated into one program or resolved together.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

import cirq
import numpy as np
import sympy

ROTATIONS = {"rx": cirq.rx, "ry": cirq.ry, "rz": cirq.rz}
# entangler name -> (two-qubit gate, closed ring?)
ENTANGLERS = {"ring": (cirq.CZ, True), "chain": (cirq.CZ, False), "cnot_ring": (cirq.CNOT, True),
              "cnot_chain": (cirq.CNOT, False), "none": (None, False)}
Observable = cirq.PauliSum | cirq.PauliString


# Widest layer accepted: a state of 2**20 amplitudes per circuit row (8 MB) is what a 2-core, 24 GB machine
# trains on; 40 qubits built and then crashed the simulator. QMOE_TFQ_MAX_QUBITS raises it (hardware samplers).
MAX_QUBITS = int(os.environ.get("QMOE_TFQ_MAX_QUBITS", "20"))


def validate_qubits(qubits: Iterable[cirq.Qid], argument: str = "qubits") -> list[cirq.Qid]:
    """Returns `qubits` as a list after checking it is a non-empty list of at most `MAX_QUBITS` distinct `cirq.Qid`."""
    if isinstance(qubits, cirq.Qid):
        raise TypeError(f"{argument} must be a list of cirq qubits, got the single qubit {qubits!r}.")
    qubits = list(qubits)
    if not qubits:
        raise ValueError(f"{argument} is empty; give at least one cirq qubit.")
    for index, qubit in enumerate(qubits):
        if not isinstance(qubit, cirq.Qid):
            raise TypeError(f"{argument}[{index}] = {qubit!r} is not a cirq.Qid.")
    duplicates = sorted({str(q) for q in qubits if qubits.count(q) > 1})
    if duplicates:
        raise ValueError(f"{argument} contains duplicate qubits {duplicates}; each qubit may appear once.")
    if len(qubits) > MAX_QUBITS:
        raise ValueError(f"{argument} has {len(qubits)} qubits, more than MAX_QUBITS={MAX_QUBITS} (a state of "
                         f"2**{MAX_QUBITS} amplitudes per circuit row) that this installation simulates; set the "
                         "environment variable QMOE_TFQ_MAX_QUBITS to allow more.")
    return qubits


def validate_rotations(rotations: Sequence[str], argument: str = "rotations") -> tuple[str, ...]:
    """Checks that `rotations` is a non-empty sequence of names from `ROTATIONS`."""
    if isinstance(rotations, str):
        rotations = (rotations,)
    rotations = tuple(rotations)
    unknown = [r for r in rotations if r not in ROTATIONS]
    if not rotations or unknown:
        raise ValueError(
            f"{argument}={rotations!r} is not allowed; use a non-empty sequence of {sorted(ROTATIONS)}.")
    return rotations


def validate_positive_int(value: int, argument: str) -> int:
    """Checks that `value` is an integer >= 1 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument} must be a positive integer, got {value!r}.")
    return value


def validate_entangler(entangler: str) -> str:
    """Checks that `entangler` names one of `ENTANGLERS`."""
    if not isinstance(entangler, str) or entangler not in ENTANGLERS:
        raise ValueError(f"entangler={entangler!r} is not allowed; use one of {tuple(ENTANGLERS)}.")
    return entangler


def entangling_pairs(qubits: Sequence[cirq.Qid], entangler: str) -> list[tuple[cirq.Qid, cirq.Qid]]:
    """The gate pairs of one entangling block: nearest neighbours in list order, closed for rings."""
    gate, ring = ENTANGLERS[validate_entangler(entangler)]
    if gate is None or len(qubits) < 2:
        return []
    pairs = list(zip(qubits[:-1], qubits[1:]))
    if ring and len(qubits) > 2:
        pairs.append((qubits[-1], qubits[0]))
    return pairs


def _rotation_names(rotations: Sequence[str]) -> list[str]:
    """Symbol suffixes of one qubit's rotations: the gate name, numbered where a gate repeats.

    >>> _rotation_names(("rz", "ry", "rz"))
    ['rz0', 'ry', 'rz1']
    """
    counts = {gate: rotations.count(gate) for gate in rotations}
    seen = dict.fromkeys(rotations, 0)
    names = []
    for gate in rotations:
        names.append(f"{gate}{seen[gate]}" if counts[gate] > 1 else gate)
        seen[gate] += 1
    return names


@dataclasses.dataclass(frozen=True)
class Ansatz:
    """The built-in hardware-efficient ansatz: which rotations, which entangler, in which order, how deep.

    Each of its layers applies every gate of `rotations` to every qubit, each with its own sympy
    symbol named ``{prefix}_l{layer}_q{qubit}_{gate}`` (zero padded, so the sorted order that
    `tfq.layers.PQC` uses for its weights is layer, then qubit, then gate; a gate named twice,
    as in the general rotation ``("rz", "ry", "rz")``, is numbered ``rz0``, ``rz1``), and the
    `entangler`'s gate (CNOT for ``"cnot_ring"``/``"cnot_chain"``, CZ for ``"ring"``/``"chain"``)
    on each pair from `entangling_pairs`.

    By default each layer entangles first and rotates last (`entangle_first`): a final CZ layer
    commutes with Z readouts and would be wasted, while a first one acts on the input; a first
    CNOT ring carries a GHZ state's two-body Z Z correlations into single-qubit Z, and a CZ ring
    would undo a cluster state's, turning its three-body stabilisers into single-qubit X.
    ``Ansatz(entangler="ring", entangle_first=False)`` is the circuit of
    format-version-1 models (rotations, then a CZ ring). `layers` is the depth `circuit` builds
    unless told otherwise: a mixture layer's built-in experts and router are that deep.

    >>> circuit = Ansatz().circuit(cirq.LineQubit.range(2), n_layers=1)
    >>> [sorted(type(op.gate).__name__ for op in moment) for moment in circuit]  # a CNOT, then rotations
    [['CXPowGate'], ['Ry', 'Ry'], ['Rz', 'Rz']]
    >>> sorted(str(s) for s in cirq.parameter_symbols(circuit))
    ['theta_l00_q00_ry', 'theta_l00_q00_rz', 'theta_l00_q01_ry', 'theta_l00_q01_rz']
    """

    rotations: tuple[str, ...] = ("ry", "rz")
    entangler: str = "cnot_ring"
    entangle_first: bool = True
    layers: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "rotations", validate_rotations(self.rotations))
        validate_entangler(self.entangler)
        if not isinstance(self.entangle_first, bool):
            raise TypeError(f"entangle_first must be True or False, got {self.entangle_first!r}.")
        validate_positive_int(self.layers, "layers")

    def get_config(self) -> dict:
        return {**dataclasses.asdict(self), "rotations": list(self.rotations)}

    @classmethod
    def from_config(cls, config: dict) -> Ansatz:
        return cls(**config)

    def circuit(self, qubits: Sequence[cirq.Qid], n_layers: int | None = None, prefix: str = "theta") -> cirq.Circuit:
        """`n_layers` (by default `layers`) layers on `qubits`, symbols named with `prefix`."""
        qubits = validate_qubits(qubits)
        n_layers = validate_positive_int(self.layers if n_layers is None else n_layers, "n_layers")
        return sum((self._layer(qubits, layer, prefix) for layer in range(n_layers)), cirq.Circuit())

    def reuploading(self, qubits: Sequence[cirq.Qid], n_layers: int, encoding: cirq.Circuit,
                    prefix: str = "theta") -> tuple[cirq.Circuit, list[sympy.Symbol]]:
        """Data re-uploading: the `encoding` circuit again before each layer.

        The encoding's symbols are renamed per layer (``x_000`` becomes ``x_000_l00``, ``x_000_l01``,
        ...), so each upload can carry its own (learnably scaled) angles; the variational symbols are
        exactly those of `circuit` with the same arguments.

        Returns:
            The circuit, and the data symbols in (layer, encoding symbol) order.
        """
        qubits = validate_qubits(qubits)
        validate_positive_int(n_layers, "n_layers")
        data_symbols = sorted(cirq.parameter_symbols(encoding), key=str)
        circuit, uploaded = cirq.Circuit(), []
        for layer in range(n_layers):
            renamed = {s: sympy.Symbol(f"{s}_l{layer:02d}") for s in data_symbols}
            circuit += cirq.resolve_parameters(encoding, renamed) + self._layer(qubits, layer, prefix)
            uploaded += renamed.values()
        return circuit, uploaded

    def _layer(self, qubits: Sequence[cirq.Qid], layer: int, prefix: str) -> cirq.Circuit:
        names = _rotation_names(self.rotations)
        rotate = cirq.Circuit(
            ROTATIONS[gate](sympy.Symbol(f"{prefix}_l{layer:02d}_q{index:02d}_{name}")).on(qubit)
            for index, qubit in enumerate(qubits)
            for gate, name in zip(self.rotations, names))
        gate = ENTANGLERS[self.entangler][0]
        entangle = cirq.Circuit(gate(a, b) for a, b in entangling_pairs(qubits, self.entangler))
        return entangle + rotate if self.entangle_first else rotate + entangle


def hardware_efficient_ansatz(qubits: Sequence[cirq.Qid], n_layers: int, prefix: str = "theta",
                              rotations: Sequence[str] = Ansatz.rotations, entangler: str = Ansatz.entangler,
                              entangle_first: bool = Ansatz.entangle_first) -> cirq.Circuit:
    """``Ansatz(rotations, entangler, entangle_first).circuit(qubits, n_layers, prefix)``: see `Ansatz`.

    >>> circuit = hardware_efficient_ansatz(cirq.LineQubit.range(2), n_layers=1)
    >>> sorted(str(s) for s in cirq.parameter_symbols(circuit))
    ['theta_l00_q00_ry', 'theta_l00_q00_rz', 'theta_l00_q01_ry', 'theta_l00_q01_rz']
    """
    return Ansatz(rotations, entangler, entangle_first).circuit(qubits, n_layers, prefix)


def default_readouts(qubits: Sequence[cirq.Qid]) -> list[cirq.PauliString]:
    """Pauli Z on each qubit: the default expert readouts."""
    return [cirq.Z(q) for q in validate_qubits(qubits)]


def validate_observables(
    observables: Observable | Iterable[Observable], qubits: Sequence[cirq.Qid], argument: str,
) -> list[cirq.PauliSum]:
    """Checks observables are Hermitian Pauli sums acting only on `qubits`; returns them as a list."""
    if isinstance(observables, (cirq.PauliSum, cirq.PauliString)):
        observables = [observables]
    observables = list(observables)
    if not observables:
        raise ValueError(f"{argument} is empty; give at least one cirq.PauliSum or cirq.PauliString.")
    allowed = set(qubits)
    checked = []
    for index, observable in enumerate(observables):
        if not isinstance(observable, (cirq.PauliSum, cirq.PauliString)):
            raise TypeError(
                f"{argument}[{index}] = {observable!r} is not a cirq.PauliSum or cirq.PauliString.")
        outside = sorted(str(q) for q in set(observable.qubits) - allowed)
        if outside:
            raise ValueError(
                f"{argument}[{index}] = {observable} acts on qubits {outside} that are not in the "
                f"circuit's qubits {[str(q) for q in qubits]}.")
        observable = cirq.PauliSum.wrap(observable)
        if not all(np.isfinite(complex(term.coefficient)) for term in observable):
            raise ValueError(f"{argument}[{index}] = {observable} has a NaN or infinite coefficient; "
                             "every coefficient must be a finite real number.")
        if any(abs(complex(term.coefficient).imag) > 1e-12 for term in observable):
            raise ValueError(f"{argument}[{index}] = {observable} is not Hermitian (a coefficient has an "
                             "imaginary part), so its expectation is not a real number; use real coefficients.")
        checked.append(observable)
    return checked


# The built-in experts' symbols (theta_l00_q00_ry ...), the router's and the angle encoder's (x_000 ...).
EXPERT_PREFIX, ROUTER_PREFIX, ENCODER_PREFIX = "theta", "route", "x"


def expert_symbol_prefix(index: int) -> str:
    """The prefix that keeps expert `index`'s symbols apart from every other part's: ``e03``."""
    return f"e{index:02d}"


def rename_symbols(circuit: cirq.Circuit, prefix: str, keep: Iterable[str] = ()) -> cirq.Circuit:
    """`circuit` with every symbol ``s`` renamed ``{prefix}_{s}``, except those named in `keep`."""
    keep = set(keep)
    return cirq.resolve_parameters(
        circuit, {s: sympy.Symbol(f"{prefix}_{s}") for s in cirq.parameter_symbols(circuit) if str(s) not in keep})


def sorted_symbol_names(circuit: cirq.Circuit) -> list[str]:
    """The circuit's symbol names in `tfq.layers.PQC`'s weight order (sorted)."""
    return sorted(str(s) for s in cirq.parameter_symbols(circuit))


def check_circuit_qubits(circuit: cirq.Circuit, qubits: Sequence[cirq.Qid], argument: str) -> None:
    """Raises when `circuit` acts on a qubit outside `qubits`, naming `argument` and the qubits."""
    outside = sorted(str(q) for q in circuit.all_qubits() - set(qubits))
    if outside:
        raise ValueError(f"{argument} acts on qubits {outside} that are not among the layer's qubits "
                         f"{[str(q) for q in qubits]}.")


def on_qubits(circuit: cirq.Circuit, qubits: Sequence[cirq.Qid]) -> cirq.Circuit:
    """`circuit` with an identity on each of `qubits` it leaves idle.

    TFQ refuses to measure an observable on a qubit its program does not contain, so every program
    of a layer is widened to all the layer's qubits; identities cost no simulation.
    """
    idle = [q for q in qubits if q not in circuit.all_qubits()]
    return circuit + cirq.Circuit(cirq.I.on_each(*idle)) if idle else circuit
