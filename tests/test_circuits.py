import cirq
import pytest
import sympy

from qmoe_tfq.circuits import (
    Ansatz,
    default_readouts,
    entangling_pairs,
    hardware_efficient_ansatz,
    validate_observables,
    validate_qubits,
)
from qmoe_tfq.routers import router_readouts


def test_ansatz_has_one_symbol_per_rotation_and_cz_ring():
    qubits = cirq.LineQubit.range(3)
    circuit = hardware_efficient_ansatz(qubits, n_layers=2, rotations=("rx", "ry"), entangler="ring")
    symbols = cirq.parameter_symbols(circuit)
    assert len(symbols) == 2 * 3 * 2
    assert all(str(s).startswith("theta_") for s in symbols)
    cz_count = sum(1 for op in circuit.all_operations() if op.gate == cirq.CZ)
    assert cz_count == 2 * 3  # ring of 3 qubits, two layers


def test_ansatz_prefixes_keep_symbols_apart():
    qubits = cirq.LineQubit.range(2)
    expert = cirq.parameter_symbols(hardware_efficient_ansatz(qubits, 2, "theta"))
    router = cirq.parameter_symbols(hardware_efficient_ansatz(qubits, 2, "route"))
    assert not expert & router


def test_entangling_pairs_chain_ring_none():
    q = cirq.LineQubit.range(4)
    assert entangling_pairs(q, "chain") == [(q[0], q[1]), (q[1], q[2]), (q[2], q[3])]
    assert entangling_pairs(q, "ring")[-1] == (q[3], q[0])
    assert entangling_pairs(q, "none") == []
    with pytest.raises(ValueError, match="entangler='star' is not allowed"):
        entangling_pairs(q, "star")


def test_router_readouts_are_distinct_and_bounded():
    qubits = cirq.LineQubit.range(2)
    readouts = router_readouts(qubits, 9)
    assert len(set(readouts)) == 9
    assert readouts[:3] == [cirq.Z(qubits[0]) * cirq.Z(qubits[1]), *default_readouts(qubits)]  # correlation first
    assert router_readouts(qubits, 2, "pauli") == default_readouts(qubits)
    with pytest.raises(ValueError, match="n_experts=10 needs more router readouts than 2 qubits"):
        router_readouts(qubits, 10)


@pytest.mark.parametrize("qubits, message", [
    ([], "qubits is empty"),
    ([cirq.LineQubit(0), cirq.LineQubit(0)], "duplicate qubits"),
    (["q0"], r"qubits\[0\] = 'q0' is not a cirq.Qid"),
])
def test_bad_qubits_are_named(qubits, message):
    with pytest.raises((ValueError, TypeError), match=message):
        validate_qubits(qubits)


def test_bad_layers_and_rotations():
    qubits = cirq.LineQubit.range(2)
    with pytest.raises(ValueError, match="n_layers must be a positive integer, got 0"):
        hardware_efficient_ansatz(qubits, 0)
    with pytest.raises(ValueError, match=r"rotations=\('rq',\) is not allowed"):
        hardware_efficient_ansatz(qubits, 1, rotations=("rq",))


def test_observables_outside_circuit_are_refused():
    qubits = cirq.LineQubit.range(2)
    with pytest.raises(ValueError, match=r"observables\[1\] = .* acts on qubits \['q\(5\)'\]"):
        validate_observables([cirq.Z(qubits[0]), cirq.X(cirq.LineQubit(5))], qubits, "observables")
    with pytest.raises(TypeError, match="is not a cirq.PauliSum"):
        validate_observables([sympy.Symbol("a")], qubits, "observables")
    summed = validate_observables(cirq.Z(qubits[0]) + 0.5 * cirq.X(qubits[1]), qubits, "observables")
    assert len(summed) == 1 and isinstance(summed[0], cirq.PauliSum)


def test_ansatz_order_and_reuploading_share_one_shape():
    qubits = cirq.LineQubit.range(3)
    first, last = Ansatz(), Ansatz(entangler="ring", entangle_first=False)
    gates = lambda circuit: [{type(op.gate) for op in moment} for moment in circuit]  # noqa: E731
    assert gates(first.circuit(qubits, 1)) == [{cirq.CXPowGate}] * 3 + [{cirq.Ry}, {cirq.Rz}]  # CNOT ring, rotations
    assert gates(last.circuit(qubits, 1))[-1] == {cirq.CZPowGate}                                # rotations, CZ ring
    assert hardware_efficient_ansatz(qubits, 2) == first.circuit(qubits, 2)                     # one set of defaults
    encoding = cirq.Circuit(cirq.ry(sympy.Symbol("x_000")).on(qubits[0]))
    uploaded, data = first.reuploading(qubits, 2, encoding)
    assert [str(s) for s in data] == ["x_000_l00", "x_000_l01"]
    assert cirq.parameter_symbols(uploaded) - set(data) == cirq.parameter_symbols(first.circuit(qubits, 2))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"rotations": ()}, ValueError, r"rotations=\(\) is not allowed; use a non-empty sequence"),
    ({"entangler": "swap"}, ValueError, "entangler='swap' is not allowed; use one of"),
    ({"entangle_first": 1}, TypeError, "entangle_first must be True or False, got 1"),
])
def test_bad_ansatz_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        Ansatz(**kwargs)
