"""Measures what `backend="auto"` weighs: a training step's cost on the statevector kernel and on TFQ's qsim.

For circuits of several widths and depths (brickwork layers of ry/rz rotations and ZZ or CZ
entanglers, from shallow hardware-efficient to QCNN-deep) and several row counts, one process times
the forward and backward pass of one executor call on each executor, then fits the cost model of
`qmoe_tfq.execution.auto`:

    kernel  = kernel_call + steps * (kernel_step + kernel_amplitude * rows * 2**n)
    tfq     = tfq_call + rows * (tfq_row + tfq_gate_amplitude * gates * 2**n)

and prints the constants (to copy into `auto.COSTS`), each case's measured ratio and the one the
model predicts, and whether `auto` picks the faster executor; the table goes to
benchmarks/calibration.md.

With `--chunks` it measures instead how many qubits the kernel's Kronecker chunks should hold at
each width (`apply.CHUNK_QUBITS`, one size for all): the forward pass and the forward and backward pass of the
benchmark's ansatz, a deep ZZ brickwork and the user-style experts, on 16 and 64 rows, for each
chunk size; the table goes to benchmarks/chunks.md.

    python benchmarks/calibrate.py            # about 5 minutes on 2 cores
    python benchmarks/calibrate.py --chunks   # about 8 minutes
    python benchmarks/calibrate.py --quick    # a smoke run (with --chunks: of that table)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import qmoe_tfq  # noqa: F401  (sets up tf_keras before TensorFlow loads)
import cirq
import numpy as np
import sympy
import tensorflow as tf
from scipy.optimize import nnls

from qmoe_tfq.execution import CircuitExecutor, StatevectorExecutor, make_program
from qmoe_tfq.execution.apply import CHUNK_QUBITS
from qmoe_tfq.execution.auto import COSTS, Costs, ProgramShape, choose
from qmoe_tfq.execution.kernel import Kernel
from qmoe_tfq.execution.xla import under_xla


def brickwork(n_qubits: int, layers: int, entangler: str) -> cirq.Circuit:
    """`layers` of ry, rz on every qubit, then `entangler` ("zz": ZZ**s, "cz": CZ) on alternating pairs."""
    qubits = cirq.GridQubit.rect(1, n_qubits)
    circuit, count = cirq.Circuit(), 0
    for layer in range(layers):
        for q in qubits:
            circuit += [cirq.ry(sympy.Symbol(f"w{count}"))(q), cirq.rz(sympy.Symbol(f"w{count + 1}"))(q)]
            count += 2
        for a, b in zip(qubits[layer % 2::2], qubits[layer % 2 + 1::2]):
            circuit += cirq.ZZ(a, b) ** sympy.Symbol(f"w{count}") if entangler == "zz" else cirq.CZ(a, b)
            count += entangler == "zz"
    return circuit


def median_seconds(function, values: tf.Tensor, repeats: int) -> float:
    """Median seconds of `function` (a graph function) on `values`, after a compiling call."""
    function(values)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(values).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def training_seconds(run, values: tf.Tensor, repeats: int) -> float:
    """Median seconds of one forward and backward pass of `run` on `values`."""
    @tf.function
    def step(values):
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = tf.reduce_sum(run(values))
        return tape.gradient(loss, values)

    return median_seconds(step, values, repeats)


def user_experts(n_qubits: int) -> list[cirq.Circuit]:
    """The three experts of benchmarks/user_models.py (QCNN, brickwork, Heisenberg), with their own symbols."""
    from user_models import brickwork as user_brickwork, heisenberg, qcnn  # this folder's script

    qubits = cirq.GridQubit.rect(1, n_qubits)
    return [qcnn(qubits, "a"), user_brickwork(qubits, 3, "b"), heisenberg(qubits, 2, "c")]


def measure(programs: dict[str, list[cirq.Circuit]], rows_list, repeats: int) -> list[tuple[ProgramShape, float, float]]:
    """Each program (one or more circuits, rows spread over them) timed on both executors at each row count."""
    cases = []
    for label, circuits in programs.items():
        qubits = sorted(set().union(*(c.all_qubits() for c in circuits)))
        names = sorted({str(s) for c in circuits for s in cirq.parameter_symbols(c)})
        program = make_program(circuits, [[cirq.Z(q) for q in qubits]] * len(circuits), names, qubits)
        kernel_run, tfq_run = StatevectorExecutor().compile(program), CircuitExecutor().compile(program)
        for rows in rows_list:
            shape = ProgramShape.of(program, kernel_run.kernel, rows)
            values = tf.random.uniform([rows, len(names)], 0, 2 * np.pi)
            index = tf.range(rows) % len(circuits)  # <int32>[rows]
            kernel, tfq = (training_seconds(lambda v, run=run: run(v, index), values, repeats)
                           for run in (kernel_run, tfq_run))
            cases.append((shape, kernel, tfq))
            print(f"{label:<24} ({shape.steps:>2} steps, {shape.gates:>4.0f} gates), {rows:>4} rows: "
                  f"kernel {kernel * 1e3:8.2f} ms, qsim {tfq * 1e3:8.2f} ms", flush=True)
    return cases


def fit(cases: list[tuple[ProgramShape, float, float]]) -> Costs:
    """Non-negative least squares in relative error: every case weighs the same, however long it takes."""
    def constants(terms, seconds) -> list[float]:
        matrix = np.array([terms(shape) for shape, *_ in cases]) / np.array(seconds)[:, None]
        return [float(c) for c in nnls(matrix, np.ones(len(cases)))[0]]

    kernel = constants(Costs.kernel_terms, [k for _, k, _ in cases])
    tfq = constants(Costs.tfq_terms, [t for _, _, t in cases])
    return Costs(*kernel, *tfq, COSTS.kernel_compile, COSTS.kernel_compile_step, COSTS.horizon)


def chunk_cases(widths, sizes, rows_list, repeats: int) -> dict[int, dict[int, list[float]]]:
    """{width: {chunk size: seconds of each case}}: every case (circuit, rows, pass) timed with each chunk size."""
    table = {}
    for n in widths:
        circuits = {"3 cz layers": [brickwork(n, 3, "cz")], "12 zz layers": [brickwork(n, 12, "zz")],
                    "user's 3 experts": user_experts(n)}
        table[n] = {size: [] for size in sizes if size <= n}
        for label, programs in circuits.items():
            qubits = sorted(set().union(*(c.all_qubits() for c in programs)))
            names = sorted({str(s) for c in programs for s in cirq.parameter_symbols(c)})
            for size in table[n]:
                kernel = Kernel(programs, [[cirq.Z(q) for q in qubits]] * len(programs), names, qubits, chunk=size)
                run = under_xla(kernel)
                for rows in rows_list:
                    values = tf.random.uniform([rows, len(names)], 0, 2 * np.pi)  # <float32>[rows, n_symbols]
                    index, initial = tf.range(rows) % len(programs), kernel.ground_states(rows)  # [rows], [rows, 2**n]
                    def call(v: tf.Tensor) -> tf.Tensor:  # <float32>[rows, n_ops]
                        return run(v, initial, index)
                    table[n][size] += [median_seconds(tf.function(call), values, repeats),
                                       training_seconds(call, values, repeats)]
            print(f"{n} qubits, {label}: " + ", ".join(f"chunks of {size} {seconds[-1] * 1e3:.2f} ms"
                                                       for size, seconds in table[n].items()), flush=True)
    return table


def chunk_report(table: dict[int, dict[int, list[float]]], sizes, rows_list, repeats: int) -> list[str]:
    """Each chunk size's geometric-mean time over a width's cases, relative to the fastest size per case."""
    lines = ["# Qubits per Kronecker chunk", "", "`python benchmarks/calibrate.py --chunks`: the kernel under XLA, "
             "forward pass and forward + backward pass, of 3 cz layers, 12 zz layers (brickworks of ry/rz) and the "
             f"user-style experts (QCNN, brickwork, Heisenberg: three programs), on {' and '.join(map(str, rows_list))} "
             f"rows, median of {repeats}, 2-core CPU. Each cell: the geometric mean over those cases of the time "
             "with that chunk size over the fastest size's; 1.00 is fastest everywhere.", "",
             "| qubits | " + " | ".join(f"chunks of {s}" for s in sizes) + " | fastest | in use |",
             "|---:|" + "---:|" * len(sizes) + "---:|---:|"]
    for n, by_size in table.items():
        best = np.min(np.array(list(by_size.values())), axis=0)  # per case
        score = {size: float(np.exp(np.mean(np.log(np.array(seconds) / best)))) for size, seconds in by_size.items()}
        cells = [f"{score[s]:.2f}" if s in score else "" for s in sizes]
        lines.append(f"| {n} | {' | '.join(cells)} | {min(score, key=score.get)} | {CHUNK_QUBITS} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 widths, 1 depth, 1 row count")
    parser.add_argument("--chunks", action="store_true", help="measure qubits per Kronecker chunk instead")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.chunks:
        widths, sizes, rows_list = ((4,), (2, 4), (16,)) if args.quick else ((4, 5, 6, 7, 8, 9, 10, 12), (1, 2, 3, 4),
                                                                          (16, 64))
        repeats = 2 if args.quick else 3 * args.repeats
        lines = chunk_report(chunk_cases(widths, sizes, rows_list, repeats), sizes, rows_list, repeats)
        print("\n".join(lines))
        if not args.quick:
            (Path(__file__).parent / "chunks.md").write_text("\n".join(lines) + "\n")
        return
    if args.quick:
        cases = measure({f"{n} qubits, 1 cz layer": [brickwork(n, 1, "cz")] for n in (2, 3)}, [4], 2)
    else:
        programs = {f"{n} qubits, {layers} {kind} layers": [brickwork(n, layers, kind)]
                    for n in (4, 6, 8, 10, 12, 14) for layers, kind in ((3, "cz"), (12, "zz"))}
        programs.update({f"{n} qubits, user's 3 experts": user_experts(n) for n in (4, 8, 12)})
        cases = measure(programs, [16, 128], args.repeats)
    costs = fit(cases)
    lines = ["# What `auto` weighs", "", "`python benchmarks/calibrate.py`: one forward and backward pass of one executor "
             f"call, median of {args.repeats}, 2-core CPU.", "", f"- fitted: `{costs}`", f"- in use: `{COSTS}`", "",
             "| qubits | steps | gates | rows | kernel ms | qsim ms | kernel / qsim | predicted (in use) | auto picks | "
             "faster |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    right = 0
    for shape, kernel, tfq in cases:
        picked = choose(shape, COSTS).executor
        faster = "statevector" if kernel < tfq else "noiseless"
        right += picked == faster or abs(kernel / tfq - 1) < 0.2
        lines.append(f"| {shape.n} | {shape.steps} | {shape.gates:.0f} | {shape.rows} | {kernel * 1e3:.2f} | "
                     f"{tfq * 1e3:.2f} | {kernel / tfq:.2f} | {COSTS.kernel_seconds(shape) / COSTS.tfq_seconds(shape):.2f} | "
                     f"{picked} | {faster} |")
    lines += ["", f"auto (the constants in use) picks the faster executor, or one within 20%, in {right} of "
              f"{len(cases)} cases."]
    print("\n".join(lines))
    if not args.quick:
        (Path(__file__).parent / "calibration.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
