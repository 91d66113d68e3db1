"""`QMoELayer`'s keyword settings, each of which makes one part.

``QMoELayer(qubits, 4, top_k=1, temperature=0.5, router_layers=3, backend="noiseless")`` is short for
``QMoELayer(qubits, 4, gate=TopK(1, temperature=0.5), router=QuantumRouter(Ansatz(layers=3)),
execution=Execution("noiseless"))``: `parts` turns the settings into those parts, which then take
the one path every construction takes. Configs saved before parts existed (format versions 1-3)
are these settings too, and load through the same function.

| part | its settings |
|---|---|
| ``gate`` (`TopK` with ``top_k``, `DenseGate` without, `ExpertChoice` with ``routing="expert_choice"``) | ``temperature``, ``router_noise``, ``capacity_factor``, ``load_balance_weight``, ``z_loss_weight``, ``balance``, ``bias_rate``, ``metrics`` |
| ``ansatz`` (`Ansatz`) | ``rotations``, ``entangler``, ``entangle_first``, ``expert_layers`` (its ``layers``; a list gives each expert its own depth) |
| ``router`` (`QuantumRouter`) | ``router_layers`` (the built-in router's depth, 2), ``router_observables``, ``router_head`` |
| ``execution`` (`Execution`) | ``backend``, ``repetitions``, ``differentiator``, ``noise`` |

Giving a part and one of its settings is refused, naming both.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cirq
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq.circuits import Ansatz, Observable, validate_positive_int
from qmoe_tfq.execution.backends import Backend, Execution
from qmoe_tfq.execution.program import Executor
from qmoe_tfq.gating import DenseGate, ExpertChoice, Gate, TopK
from qmoe_tfq.experts import QUANTUM, Part, deserialize_part
from qmoe_tfq.qcnn import BUILTINS, QCNN
from qmoe_tfq.routers import QuantumRouter, router_readouts
from qmoe_tfq.routing import EXPERT_CHOICE_CAPACITY, RoutingPolicy
from qmoe_tfq.serialization import upgrade_qmoe_config

QUANTUM_ROUTERS = (*BUILTINS, cirq.Circuit, tfq.layers.PQC)  # what a QuantumRouter's circuit may be
# part argument -> the settings that make it
SETTINGS = {
    "gate": ("temperature", "router_noise", "capacity_factor", "load_balance_weight", "z_loss_weight", "routing",
             "balance", "bias_rate", "metrics"),
    "ansatz": ("rotations", "entangler", "entangle_first", "expert_layers"),
    "router": ("router_layers", "router_observables", "router_head"),
    "execution": ("backend", "repetitions", "differentiator", "noise"),
}


@dataclasses.dataclass
class Parts:
    """The parts the settings made (or were given), and the per-expert depths of ``expert_layers=[...]``."""

    gate: Gate
    ansatz: Ansatz | QCNN
    router: QuantumRouter | keras.layers.Layer
    execution: Execution
    depths: list[int] | None

    def with_depths(self, entries: list[Part]) -> list[Part]:
        """`entries` (routed, then shared) with ``expert_layers=[...]``'s depth on each built-in expert."""
        if self.depths is None:
            return entries
        if len(self.depths) != len(entries):
            raise ValueError(f"expert_layers has {len(self.depths)} depths but there are {len(entries)} experts.")
        return [dataclasses.replace(self.ansatz, layers=d) if e == QUANTUM else e for e, d in zip(entries, self.depths)]


def pop_settings(kwargs: dict) -> dict:
    """The settings among a constructor's `kwargs` (removed from it); the rest are Keras's."""
    names = [name for group in SETTINGS.values() for name in group]
    return {name: kwargs.pop(name) for name in names if name in kwargs}


