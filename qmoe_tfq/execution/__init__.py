"""Where circuits run. A layer hands each `Program` to an `Executor` once, in `build`, and calls the `Run` it
gets back every step.

| module | holds |
|---|---|
| `program` | `Program` (circuits, observables, the ``[data | weights]`` value layout), `RowParts`, the `Executor` and `Run` protocols |
| `backends` | what ``backend=``/``repetitions=``/``noise=`` may be, and the backend part of a layer config |
| `tfq` | `CircuitExecutor`: TFQ's simulators, or a Cirq sampler/simulator through TFQ |
| `ops` | circuits as the kernel sees them: `Unitary`s scheduled into `Stage`s, packed into `Step`s |
| `apply` | how matrices act on a batched state |
| `steps` | one run of the kernel's steps, forward and backward by undoing it from the final states (adjoint) |
| `kernel` | the TF statevector kernel: a layer's programs as step tables run by one loop |
| `xla` | a kernel as XLA computations, forward and backward, on bucketed row counts; a layer's inference step on a bucketed batch |
| `factored` | rows by parts: each sample's data part once, each expert's weight part once as a unitary |
| `statevector` | `StatevectorExecutor`: the kernel under XLA, row by row or by parts |
| `auto` | ``backend="auto"``: the cost model and `AutoExecutor` |
| `input_checks` | in-graph checks of serialized input circuits |
"""
from __future__ import annotations

import tensorflow_quantum as tfq

from qmoe_tfq.execution.auto import AutoExecutor
from qmoe_tfq.execution.backends import Backend, validate_backend
from qmoe_tfq.execution.program import Executor, Program, Run, make_program
from qmoe_tfq.execution.statevector import StatevectorExecutor
from qmoe_tfq.execution.tfq import CircuitExecutor

__all__ = ["AutoExecutor", "CircuitExecutor", "Executor", "Program", "Run", "StatevectorExecutor", "make_executor",
           "make_program"]


def make_executor(backend: Backend | Executor, repetitions: int | None,
                  differentiator: tfq.differentiators.Differentiator | None) -> Executor:
    """The executor for `backend`: `backend` itself when it is already one (e.g. a wrapped one in tests).

    ``"auto"`` with exact expectations and no differentiator is `auto.AutoExecutor`, which puts
    each program on the TF statevector kernel or on TFQ's qsim by their estimated costs; with shots or
    a differentiator it is TFQ.
    """
    if not isinstance(backend, str):
        return backend if isinstance(backend, Executor) else CircuitExecutor(backend, repetitions, differentiator)
    validate_backend(backend, repetitions)
    if backend == "auto":
        if repetitions is None and differentiator is None:
            return AutoExecutor()
        backend = "noiseless"
    if backend == "statevector":
        if differentiator is not None:
            raise ValueError("backend='statevector' differentiates by TF autodiff; it takes no differentiator "
                             f"(got {differentiator!r}); use backend='noiseless' for a TFQ differentiator.")
        return StatevectorExecutor()
    return CircuitExecutor(backend, repetitions, differentiator)
