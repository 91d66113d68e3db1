"""`auto` against every exact executor on models a user writes: QCNN experts on quantum data, batch 16.

The task is the TFQ QCNN tutorial's (excited cluster states on 8 qubits: is the excitation's angle
within pi/2?). The QMoE has three experts the way a user would write them, each a different
program: the tutorial's convolution + pooling QCNN (``X**s``, ``Y**s``, ``Z**s``, ``ZZ**s``,
``YY**s``, ``XX**s``, CNOT, inverse selectors), a lighter ry/rz + CZ brickwork and a
Heisenberg-style XX/YY/ZZ chain; the router is the layer's built-in one. Each (model, backend) runs
in its own process, in turns with the other backends of its routing (`qmoe_tfq.turns.Turns`): the
first training step (compilation included), then rounds of `fit` (one epoch of the round's batches)
and `predict` over them, as the peers' benchmark times them (a `train_on_batch` call took 13-17 ms
more than Keras's compiled training step of this model, ~24 ms; `fit` adds ~6 ms a batch), round r
of every backend before round r + 1 of any, and the process's peak memory.

    python benchmarks/user_models.py                  # writes benchmarks/user_models.md
    python benchmarks/user_models.py --rounds 2 --steps 4 --qubits 6
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import qmoe_tfq as qmoe  # first: tf_keras before TensorFlow
from qmoe_tfq.benchmark import timed_rounds
from qmoe_tfq.turns import Turns, serve

HERE = Path(__file__).parent
BACKENDS = ("auto", "statevector", "noiseless")
MODES = ("top1", "dense")


def qcnn(qubits, prefix: str):
    """The QCNN tutorial's circuit: convolution on all qubits, pooling half into the other half, repeated."""
    import cirq
    import sympy

    def one_qubit(q, s):
        return [cirq.X(q) ** s[0], cirq.Y(q) ** s[1], cirq.Z(q) ** s[2]]

    def two_qubit(a, b, s):
        return [*one_qubit(a, s[0:3]), *one_qubit(b, s[3:6]), cirq.ZZ(a, b) ** s[6], cirq.YY(a, b) ** s[7],
                cirq.XX(a, b) ** s[8], *one_qubit(a, s[9:12]), *one_qubit(b, s[12:15])]

    def pool(source, sink, s):
        sink_basis = cirq.Circuit(one_qubit(sink, s[0:3]))
        return sink_basis + cirq.Circuit(one_qubit(source, s[3:6])) + cirq.CNOT(source, sink) + sink_basis ** -1

    circuit, bits, level = cirq.Circuit(), list(qubits), 0
    while len(bits) > 1:
        s = sympy.symbols(f"{prefix}c{level}_0:15")
        pairs = list(zip(bits[0::2], bits[1::2])) + list(zip(bits[1::2], bits[2::2] + bits[:1]))
        circuit += [op for a, b in pairs for op in two_qubit(a, b, s)]
        p = sympy.symbols(f"{prefix}p{level}_0:6")
        half = len(bits) // 2
        for source, sink in zip(bits[:half], bits[half:]):
            circuit += pool(source, sink, p)
        bits, level = bits[half:], level + 1
    return circuit


def brickwork(qubits, layers: int, prefix: str):
    import cirq
    import sympy
    circuit = cirq.Circuit()
    for layer in range(layers):
        circuit += [cirq.ry(sympy.Symbol(f"{prefix}y{layer}_{i}"))(q) for i, q in enumerate(qubits)]
        circuit += [cirq.rz(sympy.Symbol(f"{prefix}z{layer}_{i}"))(q) for i, q in enumerate(qubits)]
        circuit += [cirq.CZ(a, b) for a, b in zip(qubits, qubits[1:] + qubits[:1])]
    return circuit


def heisenberg(qubits, layers: int, prefix: str):
    import cirq
    import sympy
    circuit = cirq.Circuit()
    for layer in range(layers):
        for i, (a, b) in enumerate(zip(qubits, qubits[1:])):
            t = sympy.Symbol(f"{prefix}j{layer}_{i}")
            circuit += [cirq.XX(a, b) ** t, cirq.YY(a, b) ** t, cirq.ZZ(a, b) ** t]
        circuit += [cirq.rx(sympy.Symbol(f"{prefix}x{layer}_{i}"))(q) for i, q in enumerate(qubits)]
    return circuit