def parts(settings: dict, top_k: int | None, gate: Gate | None, ansatz: Ansatz | QCNN | None,
          router: QuantumRouter | Part | None, execution: Execution | Backend | Executor | None) -> Parts:
    """The parts: each given one as it is, else made from its settings (giving both is refused)."""
    settings = dict(settings)
    for part, given in (("gate", gate), ("ansatz", ansatz), ("execution", execution)):
        clash = [name for name in SETTINGS[part] if name in settings]
        if given is not None and clash:
            raise ValueError(f"{clash} are settings of the {part}, and {part}= is given: set them on it.")
    if gate is not None and top_k is not None:
        raise ValueError(f"top_k={top_k} is a setting of the gate, and gate= is given: use TopK({top_k}).")
    depths = settings.pop("expert_layers", 2)
    if router is None and "router_layers" not in settings and depths != 2:
        settings["router_layers"] = 2  # the settings' router is 2 layers deep whatever expert_layers says
    per_expert = isinstance(depths, Sequence) and not isinstance(depths, str)
    if per_expert:
        depths = [validate_positive_int(d, f"expert_layers[{i}]") for i, d in enumerate(depths)]
    else:
        validate_positive_int(depths, "expert_layers")
    shape = {key: settings.pop(key) for key in ("rotations", "entangler", "entangle_first") if key in settings}
    ansatz = ansatz or Ansatz(**shape, layers=2 if per_expert else depths)
    router = _router(router, ansatz, *(settings.pop(key, None) for key in SETTINGS["router"]))
    execution = make_execution(settings, execution)
    return Parts(gate or make_gate(top_k, **settings), ansatz, router, execution, depths if per_expert else None)


def make_execution(settings: dict, execution: Execution | Backend | Executor | None) -> Execution:
    """`execution` as an `Execution`, or (None) the one the execution settings describe (popped from `settings`)."""
    if execution is not None:
        return Execution.of(execution)
    return Execution(**{key: settings.pop(key) for key in SETTINGS["execution"] if key in settings})


def _router(router: QuantumRouter | Part | None, ansatz: Ansatz | QCNN, layers: int | None,
            observables: Sequence[Observable] | None, head: keras.layers.Layer | None,
            ) -> QuantumRouter | keras.layers.Layer:
    """The router part: `router` if it is one, else a `QuantumRouter` made from it and the router settings."""
    if router is not None and not isinstance(router, (QuantumRouter, keras.layers.Layer, *QUANTUM_ROUTERS)):
        raise TypeError(f"router must be None, a qmoe_tfq.QuantumRouter, an Ansatz or QCNN, a cirq.Circuit, a "
                        f"tfq.layers.PQC / qmoe_tfq.ExpertPQC or a tf_keras layer, got {router!r}.")
    if isinstance(router, QuantumRouter) or (router is not None and not isinstance(router, QUANTUM_ROUTERS)):
        if observables is not None or head is not None:
            raise ValueError(f"router_observables and router_head shape a quantum router made from settings; "
                             f"router={router!r} is given: set them on it.")
        return router
    if router is None and layers not in (None, ansatz.layers):  # router_layers: the built-in router's depth only
        router = dataclasses.replace(ansatz, layers=validate_positive_int(layers, "router_layers"))
    return QuantumRouter(router, observables, head)


def make_gate(top_k: int | None, temperature: float = 1.0, router_noise: float = 0.0,
              capacity_factor: float | None = None, load_balance_weight: float = 1e-2, z_loss_weight: float = 1e-3,
              routing: str = "top_k", balance: str = "aux_loss", bias_rate: float = 0.1,
              metrics: str = "summary") -> Gate:
    """The gate the routing settings describe: `TopK`, `ExpertChoice` or (``top_k=None``) `DenseGate`."""
    # Checks every setting (and their combinations) as the gates do, before choosing one.
    RoutingPolicy(None, top_k, temperature, router_noise, capacity_factor, load_balance_weight, z_loss_weight,
                  routing, balance, bias_rate, metrics)
    shared = {"temperature": temperature, "router_noise": router_noise, "z_loss_weight": z_loss_weight,
              "metrics": metrics}
    if routing == "expert_choice":
        return ExpertChoice(top_k or 1, capacity_factor=capacity_factor or EXPERT_CHOICE_CAPACITY, **shared)
    if top_k is not None:
        return TopK(top_k, capacity_factor=capacity_factor, balance=balance, load_balance_weight=load_balance_weight,
                    bias_rate=bias_rate, **shared)
    if capacity_factor is not None or balance == "bias":
        raise ValueError("dense routing (top_k=None) runs every expert on every sample; capacity_factor and "
                         "balance='bias' choose among experts: give top_k, or routing='expert_choice'.")
    return DenseGate(load_balance_weight=load_balance_weight, **shared)


def upgrade_settings(config: dict, version: int, execution: dict) -> dict:
    """A decoded format 1-3 `QMoELayer` config as keyword settings (and parts) that build what it was saved with."""
    upgrade_qmoe_config(config, version, lambda: router_readouts(config["qubits"], config["n_experts"], "pauli"))
    for key in ("router", "router_head"):
        if config.get(key) is not None:
            config[key] = deserialize_part(config[key], execution)
    return config
