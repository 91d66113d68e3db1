"""Google quantum processors: place, route and compile circuits for a device, and sample on it.

`compile_for_device` maps a circuit's qubits onto the processor's grid (an embedding that keeps
every two-qubit gate on a coupler when one exists, else `cirq.RouteCQC` adds SWAPs), converts it
to the device's CZ gate set and validates it. `DeviceSampler` does this for every circuit a TFQ
sampled-expectation op sends it, so a `QMoELayer(backend=DeviceSampler(...), repetitions=N)` runs
on a real processor or on its quantum virtual machine through the same `cirq.Sampler` path::

    sampler = google_virtual_machine("weber")                    # local QVM with weber's noise
    # with Google Quantum AI access, the real processor instead:
    # sampler = DeviceSampler(cirq_google.get_engine().get_sampler("weber"), device)
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import cirq
import cirq_google
import networkx as nx
from networkx.algorithms import isomorphism


class DeviceCompilationError(ValueError):
    """A circuit that cannot be made to run on a device; the message names the gate or qubit."""


class CompiledCircuit(NamedTuple):
    """A compiled circuit and where each logical qubit starts and ends on the device."""

    circuit: cirq.Circuit
    initial_map: dict[cirq.Qid, cirq.Qid]
    final_map: dict[cirq.Qid, cirq.Qid]


def device_graph(device: cirq.Device) -> nx.Graph:
    """The device's coupler graph (nodes: qubits, edges: pairs a two-qubit gate can act on)."""
    return nx.Graph(device.metadata.nx_graph)


def interaction_graph(circuit: cirq.Circuit) -> nx.Graph:
    graph = nx.Graph()
    graph.add_nodes_from(circuit.all_qubits())
    graph.add_edges_from(op.qubits for op in circuit.all_operations()
                         if len(op.qubits) == 2 and not cirq.is_measurement(op))
    return graph


def embed(circuit: cirq.Circuit, graph: nx.Graph) -> dict[cirq.Qid, cirq.Qid] | None:
    """A placement where every two-qubit gate lands on a coupler, or None if there is none."""
    logical = interaction_graph(circuit)
    matcher = isomorphism.GraphMatcher(graph, logical)
    for physical_to_logical in matcher.subgraph_monomorphisms_iter():
        return {q: p for p, q in physical_to_logical.items()}
    return None


def compile_for_device(circuit: cirq.Circuit, device: cirq.Device,
                       gateset: cirq.CompilationTargetGateset | None = None) -> CompiledCircuit:
    """Places, routes and converts `circuit` for `device`, then validates it.

    Args:
        circuit: any circuit of one- and two-qubit gates (measurements may span more qubits);
            sympy symbols are kept.
        device: a `cirq_google` device, e.g. ``engine.get_processor("weber").get_device()``.
        gateset: target gate set; `cirq_google.GoogleCZTargetGateset()` by default.

    Raises:
        DeviceCompilationError: more qubits than the device has, a gate of more than two qubits,
            or an operation the device rejects; the message names it.
    """
    graph = device_graph(device)
    qubits = sorted(circuit.all_qubits())
    if len(qubits) > graph.number_of_nodes():
        raise DeviceCompilationError(
            f"the circuit uses {len(qubits)} qubits but the device has {graph.number_of_nodes()}.")
    for op in circuit.all_operations():
        if len(op.qubits) > 2 and not cirq.is_measurement(op):
            raise DeviceCompilationError(
                f"operation {op} acts on {len(op.qubits)} qubits; decompose it into one- and "
                "two-qubit gates first.")
    # Terminal measurements are routed apart and put back at the end: a SWAP after a measurement
    # would make it mid-circuit, and simulators then rerun the whole circuit for every shot.
    terminal = circuit.are_all_measurements_terminal()
    body = cirq.Circuit(op for op in circuit.all_operations() if not (terminal and cirq.is_measurement(op)))
    body.append(cirq.I.on_each(sorted(circuit.all_qubits() - body.all_qubits())))  # keep measured-only qubits placed
    placement = embed(circuit, graph)
    mapper = cirq.HardCodedInitialMapper(placement) if placement else None
    routed, initial_map, swap_map = cirq.RouteCQC(graph).route_circuit(body, initial_mapper=mapper)
    final_map = {q: swap_map[initial_map[q]] for q in initial_map}
    with warnings.catch_warnings():
        # Cirq 1.5's own merge transformers build CircuitOperations without `use_repetition_ids`:
        # one FutureWarning per merged block, raised inside cirq, beyond any argument of ours.
        warnings.filterwarnings("ignore", message=".*use_repetition_ids", category=FutureWarning)
        compiled = cirq.optimize_for_target_gateset(
            routed, gateset=gateset or cirq_google.GoogleCZTargetGateset())
    if terminal:
        compiled.append(cirq.Moment(op.transform_qubits(final_map)
                                    for op in circuit.all_operations() if cirq.is_measurement(op)))
    try:
        device.validate_circuit(compiled)
    except ValueError as error:
        raise DeviceCompilationError(f"the compiled circuit does not run on the device: {error}") from error
    return CompiledCircuit(compiled, initial_map, final_map)


def circuit_stats(circuit: cirq.Circuit) -> dict[str, int]:
    """Depth (moments) and two-qubit gate count, for before/after compilation reports."""
    two_qubit = sum(1 for op in circuit.all_operations()
                    if len(op.qubits) == 2 and not cirq.is_measurement(op))
    return {"depth": len(cirq.Circuit(circuit.all_operations())), "two_qubit_gates": two_qubit}


class DeviceSampler(cirq.Sampler):
    """A `cirq.Sampler` that compiles every circuit for `device` before `sampler` runs it.

    Measurement keys are kept, so results read exactly as for the uncompiled circuit. Given a
    `cirq_google` processor (or the QVM of `google_virtual_machine`)::

        sampler = DeviceSampler(processor.get_sampler(), processor.get_device())
        moe = qmoe_tfq.QMoELayer(qubits, backend=sampler, repetitions=1000)
    """

    def __init__(self, sampler: cirq.Sampler, device: cirq.Device) -> None:
        if not isinstance(sampler, cirq.Sampler):
            raise TypeError(f"sampler must be a cirq.Sampler, got {sampler!r}.")
        self.sampler = sampler
        self.device = device

    def run_sweep(self, program: cirq.AbstractCircuit, params: cirq.Sweepable,
                  repetitions: int = 1) -> list[cirq.Result]:
        results = []
        for resolver in cirq.to_resolvers(params):
            resolved = cirq.resolve_parameters(cirq.Circuit(program), resolver)
            compiled = compile_for_device(resolved, self.device).circuit
            results.append(self.sampler.run(compiled, repetitions=repetitions))
        return results


def google_virtual_machine(processor_id: str = "weber",
                           simulator_class: type[cirq.SimulatesSamples] = cirq.DensityMatrixSimulator,
                           ) -> DeviceSampler:
    """A `DeviceSampler` on a local quantum virtual machine of a Google processor.

    The virtual machine uses the device and noise calibration that cirq_google ships for the
    processor (``"weber"`` or ``"rainbow"``). The density-matrix simulator samples all shots of a
    job from one noisy final state, so it is far faster than `cirq.Simulator`, which has to run a
    noise trajectory per shot, for the few qubits a QMoE layer uses.
    """
    engine = cirq_google.engine.create_default_noisy_quantum_virtual_machine(
        processor_id=processor_id, simulator_class=simulator_class)
    processor = engine.get_processor(processor_id)
    return DeviceSampler(processor.get_sampler(), processor.get_device())
