"""Circuits as the statevector kernel sees them: `Unitary`s (a matrix per row as a function of one symbol)
scheduled into `Stage`s (fused single-qubit gates, merged diagonal gates, composed permutations, general gates).

A gate joins an earlier stage when everything between commutes with it, so a layer of CZs becomes
one diagonal stage, a ring of CNOTs one permutation and a run of rotations on a qubit one single-qubit stage.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import cirq
import numpy as np
import sympy
import tensorflow as tf

SUPPORTED = ("every gate with a unitary and no symbols; X/Y/Z/H powers and rotations, CZ, CNOT, SWAP, ISWAP, "
             "XX, YY, ZZ and their powers, controlled gates, and gates that decompose into these, with "
             "exponents coefficient * symbol + constant")


class UnsupportedGate(ValueError):
    """A circuit holds an operation this simulator cannot run; the message names it."""


@dataclass
class Unitary:
    """An operation on `axes` as a matrix per row: ``fixed + sum_j exp(i (slope_j v + offset_j)) projector_j``.

    `v` is the row's value of symbol `column` (no symbol: `projectors` is empty and `fixed` is the unitary).
    """

    axes: tuple[int, ...]
    fixed: np.ndarray  # <complex>[d, d], d = 2 ** len(axes)
    column: int | None = None
    slope: np.ndarray = field(default_factory=lambda: np.zeros(0))  # <float>[J]
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0))  # <float>[J]
    projectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1)))  # <complex>[J, d, d]

    def phases(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(slope, offset) <float>[d] with diagonal ``exp(i (slope v + offset))``, or None if not diagonal."""
        diagonals = np.array([np.diag(m) for m in [self.fixed, *self.projectors]])  # <complex>[1 + J, d]
        if not all(np.allclose(m, np.diag(np.diag(m))) for m in [self.fixed, *self.projectors]):
            return None
        covered = ~np.isclose(diagonals, 0)  # <bool>[1 + J, d]
        if not (np.all(covered.sum(0) == 1) and np.allclose(np.abs(diagonals[covered]), 1)
                and np.allclose(diagonals[1:][covered[1:]], 1)):
            return None
        source = covered.argmax(0)  # <int>[d] the fixed part (0) or the projector (j + 1) of each entry
        slope, offset = np.append(0.0, self.slope)[source], np.append(0.0, self.offset)[source]
        return slope, offset + np.angle(diagonals[0]) * (source == 0)

    def permutation(self) -> np.ndarray | None:
        """<int>[d] ``source``, with ``(U psi)[i] = psi[source[i]]``, if this is a fixed gate on two or more axes whose
        matrix permutes the basis states (CNOT, SWAP, Toffoli, ...); else None."""
        if self.column is not None or len(self.axes) < 2:
            return None
        ones = np.isclose(self.fixed, 1)  # <bool>[d, d]
        if not (np.all(ones.sum(0) == 1) and np.all(ones.sum(1) == 1) and np.allclose(self.fixed[~ones], 0)):
            return None
        return ones.argmax(1)

    def controlled(self, axes: tuple[int, ...], active: np.ndarray) -> Unitary:
        """This gate under controls on `axes`, acting where the control bits' pattern is `active` <bool>[2**c]."""
        on = np.diag(active.astype(complex))
        off = np.kron(np.diag((~active).astype(complex)), np.eye(len(self.fixed)))
        return Unitary(axes + self.axes, off + np.kron(on, self.fixed), self.column, self.slope, self.offset,
                    np.stack([np.kron(on, p) for p in self.projectors]) if len(self.projectors) else
                    np.zeros((0,) + off.shape))

    def matrix(self, values: tf.Tensor) -> tf.Tensor:
        """<complex64>[rows, d, d] per row (or [d, d] for a fixed gate)."""
        fixed = tf.constant(self.fixed, tf.complex64)
        if self.column is None:
            return fixed
        angle = (tf.constant(self.slope, tf.float32) * values[:, self.column:self.column + 1]
                 + tf.constant(self.offset, tf.float32))  # <float32>[R, J]
        phases = tf.complex(tf.cos(angle), tf.sin(angle))  # <complex64>[R, J]
        return fixed + tf.einsum("rj,jab->rab", phases, tf.constant(self.projectors, tf.complex64))


