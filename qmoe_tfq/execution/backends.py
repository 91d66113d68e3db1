"""Backends: what ``backend=`` and ``repetitions=`` may be, noise, and the executor each makes.

``"auto"`` (the default) puts a layer's circuits on the TF statevector kernel or on TFQ's qsim by
their estimated cost (`auto`); ``"statevector"`` is the kernel (`statevector`); ``"noiseless"`` and
``"noisy"`` are TFQ's simulators, and a Cirq sampler or simulator runs through TFQ too (`tfq`).
"""
from __future__ import annotations

import dataclasses
import numbers
import warnings

import cirq
import tensorflow_quantum as tfq

from qmoe_tfq.execution.program import Executor

BACKEND_NAMES = ("auto", "statevector", "noiseless", "noisy")
EXACT = ("auto", "statevector", "noiseless")
MAX_REPETITIONS = 1_000_000  # shots or trajectories per row; TFQ keeps every sample in memory
Backend = str | cirq.Sampler | cirq.SimulatesExpectationValues
Noise = cirq.NoiseModel | cirq.Gate


def validate_backend(backend: Backend, repetitions: int | None) -> None:
    """Checks a backend/repetitions pair, naming what is wrong and what is allowed."""
    if repetitions is not None and (
            isinstance(repetitions, bool) or not isinstance(repetitions, numbers.Integral)
            or repetitions < 1):
        raise ValueError(f"repetitions must be None or a positive integer, got {repetitions!r}.")
    if repetitions is not None and repetitions > MAX_REPETITIONS:
        raise ValueError(f"repetitions={repetitions} is more than {MAX_REPETITIONS:,} samples per circuit row, "
                         "which would take minutes and gigabytes per batch; use at most that.")
    if isinstance(backend, str):
        if backend not in BACKEND_NAMES:
            raise ValueError(
                f"backend={backend!r} is not allowed; use one of {BACKEND_NAMES}, a cirq.Sampler "
                "or a cirq.SimulatesExpectationValues simulator.")
        if backend == "statevector" and repetitions is not None:
            raise ValueError(f"backend='statevector' computes exact expectations; for repetitions={repetitions} "
                             "shots use backend='noiseless' or 'auto'.")
        if backend == "noisy" and repetitions is None:
            raise ValueError("backend='noisy' averages noise trajectories: give repetitions=N (e.g. 1000).")
        return
    if repetitions is not None and not isinstance(backend, cirq.Sampler):
        raise TypeError(f"backend={backend!r} with repetitions={repetitions} must be a cirq.Sampler.")
    if repetitions is None and not isinstance(backend, cirq.SimulatesExpectationValues):
        raise TypeError(
            f"backend={backend!r} without repetitions must be a cirq.SimulatesExpectationValues; "
            "for a cirq.Sampler (e.g. hardware) give repetitions=N shots.")


def validate_noise(noise: Noise | None, backend: Backend) -> None:
    """Noise channels need a simulator that can apply them: 'noisy' or a Cirq backend."""
    if noise is None:
        return
    if not isinstance(noise, (cirq.NoiseModel, cirq.Gate)):
        raise TypeError(f"noise must be a cirq.NoiseModel or a cirq channel such as cirq.depolarize(0.01), "
                        f"got {noise!r}.")
    if backend in EXACT:
        raise ValueError(
            f"noise={noise!r} needs a simulator of noisy circuits, not backend={backend!r}: use backend='noisy' with "
            "repetitions=N trajectories, or a Cirq simulator/sampler that applies noise.")


@dataclasses.dataclass(frozen=True)
class Execution:
    """Where and how a layer's circuits run: one part, shared by every circuit of the layer.

    Args:
        backend: ``"auto"``, ``"statevector"``, ``"noiseless"``, ``"noisy"``, a `cirq.Sampler` (e.g.
            hardware) or `cirq.SimulatesExpectationValues` simulator, or an `Executor` object.
        repetitions: None (exact expectations) or shots / noise trajectories per circuit row.
        differentiator: a TFQ differentiator (TFQ backends; the statevector kernel uses autodiff).
        noise: a `cirq.NoiseModel` or channel applied after every moment (``"noisy"`` or a Cirq backend).

    >>> Execution("noisy", repetitions=100, noise=cirq.depolarize(0.01)).repetitions
    100
    """

    backend: Backend | Executor = "auto"
    repetitions: int | None = None
    differentiator: tfq.differentiators.Differentiator | None = None
    noise: Noise | None = None

    def __post_init__(self) -> None:
        if isinstance(self.backend, str):
            validate_backend(self.backend, self.repetitions)
        validate_noise(self.noise, self.backend)

    @classmethod
    def of(cls, value: Execution | Backend | Executor | None) -> Execution:
        """`value` as an `Execution`: None is the default, a backend (name, Cirq object, executor) runs on it."""
        if isinstance(value, Execution):
            return value
        return cls() if value is None else cls(value)

    @property
    def args(self) -> dict:
        """As keyword arguments of `ExpertPQC` (and of `tfq.layers.PQC`, but `noise`)."""
        return {"backend": self.backend, "repetitions": self.repetitions, "differentiator": self.differentiator,
                "noise": self.noise}

    def get_config(self) -> dict:
        return execution_config(self.backend, self.repetitions, self.noise, self.differentiator)


