"""Readouts (Cirq Pauli strings and sums) as TensorCircuit-NG expectations, for peers.py and user_models.py."""
from __future__ import annotations

Terms = list[list[tuple[dict[str, list[int]], float]]]  # per readout: (expectation_ps arguments, coefficient)


def pauli_terms(readouts, index: dict) -> Terms:
    """Each readout's Pauli strings as `expectation_ps` arguments (qubits numbered by `index`) and coefficients."""
    import cirq

    return [[({pauli: [index[q] for q, p in string.items() if str(p).lower() == pauli] for pauli in "xyz"},
              complex(string.coefficient).real) for string in cirq.PauliSum.wrap(readout)] for readout in readouts]


def expectations(circuit, terms: Terms):
    """<float>[len(terms)]: `circuit`'s expectation of each readout of `terms`."""
    import tensorcircuit as tc

    K = tc.backend

    def string(spec: dict[str, list[int]], coefficient: float):
        value = K.real(circuit.expectation_ps(**spec))  # <float>[]
        return value if coefficient == 1 else coefficient * value

    return K.stack([sum((string(*term) for term in readout[1:]), string(*readout[0])) for readout in terms])
