"""The circuits of QMoE+ coherent aggregation (`coherent.CoherentQMoELayer`): a router register whose basis
states control the experts.

The router is a circuit on log2(E) extra qubits (features re-uploaded before each router layer);
expert ``e`` acts controlled on the register being in basis state ``e``, and one circuit per sample
measures ``sum_e p_e(x) <O>_e(x)``, with the register's Born probabilities ``p_e`` as the gates.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import cirq
import tensorflow as tf

from qmoe_tfq.execution import Executor
from qmoe_tfq.execution.backends import Noise
from qmoe_tfq.execution.program import decode_strings
from qmoe_tfq.circuits import Ansatz, expert_symbol_prefix, rename_symbols, validate_qubits
from qmoe_tfq.dispatch import Program, single_program
from qmoe_tfq.encoding import AngleEncoder, FeatureEncoder
from qmoe_tfq.experts import ExpertPQC


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


class CoherentPrograms(NamedTuple):
    """The router alone (its readouts are the gates) and the whole mixture in one program."""

    router: Program  # symbols: uploads [router_layers * F], router weights
    mixture: Program  # symbols: encoder [F], uploads, router weights, every expert's weights


def coherent_programs(qubits: Sequence[cirq.Qid], register: Sequence[cirq.Qid], encoder: FeatureEncoder,
                      router_layers: int, ansatz: Ansatz, prefix: str,
                      router_names: Sequence[str], experts: Sequence[ExpertPQC], observables: Sequence[cirq.PauliSum],
                      noise: Noise | None) -> CoherentPrograms:
    """Builds both programs once; `experts` are `ExpertPQC`s reading `observables`."""
    n_features = encoder.n_features
    slots = -(-n_features // len(register))  # rotations per register qubit to hold every feature
    register_encoder = AngleEncoder(register, rotations=("ry", "rz") * (-(-slots // 2)),
                                    scale=encoder.scale, n_features=n_features)
    routed, uploads = ansatz.reuploading(register, router_layers, register_encoder.circuit, prefix)
    upload_names = [str(s) for s in uploads]
    bits = [basis_bits(index, len(register)) for index in range(len(experts))]
    controlled_experts = [controlled(rename_symbols(expert.model_circuit, expert_symbol_prefix(index)), register, b)
                          for index, (expert, b) in enumerate(zip(experts, bits))]
    expert_names = [f"{expert_symbol_prefix(index)}_{name}" for index, expert in enumerate(experts)
                    for name in decode_strings(expert.symbol_names)]
    all_qubits = [*qubits, *register]
    data_names = [*decode_strings(encoder.symbol_names), *upload_names]
    return CoherentPrograms(
        single_program(routed, basis_projectors(register), upload_names + list(router_names), all_qubits, noise,
                       len(upload_names)),
        single_program(encoder.circuit + routed + sum(controlled_experts, cirq.Circuit()), observables,
                       [*data_names, *router_names, *expert_names], all_qubits, noise, len(data_names)))


class CoherentMixture:
    """Both programs compiled once on `executor`: `gates` runs the router alone, `outputs` the mixture.

    Built in `CoherentQMoELayer.build`; `router` and `experts` are its `ExpertPQC`s, read at every call.
    """

    def __init__(self, executor: Executor, qubits: Sequence[cirq.Qid], register: Sequence[cirq.Qid],
                 encoder: FeatureEncoder, router_layers: int, ansatz: Ansatz, prefix: str, router: ExpertPQC,
                 experts: Sequence[ExpertPQC], observables: Sequence[cirq.PauliSum], noise: Noise | None) -> None:
        programs = coherent_programs(qubits, register, encoder, router_layers, ansatz, prefix,
                                     decode_strings(router.symbol_names), experts, observables, noise)
        self.programs = programs
        self._run_router, self._run_mixture = executor.compile(programs.router), executor.compile(programs.mixture)
        self.router_layers, self.router, self.experts = router_layers, router, list(experts)

    def _uploads(self, angles: tf.Tensor) -> tf.Tensor:
        """<float32>[B, router_layers * F] the features uploaded before each router layer."""
        return tf.tile(angles, [1, self.router_layers])

    def gates(self, angles: tf.Tensor) -> tf.Tensor:
        """<float32>[B, E] the register's Born probabilities for encoder angles <float32>[B, F]."""
        return self._run_router(self.programs.router.values(self._uploads(angles), self.router.parameters))

    def outputs(self, angles: tf.Tensor) -> tf.Tensor:
        """<float32>[B, n_readouts] ``sum_e p_e <O>_e``, one circuit per sample."""
        # weights <float32>[n_router_symbols + every expert's symbols]
        weights = tf.concat([self.router.parameters] + [expert.parameters for expert in self.experts], axis=0)
        data = tf.concat([angles, self._uploads(angles)], axis=1)  # <float32>[B, F + router_layers * F]
        return self._run_mixture(self.programs.mixture.values(data, weights))