class Measured:
    """One model on one backend in this process, measured when `Turns` says (`serve`): "start" (the first training
    step, compilation included), "round" (`fit` over `args.steps` batches, then `predict` over them), "end"
    (which executor ran, peak memory)."""

    def __init__(self, args: argparse.Namespace) -> None:
        import cirq
        import numpy as np
        import tensorflow as tf
        import tensorflow_quantum as tfq
        import tf_keras as keras

        from qmoe_tfq.quantum_data import excited_cluster_states

        keras.utils.set_random_seed(0)
        qubits = cirq.GridQubit.rect(1, args.qubits)
        train, test, train_labels, test_labels = excited_cluster_states(qubits, 2 * args.batch * args.steps, seed=0,
                                                                        test_size=0.5)
        x = tfq.convert_to_tensor((train + test)[:args.batch * args.steps])  # <string>[samples]
        y = np.concatenate([train_labels, test_labels])[:args.batch * args.steps]  # [samples]
        inputs = keras.Input(shape=(), dtype=tf.string)
        self.moe = qmoe.QMoELayer(qubits, experts=[qcnn(qubits, "a"), brickwork(qubits, 3, "b"),
                                                   heisenberg(qubits, 2, "c")],
                                  top_k=1 if args.mode == "top1" else None, backend=args.backend)
        self.model = keras.Model(inputs, keras.layers.Dense(2)(self.moe(inputs)))
        self.model.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        options = tf.data.Options()
        options.autotune.enabled = False  # as the peers' benchmark: autotuning stretched steps of a few ms
        self.data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch).cache().with_options(options)
        self.samples = len(y)

    def start(self) -> dict:
        start = time.perf_counter()
        self.model.fit(self.data.take(1), verbose=0)
        first = time.perf_counter() - start
        self.model.predict(self.data.take(1), verbose=0)
        return {"first_step": first}

    def round(self) -> dict:
        (train,), (infer,) = timed_rounds(self.model, self.data, self.samples, 1)
        return {"train": train, "infer": infer}

    def end(self) -> dict:
        return {"simulator": self.moe.simulator, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def spread(values: list[float]) -> str:
    """Median, and the spread as (max - min) / median."""
    median = statistics.median(values)
    return f"{median:.0f} (±{50 * (max(values) - min(values)) / median:.0f}%)"


def measure_in_turns(mode: str, args: argparse.Namespace) -> dict[str, dict]:
    """Every backend's row for routing `mode`, each in its own process, in turns (`Turns`): the first steps one
    after another, then round r of every backend before round r + 1 of any."""
    commands = {backend: [sys.executable, __file__, "--child", mode, backend, "--qubits", str(args.qubits),
                          "--batch", str(args.batch), "--steps", str(args.steps)] for backend in BACKENDS}
    with Turns(commands) as turns:
        rows = turns.start("start")
        rounds = turns.rounds("round", args.rounds)
        for backend, (answer,) in turns.rounds("end", 1).items():
            rows[backend].update(answer, **{key: [a[key] for a in rounds[backend]] for key in ("train", "infer")})
    if turns.failed:
        raise RuntimeError(f"{mode}: {turns.failed}")
    return rows


def to_best(rows: dict[str, dict], backend: str, key: str) -> str:
    """`backend`'s samples/s over the best backend's (by median), the median of the rounds' ratios."""
    best = max(rows.values(), key=lambda row: statistics.median(row[key]))
    return f"{statistics.median(a / b for a, b in zip(rows[backend][key], best[key])):.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="training steps (batches) per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "user_models.md")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode, args.backend = args.child
        measured = Measured(args)
        serve({"start": measured.start, "round": measured.round, "end": measured.end})
        return
    lines = ["# User-style models: QCNN experts on quantum data", "",
             f"`python benchmarks/user_models.py`: {args.qubits} qubits, three heterogeneous experts (QCNN, brickwork, "
             f"Heisenberg), built-in router, batch {args.batch}, {args.rounds} rounds of `fit` over {args.steps} "
             "batches and `predict` over them; each backend in its own process, in turns with the others of its "
             "routing (round r of every backend before round r + 1 of any); median samples/s (± half the range, % "
             "of median); ratios to the best backend are the median of the rounds' ratios.",
             "", "| routing | backend | ran on | first step s | train samples/s | inference samples/s | "
             "train vs best | inference vs best | first step vs qsim | peak MB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in MODES:
        rows = measure_in_turns(mode, args)
        for backend, r in rows.items():
            print(mode, backend, r, flush=True)
            lines.append(f"| {mode} | {backend} | {r['simulator']} | {r['first_step']:.1f} | {spread(r['train'])} | "
                         f"{spread(r['infer'])} | {to_best(rows, backend, 'train')} | {to_best(rows, backend, 'infer')} "
                         f"| {r['first_step'] / rows['noiseless']['first_step']:.1f}x | {r['peak_mb']:.0f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
