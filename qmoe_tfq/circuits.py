"""Cirq circuits for QMoE: the hardware-efficient ansatz, readout observables and their checks.

Every parameterised circuit of a QMoE model is built here, and each kind of circuit gets its own
symbol prefix (experts ``theta``, router ``route``, encoder ``x``), so symbols never clash when
circuits are concatenated into one program.
"""
from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence

import cirq
import sympy

ROTATIONS = {"rx": cirq.rx, "ry": cirq.ry, "rz": cirq.rz}
ENTANGLERS = ("ring", "chain", "none")
Observable = cirq.PauliSum | cirq.PauliString


def validate_qubits(qubits: Iterable[cirq.Qid], argument: str = "qubits") -> list[cirq.Qid]:
    """Returns `qubits` as a list after checking it is a non-empty list of distinct `cirq.Qid`."""
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


def entangling_pairs(qubits: Sequence[cirq.Qid], entangler: str) -> list[tuple[cirq.Qid, cirq.Qid]]:
    """The CZ pairs of one entangling block: nearest neighbours in list order, closed for `ring`."""
    if entangler not in ENTANGLERS:
        raise ValueError(f"entangler={entangler!r} is not allowed; use one of {ENTANGLERS}.")
    if entangler == "none" or len(qubits) < 2:
        return []
    pairs = list(zip(qubits[:-1], qubits[1:]))
    if entangler == "ring" and len(qubits) > 2:
        pairs.append((qubits[-1], qubits[0]))
    return pairs


def _ansatz_layer(qubits: Sequence[cirq.Qid], layer: int, prefix: str, rotations: Sequence[str],
                  pairs: Sequence[tuple[cirq.Qid, cirq.Qid]]) -> cirq.Circuit:
    circuit = cirq.Circuit(
        ROTATIONS[gate](sympy.Symbol(f"{prefix}_l{layer:02d}_q{index:02d}_{gate}")).on(qubit)
        for index, qubit in enumerate(qubits)
        for gate in rotations)
    circuit.append(cirq.CZ(a, b) for a, b in pairs)
    return circuit


def hardware_efficient_ansatz(
    qubits: Sequence[cirq.Qid],
    n_layers: int,
    prefix: str = "theta",
    rotations: Sequence[str] = ("ry", "rz"),
    entangler: str = "ring",
) -> cirq.Circuit:
    """Builds a hardware-efficient ansatz: `n_layers` blocks of rotations followed by CZs.

    Each block applies every gate of `rotations` to every qubit, each with its own sympy symbol
    named ``{prefix}_l{layer}_q{qubit}_{gate}`` (zero padded, so the sorted order that
    `tfq.layers.PQC` uses for its weights is layer, then qubit, then gate), then a CZ on each
    pair from `entangling_pairs`.

    >>> circuit = hardware_efficient_ansatz(cirq.LineQubit.range(2), n_layers=1)
    >>> sorted(str(s) for s in cirq.parameter_symbols(circuit))
    ['theta_l00_q00_ry', 'theta_l00_q00_rz', 'theta_l00_q01_ry', 'theta_l00_q01_rz']
    """
    qubits = validate_qubits(qubits)
    validate_positive_int(n_layers, "n_layers")
    rotations = validate_rotations(rotations)
    pairs = entangling_pairs(qubits, entangler)
    return sum((_ansatz_layer(qubits, layer, prefix, rotations, pairs) for layer in range(n_layers)),
               cirq.Circuit())


def reuploading_ansatz(
    qubits: Sequence[cirq.Qid],
    n_layers: int,
    encoding: cirq.Circuit,
    prefix: str = "theta",
    rotations: Sequence[str] = ("ry", "rz"),
    entangler: str = "ring",
) -> tuple[cirq.Circuit, list[sympy.Symbol]]:
    """Data re-uploading: the `encoding` circuit again before each layer of the ansatz.

    The encoding's symbols are renamed per layer (``x_000`` becomes ``x_000_l00``, ``x_000_l01``,
    ...), so each upload can carry its own (learnably scaled) angles; the variational symbols are
    exactly those of `hardware_efficient_ansatz` with the same arguments.

    Returns:
        The circuit, and the data symbols in (layer, encoding symbol) order.
    """
    qubits = validate_qubits(qubits)
    validate_positive_int(n_layers, "n_layers")
    rotations = validate_rotations(rotations)
    pairs = entangling_pairs(qubits, entangler)
    data_symbols = sorted(cirq.parameter_symbols(encoding), key=str)
    circuit, uploaded = cirq.Circuit(), []
    for layer in range(n_layers):
        renamed = {s: sympy.Symbol(f"{s}_l{layer:02d}") for s in data_symbols}
        circuit += cirq.resolve_parameters(encoding, renamed)
        circuit += _ansatz_layer(qubits, layer, prefix, rotations, pairs)
        uploaded += renamed.values()
    return circuit, uploaded


