"""`backend="auto"`: each program runs on the executor its estimated cost favours, and says why.

A training step's cost on each exact executor is modelled from the compiled program (constants
fitted by ``python benchmarks/calibrate.py`` on the 2-core CPU this project is measured on):

    statevector kernel:  kernel_call + steps * (kernel_step + kernel_amplitude * rows * 2**n * work)  + a compile
    TFQ qsim:            tfq_call + rows * (tfq_row + gates * (tfq_gate + tfq_gate_amplitude * 2**n))

`steps` is the kernel's loop length (`Kernel.step_count`), `work` what one step does per amplitude
(`Kernel.step_work`: the layer's Kronecker chunks and the phase's symbolic terms), `gates` the
program's operations, `rows` what one call evaluates (``Program.rows_per_sample`` times a nominal
batch of 32: the router 1, top-k experts k, dense experts E). The kernel's compile is spread over
`Costs.horizon` steps. Wider than `AUTO_MAX_QUBITS`, or with a gate the kernel cannot run, a
program runs on TFQ.

>>> choose(ProgramShape(n=8, steps=3, work=32, gates=72, rows=32)).executor
'statevector'
>>> choose(ProgramShape(n=12, steps=49, work=56, gates=213, rows=16)).executor
'noiseless'
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cirq
import tensorflow as tf

from qmoe_tfq.execution.kernel import Kernel
from qmoe_tfq.execution.ops import UnsupportedGate
from qmoe_tfq.execution.program import Inputs, Program, Run
from qmoe_tfq.execution.statevector import StatevectorExecutor
from qmoe_tfq.execution.tfq import CircuitExecutor

AUTO_MAX_QUBITS = 14  # wider, qsim won every measured case, and the kernel's tables grow as 2**n
LOG = logging.getLogger("qmoe_tfq")


@dataclass(frozen=True)
class ProgramShape:
    """What a program costs depends on: width, kernel steps and their work per amplitude, gates, rows per call."""

    n: int
    steps: int
    work: int  # `Kernel.step_work`
    gates: float  # operations per row (mean over the programs)
    rows: int

    @classmethod
    def of(cls, program: Program, kernel: Kernel, rows: int) -> ProgramShape:
        gates = sum(len(list(c.all_operations())) for c in program.cirq_circuits) / len(program.cirq_circuits)
        return cls(len(program.qubits), kernel.step_count, kernel.step_work, gates, rows)

    def __str__(self) -> str:
        return f"{self.n} qubits, {self.steps} kernel steps, {self.gates:.0f} gates, {self.rows} rows per call"


@dataclass(frozen=True)
class Costs:
    """Seconds per training step (forward and backward) of one executor call, and the compile's weight."""

    kernel_call: float
    kernel_step: float
    kernel_amplitude: float
    tfq_call: float
    tfq_row: float
    tfq_gate: float
    tfq_gate_amplitude: float
    kernel_compile: float  # seconds, once per program (XLA, forward and backward) ...
    kernel_compile_step: float  # ... and per step of the program
    horizon: int  # training steps the compile is spread over

    @staticmethod
    def kernel_terms(shape: ProgramShape) -> tuple[float, float, float]:
        """What `kernel_call`, `kernel_step` and `kernel_amplitude` multiply."""
        return 1.0, shape.steps, shape.steps * shape.rows * 2 ** shape.n * shape.work

    @staticmethod
    def tfq_terms(shape: ProgramShape) -> tuple[float, float, float, float]:
        """What `tfq_call`, `tfq_row`, `tfq_gate` and `tfq_gate_amplitude` multiply."""
        return 1.0, shape.rows, shape.rows * shape.gates, shape.rows * shape.gates * 2 ** shape.n

    def compile_seconds(self, shape: ProgramShape) -> float:
        return self.kernel_compile + self.kernel_compile_step * shape.steps

    def kernel_seconds(self, shape: ProgramShape) -> float:
        terms = self.kernel_terms(shape)
        return float(sum(c * t for c, t in zip((self.kernel_call, self.kernel_step, self.kernel_amplitude), terms)))

    def tfq_seconds(self, shape: ProgramShape) -> float:
        terms = self.tfq_terms(shape)
        constants = (self.tfq_call, self.tfq_row, self.tfq_gate, self.tfq_gate_amplitude)
        return float(sum(c * t for c, t in zip(constants, terms)))