def apply_noise(circuit: cirq.Circuit, noise: Noise | None) -> cirq.Circuit:
    """`circuit` with `noise` after every moment on every qubit (or as the noise model says)."""
    return circuit if noise is None else circuit.with_noise(noise)


def runs_in_python(backend: Backend | Executor) -> bool:
    """True for Cirq samplers and simulators: TFQ calls them back in Python (no SavedModel export)."""
    return not isinstance(backend.backend if isinstance(backend, Executor) else backend, str)


def execution_config(backend: Backend | Executor, repetitions: int | None, noise: Noise | None,
                     differentiator: tfq.differentiators.Differentiator | None) -> dict:
    """The backend part of a layer config.

    Cirq samplers, simulators and executor objects are run-time choices that do not travel in a
    config: a layer that ran on one reloads on the exact, noiseless simulator until it is given a
    backend again. The differentiator travels (see `differentiator_config`).
    """
    stored = {"differentiator": differentiator_config(differentiator)}
    if not isinstance(backend, str):
        return {"backend": "noiseless", "repetitions": None, "noise": None, **stored}
    return {"backend": backend, "repetitions": repetitions, "noise": None if noise is None else cirq.to_json(noise),
            **stored}


DIFFERENTIATORS = {cls.__name__: cls for cls in (
    tfq.differentiators.Adjoint, tfq.differentiators.ParameterShift, tfq.differentiators.LinearCombination)}


def differentiator_config(differentiator: tfq.differentiators.Differentiator | None) -> dict | None:
    """`differentiator` as plain data (None stays None), for TFQ's own differentiators.

    Finite differences (`ForwardDifference`, `CentralDifference`) are stored as the `LinearCombination`
    they are: the same weights and perturbations, so the same gradients.

    >>> differentiator_config(tfq.differentiators.ForwardDifference(grid_spacing=0.5))
    {'class_name': 'LinearCombination', 'config': {'weights': [-2.0, 2.0], 'perturbations': [0.0, 0.5]}}
    """
    if differentiator is None:
        return None
    if isinstance(differentiator, tfq.differentiators.LinearCombination):
        return {"class_name": "LinearCombination", "config": {
            "weights": differentiator.weights.numpy().tolist(),
            "perturbations": differentiator.perturbations.numpy().tolist()}}
    if DIFFERENTIATORS.get(type(differentiator).__name__) is type(differentiator):
        return {"class_name": type(differentiator).__name__, "config": {}}
    warnings.warn(f"differentiator={differentiator!r} is not one of TFQ's {sorted(DIFFERENTIATORS)} (or their finite "
                  "differences); a config cannot rebuild it, so it is not saved: the reloaded layer uses the "
                  "default differentiator.", UserWarning, stacklevel=3)
    return None


def read_differentiator(entry: dict | None, where: str) -> tfq.differentiators.Differentiator | None:
    """The differentiator stored by `differentiator_config`, checked: TFQ's classes and numbers only."""
    if entry is None:
        return None
    name = entry.get("class_name") if isinstance(entry, dict) else None
    if name not in DIFFERENTIATORS:
        raise ValueError(f"{where}: a stored differentiator must be one of {sorted(DIFFERENTIATORS)}, got {entry!r}.")
    config = entry.get("config") or {}
    numbers_only = all(isinstance(v, (int, float)) or (isinstance(v, list) and all(
        isinstance(x, (int, float)) for x in v)) for v in config.values())
    if not isinstance(config, dict) or not numbers_only:
        raise ValueError(f"{where}: the stored {name} takes numbers, got {config!r}.")
    return DIFFERENTIATORS[name](**config)