def _linear(value: object, columns: dict[str, int], op: cirq.Operation) -> tuple[int | None, float, float]:
    """(column, coefficient, constant) of an exponent ``coefficient * symbol + constant``."""
    if isinstance(value, numbers.Number):
        return None, 0.0, float(value)
    expr = sympy.sympify(value)
    if not expr.free_symbols:
        return None, 0.0, float(expr)
    if len(expr.free_symbols) > 1:
        raise UnsupportedGate(f"{op!r}: an exponent may hold one symbol, this one holds {sorted(map(str, expr.free_symbols))}.")
    (symbol,) = expr.free_symbols
    coefficient, constant = sympy.diff(expr, symbol), expr.subs(symbol, 0)
    if coefficient.free_symbols or constant.free_symbols:
        raise UnsupportedGate(f"{op!r}: exponent {expr} is not coefficient * symbol + constant.")
    if str(symbol) not in columns:
        raise UnsupportedGate(f"{op!r}: symbol {symbol} is not among the program's symbols {sorted(columns)}.")
    return columns[str(symbol)], float(coefficient), float(constant)


def _rewrites(op: cirq.Operation, permute_cnots: bool) -> list[cirq.Operation] | None:
    """CNOT powers (CNOT itself too unless `permute_cnots`), XX and YY powers as diagonal gates between basis
    changes, which then fuse and merge."""
    gate = op.gate
    if type(gate) is cirq.CXPowGate and not (permute_cnots and not cirq.is_parameterized(gate)
                                             and Unitary((0, 1), cirq.unitary(op)).permutation() is not None):
        control, target = op.qubits
        return [cirq.H(target), cirq.CZPowGate(exponent=gate.exponent, global_shift=gate.global_shift)(control, target),
                cirq.H(target)]
    if type(gate) in (cirq.XXPowGate, cirq.YYPowGate):
        zz = cirq.ZZPowGate(exponent=gate.exponent, global_shift=gate.global_shift)(*op.qubits)
        into = [cirq.H] if type(gate) is cirq.XXPowGate else [cirq.S**-1, cirq.H]
        back = [cirq.H] if type(gate) is cirq.XXPowGate else [cirq.H, cirq.S]
        return [g(q) for g in into for q in op.qubits] + [zz] + [g(q) for g in back for q in op.qubits]
    return None


def _gate(op: cirq.Operation, axes: dict[cirq.Qid, int], columns: dict[str, int]) -> Unitary | None:
    """`op` as one `Unitary`, or None when it must be decomposed first."""
    where = tuple(axes[q] for q in op.qubits)
    if isinstance(op, cirq.ControlledOperation):
        sub = _gate(op.sub_operation, axes, columns)
        if sub is None:
            return None
        patterns = {tuple(p) for p in op.control_values.expand()}
        active = np.array([tuple(bits) in patterns for bits in np.ndindex(*[2] * len(op.controls))])
        return sub.controlled(tuple(axes[q] for q in op.controls), active)
    if not cirq.is_parameterized(op) and cirq.has_unitary(op):
        return Unitary(where, cirq.unitary(op))
    if isinstance(op.gate, cirq.EigenGate):
        column, coefficient, constant = _linear(op.gate.exponent, columns, op)
        components = op.gate._eigen_components()  # pylint: disable=protected-access
        if any(cirq.is_parameterized(p) for _, p in components):
            return None  # e.g. a symbolic phase exponent: decomposed instead
        turns = np.pi * np.array([half_turns + op.gate.global_shift for half_turns, _ in components])
        return Unitary(where, np.zeros((2 ** len(where),) * 2, complex), column, coefficient * turns, constant * turns,
                    np.stack([np.asarray(p, complex) for _, p in components]))
    return None


def unitaries(circuit: cirq.AbstractCircuit, axes: dict[cirq.Qid, int], columns: dict[str, int],
              permute_cnots: bool = False) -> list[Unitary]:
    """Every operation of `circuit` as `Unitary`s, in order (identities and global phases dropped); CNOTs whole (a
    permutation) if `permute_cnots`, else as H, CZ, H."""
    result = []
    pending = list(circuit.all_operations())[::-1]
    while pending:
        op = pending.pop()
        if isinstance(op.gate, (cirq.IdentityGate, cirq.GlobalPhaseGate)):
            continue
        replaced = _rewrites(op, permute_cnots) if op.gate is not None else None
        gate = None if replaced else _gate(op, axes, columns)
        if gate is None and not replaced:
            replaced = cirq.decompose_once(op, default=None)
            if replaced is None:
                raise UnsupportedGate(f"the statevector simulator cannot run {op!r}; it runs {SUPPORTED}. "
                                      "Use backend='noiseless' (TFQ) for this circuit, or backend='noisy' with "
                                      "repetitions=N for noise channels.")
        if gate is not None:
            result.append(gate)
        else:
            pending.extend(replaced[::-1])
    return result