def default_readouts(qubits: Sequence[cirq.Qid]) -> list[cirq.PauliString]:
    """Pauli Z on each qubit: the default expert readouts."""
    return [cirq.Z(q) for q in validate_qubits(qubits)]


def router_readouts(qubits: Sequence[cirq.Qid], n_experts: int) -> list[cirq.PauliString]:
    """`n_experts` distinct Pauli strings whose expectations serve as the router's logits.

    Single-qubit Z first, then ZZ on every pair, then the same with X and with Y, so small
    routers read out simple, low-weight observables.

    >>> router_readouts(cirq.LineQubit.range(2), 3)
    [cirq.Z(cirq.LineQubit(0)), cirq.Z(cirq.LineQubit(1)), cirq.Z(cirq.LineQubit(0))*cirq.Z(cirq.LineQubit(1))]
    """
    qubits = validate_qubits(qubits)
    validate_positive_int(n_experts, "n_experts")
    candidates = [
        cirq.PauliString({q: pauli for q in group})
        for pauli in (cirq.Z, cirq.X, cirq.Y)
        for size in (1, 2)
        for group in itertools.combinations(qubits, size)
    ]
    if n_experts > len(candidates):
        raise ValueError(
            f"n_experts={n_experts} needs more router readouts than {len(qubits)} qubits offer "
            f"(at most {len(candidates)}); use more qubits or fewer experts.")
    return candidates[:n_experts]


def validate_observables(
    observables: Observable | Iterable[Observable], qubits: Sequence[cirq.Qid], argument: str,
) -> list[cirq.PauliSum]:
    """Checks observables are Pauli sums acting only on `qubits`; returns them as a list."""
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
        checked.append(cirq.PauliSum.wrap(observable))
    return checked



def ancilla_register(qubits: Sequence[cirq.Qid], n: int) -> list[cirq.Qid]:
    """`n` fresh qubits of the same kind beside `qubits`: the next grid row, or the next line indices."""
    qubits = validate_qubits(qubits)
    if all(isinstance(q, cirq.GridQubit) for q in qubits):
        row = max(q.row for q in qubits) + 1
        column = min(q.col for q in qubits)
        return [cirq.GridQubit(row, column + i) for i in range(n)]
    if all(isinstance(q, cirq.LineQubit) for q in qubits):
        return cirq.LineQubit.range(max(q.x for q in qubits) + 1, max(q.x for q in qubits) + 1 + n)
    raise TypeError("coherent aggregation needs all-GridQubit or all-LineQubit qubits to place its register.")


def basis_bits(index: int, width: int) -> list[int]:
    """`index` in binary over `width` qubits, most significant first (cirq's state-vector order)."""
    return [(index >> (width - 1 - j)) & 1 for j in range(width)]


def basis_projectors(register: Sequence[cirq.Qid]) -> list[cirq.PauliSum]:
    """|e><e| on `register` for e = 0 .. 2^n - 1, as Pauli sums: their expectations are the Born
    probabilities of the register's basis states."""
    projectors = []
    for index in range(2 ** len(register)):
        projector = cirq.PauliSum.from_pauli_strings([cirq.PauliString()])
        for qubit, bit in zip(register, basis_bits(index, len(register))):
            projector *= 0.5 * cirq.PauliString() + (-0.5 if bit else 0.5) * cirq.Z(qubit)
        projectors.append(projector)
    return projectors


def controlled(circuit: cirq.Circuit, controls: Sequence[cirq.Qid], values: Sequence[int]) -> cirq.Circuit:
    """Every operation of `circuit` controlled on `controls` being in the basis state `values`."""
    # Built directly: op.controlled_by would turn a controlled CZ into CCZ, which TFQ cannot serialize.
    # Each gate is copied: TFQ 0.7.6 records control values on the gate object while serializing,
    # so two controlled uses of the shared cirq.CZ instance would both get the last values.
    return cirq.Circuit(cirq.ControlledOperation(list(controls), op.with_gate(copy.copy(op.gate)),
                                                 control_values=list(values))
                        for op in circuit.all_operations())


def rename_symbols(circuit: cirq.Circuit, prefix: str) -> cirq.Circuit:
    """`circuit` with every symbol ``s`` renamed ``{prefix}_{s}``."""
    return cirq.resolve_parameters(
        circuit, {s: sympy.Symbol(f"{prefix}_{s}") for s in cirq.parameter_symbols(circuit)})