# Fitted by benchmarks/calibrate.py (its table: benchmarks/calibration.md); the compile from first steps minus
# qsim's: ~0.6 s per 3-step program (4 qubits), ~5.5 s for the 40- and 17-step programs of benchmarks/user_models.py.
COSTS = Costs(kernel_call=4.3e-4, kernel_step=1.7e-4, kernel_amplitude=1.13e-9, tfq_call=0.0, tfq_row=0.0,
              tfq_gate=5.5e-6, tfq_gate_amplitude=1.52e-9, kernel_compile=0.5, kernel_compile_step=0.08,
              horizon=2000)


@dataclass(frozen=True)
class Choice:
    executor: str  # "statevector" or "noiseless"
    reason: str


def choose(shape: ProgramShape, costs: Costs = COSTS) -> Choice:
    """The exact executor with the lower estimated cost over `costs.horizon` training steps."""
    kernel, tfq = costs.kernel_seconds(shape), costs.tfq_seconds(shape)
    compile_seconds = costs.compile_seconds(shape)
    statevector = kernel * costs.horizon + compile_seconds < tfq * costs.horizon
    estimate = (f"{shape}: estimated {kernel * 1e3:.2f} ms per training step on the statevector kernel "
                f"(+{compile_seconds:.1f} s compile), {tfq * 1e3:.2f} ms on qsim")
    return Choice("statevector" if statevector else "noiseless", estimate)


class AutoExecutor:
    """Compiles programs on the executor `choose` picks for the first one; `choices` keeps each pick and its reason.

    One layer's programs share the first program's executor (a layer compiles its experts' table, the
    program with the most rows, first): mixing the two pays both their fixed costs, and with circuit
    inputs simulates the inputs on each (measured on the user models of benchmarks/user_models.py:
    top-1 0.8x either executor alone).
    """

    backend = "auto"
    repetitions = None

    def __init__(self, costs: Costs = COSTS) -> None:
        self.costs, self.choices = costs, []
        self._statevector, self._tfq = StatevectorExecutor(), CircuitExecutor("noiseless")

    @property
    def name(self) -> str:
        """The executor chosen (``"auto"`` before any program is compiled)."""
        return self.choices[0].executor if self.choices else "auto"

    def compile(self, program: Program) -> Run:
        """The `Run` of `program` on the chosen executor (the choice logged at INFO)."""
        choice, run = self._choose(program)
        self.choices.append(choice)
        LOG.info("backend='auto' runs %s: %s", choice.executor, choice.reason)
        return run if choice.executor == "statevector" else self._tfq.compile(program)

    def prepare(self, circuits: tf.Tensor, qubits: Sequence[cirq.Qid]) -> Inputs:
        """As the chosen executor prepares them (TFQ before any program is compiled)."""
        chosen = self._statevector if self.name == "statevector" else self._tfq
        return chosen.prepare(circuits, qubits)

    def _choose(self, program: Program) -> tuple[Choice, Run | None]:
        """(choice, the kernel's run or None); the kernel's tables are built, XLA compiles on first use."""
        follow = "as the layer's first program (one executor per layer)"
        if self.choices and self.choices[0].executor == "noiseless":
            return Choice("noiseless", follow), None
        if len(program.qubits) > AUTO_MAX_QUBITS:
            return Choice("noiseless", f"{len(program.qubits)} qubits, more than AUTO_MAX_QUBITS={AUTO_MAX_QUBITS}"), None
        try:
            run = self._statevector.compile(program)
        except UnsupportedGate as error:
            return Choice("noiseless", f"the statevector kernel cannot run this program ({error})"), None
        if self.choices:
            return Choice("statevector", follow), run
        return choose(ProgramShape.of(program, run.kernel, program.nominal_rows), self.costs), run