@dataclass
class Stage:
    """Gates applied together: ``"single"`` (fused, one axis), ``"diagonal"`` (one phase vector), ``"permutation"``
    (of the basis states), ``"general"``."""

    kind: str
    axes: set[int]
    gates: list[Unitary]


def schedule(gate_list: Sequence[Unitary]) -> list[Stage]:
    """Stages in an order equivalent to `gate_list`: each gate joins the latest stage it may join.

    A gate commutes with every later stage that does not touch its axes, so it can join the last
    stage touching them if that stage is of its kind (single-qubit gates on the same axis), or any
    diagonal stage after the last non-diagonal one touching them when it is diagonal itself, or any
    permutation stage after the last stage touching them when it is a permutation.
    """
    stages: list[Stage] = []
    for gate in gate_list:
        axes, diagonal = set(gate.axes), gate.phases() is not None
        permutation = not diagonal and gate.permutation() is not None
        target = None
        for stage in reversed(stages):
            if len(axes) == 1 and stage.kind == "single" and stage.axes == axes:
                target = stage
                break
            if diagonal and stage.kind == "diagonal" or permutation and stage.kind == "permutation":
                target = target or stage
            if stage.axes & axes and (stage.kind != "diagonal" or not diagonal):
                break
        if target is None:
            kind = "single" if len(axes) == 1 else "diagonal" if diagonal else "permutation" if permutation else "general"
            target = Stage(kind, set(), [])
            stages.append(target)
        target.axes |= axes
        target.gates.append(gate)
    return stages


def stages(circuit: cirq.AbstractCircuit, axes: dict[cirq.Qid, int], columns: dict[str, int]) -> list[Stage]:
    """`circuit` scheduled with its CNOTs as permutations where that makes fewer kernel steps, else as H, CZ, H:
    a ring or ladder of CNOTs is then one permutation instead of a step per CNOT, but a CNOT between gates that
    need a step anyway (the QCNN's pooling) costs nothing as H, CZ, H and a gather per step as a permutation."""
    def length(scheduled: list[Stage]) -> int:
        runs, general = segments(scheduled)
        return sum(len(steps) for steps in runs) + len(general)
    return min((schedule(unitaries(circuit, axes, columns, permute)) for permute in (False, True)), key=length)


@dataclass
class Step:
    """A layer of single-qubit stages on distinct axes, then at most one diagonal stage, then at most one
    permutation stage."""

    layer: dict[int, Stage] = field(default_factory=dict)  # axis -> single stage
    diagonal: Stage | None = None
    permutation: Stage | None = None


def segments(stages: Sequence[Stage]) -> tuple[list[list[Step]], list[Unitary]]:
    """`stages` as runs of `Step`s split by general gates: ``steps[0], general[0], steps[1], ...``.

    Consecutive single stages act on distinct axes (`schedule` merges a single-qubit gate into the
    last single stage on its axis unless a stage touching that axis lies between), so each run of
    them is one layer.
    """
    runs: list[list[Step]] = [[]]
    general: list[Unitary] = []
    step = Step()
    for stage in stages:
        if stage.kind == "single" and next(iter(stage.axes)) not in step.layer:
            step.layer[next(iter(stage.axes))] = stage
            continue
        if stage.kind == "permutation" and not step.layer and runs[-1] and runs[-1][-1].permutation is None:
            runs[-1][-1].permutation = stage  # after the last step's phase
            continue
        if step.layer or stage.kind in ("diagonal", "permutation"):
            runs[-1].append(step)
        step = Step()
        if stage.kind == "diagonal":
            runs[-1][-1].diagonal = stage
        elif stage.kind == "permutation":
            runs[-1][-1].permutation = stage
        elif stage.kind == "general":
            general.extend(stage.gates)
            runs.append([])
        else:  # a single stage on an axis the open layer already holds (not made by `schedule`)
            step.layer[next(iter(stage.axes))] = stage
    if step.layer:
        runs[-1].append(step)
    return runs, general
