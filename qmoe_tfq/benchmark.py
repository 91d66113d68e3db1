"""Training and inference throughput of QMoE against a naive composition of tfq.layers.PQC experts.

All models are built and timed in this one process, on the same data, as the same function:

  (a) naive: n_experts separate `tfq.layers.PQC` + a router PQC, softmax-combined densely
      (one TFQ op call per expert and per step);
  (b) `QMoELayer`, dense routing (one fused op call for all (sample, expert) pairs);
  (c) `QMoELayer`, top_k=1 (only routed pairs are simulated);
  (d), (e) the same as (b), (c) with heterogeneous experts: every expert its own circuit of the same
      size (rotation order and CZ/CNOT ring alternate, own symbol names), to measure what distinct
      programs and the union of their symbols cost in the one fused call.

Two input kinds: float features (the naive model angle-encodes them with `AngleEncoder` in front
of its PQCs; `QMoELayer(encoder=...)` feeds the angles straight to the simulator), and quantum
data (serialized circuits, the same for all three). A sweep over n_experts (float input) at
top_k=1 and dense shows how time per sample scales. Writes benchmarks/throughput.md and
benchmarks/scaling.png.

    qmoe-tfq bench                 # or python benchmarks/throughput.py; 8 qubits, 3 layers, batch 64
    qmoe-tfq bench --quick         # smoke run: 3 qubits, 1 layer, 2 experts, 1 step
"""
from __future__ import annotations

import argparse
import time

import qmoe_tfq as qmoe  # noqa: F401  (sets up tf_keras before TensorFlow loads)
import cirq
import matplotlib
import numpy as np
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq.circuits import Ansatz, default_readouts
from qmoe_tfq.routers import router_readouts
from qmoe_tfq.cli import BENCH, bench_arguments

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Rotations then a CZ ring: the circuits of every recorded measurement and of the TensorCircuit-NG peer.
RECORDED = Ansatz(entangler="ring", entangle_first=False)


class NaiveMoE(keras.layers.Layer):
    """The baseline: each expert a plain `tfq.layers.PQC`, called one after the other."""

    def __init__(self, qubits, n_experts: int, n_layers: int, **kwargs) -> None:
        super().__init__(**kwargs)
        expert = RECORDED.circuit(qubits, n_layers, "theta")
        router = RECORDED.circuit(qubits, n_layers, "route")
        self.experts = [
            tfq.layers.PQC(expert, default_readouts(qubits),
                           initializer=keras.initializers.RandomUniform(0, 2 * np.pi))
            for _ in range(n_experts)]
        self.router = tfq.layers.PQC(router, router_readouts(qubits, n_experts))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        gates = tf.nn.softmax(3.0 * self.router(inputs))
        return tf.add_n([gates[:, i:i + 1] * expert(inputs) for i, expert in enumerate(self.experts)])


def heterogeneous_experts(qubits, n_experts: int, n_layers: int) -> list[cirq.Circuit]:
    """`n_experts` different circuits with the built-in expert's gate and parameter counts."""
    rotations = [("ry", "rz"), ("rz", "ry")]
    entanglers = ["ring", "cnot_ring"]
    return [Ansatz(rotations[index % 2], entanglers[index // 2 % 2], False).circuit(qubits, n_layers, f"h{index}")
            for index in range(n_experts)]


def build(kind: str, qubits, n_experts: int, n_layers: int, float_input: bool, backend: str = "auto") -> keras.Model:
    """Model `kind` ("naive", "dense", "top1", "dense_het", "top1_het") on float features or circuits.

    Built-in experts and router are pinned to `RECORDED`.
    """
    if float_input:
        inputs = keras.Input(shape=(len(qubits),), dtype=tf.float32)
    else:
        inputs = keras.Input(shape=(), dtype=tf.string)
    if kind == "naive":
        circuits = qmoe.AngleEncoder(qubits)(inputs) if float_input else inputs
        readouts = NaiveMoE(qubits, n_experts, n_layers)(circuits)
    else:
        encoder = qmoe.AngleEncoder(qubits) if float_input else None
        experts = heterogeneous_experts(qubits, n_experts, n_layers) if kind.endswith("_het") else None
        ansatz = qmoe.Ansatz(entangler=RECORDED.entangler, entangle_first=RECORDED.entangle_first, layers=n_layers)
        readouts = qmoe.QMoELayer(qubits, None if experts else n_experts, experts=experts, ansatz=ansatz,
                                  encoder=encoder, top_k=1 if kind.startswith("top1") else None,
                                  execution=backend)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(readouts))
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def throughput(model: keras.Model, x, y, steps: int) -> tuple[float, float]:
    """(training samples/s, inference samples/s), after one warm-up step of each."""
    batch = len(y)
    predict = tf.function(lambda inputs: model(inputs, training=False))
    model.train_on_batch(x, y)
    predict(x)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    train = steps * batch / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(steps):
        predict(x).numpy()
    infer = steps * batch / (time.perf_counter() - start)
    return train, infer


def run(args: argparse.Namespace) -> None:
    """Runs the benchmark and writes the table and the plot."""
    if args.quick:
        args.qubits, args.layers, args.batch, args.steps, args.sweep = 3, 1, 16, 1, [1, 2]
        args.experts = min(args.experts, 2)

    qubits = cirq.GridQubit.rect(1, args.qubits)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(args.batch, args.qubits)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int32)
    circuits = qmoe.encode(x, qubits)
    setting = (f"{args.qubits} qubits, {args.layers} layers, batch {args.batch}, "
               f"{args.experts} experts, {args.steps} timed steps, {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads")
    print(f"throughput: {setting}")

    labels = {"naive": "(a) naive PQC composition, dense", "dense": "(b) QMoELayer dense",
              "top1": "(c) QMoELayer top_k=1", "dense_het": "(d) dense, heterogeneous experts",
              "top1_het": "(e) top_k=1, heterogeneous experts"}
    tables = {}
    for float_input, inputs in ((True, x), (False, circuits)):
        rows = tables["float features" if float_input else "quantum data (circuits)"] = {}
        for kind, label in labels.items():
            model = build(kind, qubits, args.experts, args.layers, float_input)
            rows[kind] = throughput(model, inputs, y, args.steps)
            print(f"{'float' if float_input else 'circuits':<9}{label:<36} train {rows[kind][0]:8.1f} "
                  f"samples/s   inference {rows[kind][1]:8.1f} samples/s")

    sweep = {"top1": [], "dense": []}
    for n_experts in args.sweep:
        for kind in sweep:
            model = build(kind, qubits, n_experts, args.layers, float_input=True)
            train, _ = throughput(model, x, y, args.steps)
            sweep[kind].append(1000.0 / train)
            print(f"sweep n_experts={n_experts:<3} {kind:<6} {sweep[kind][-1]:7.2f} ms per training sample")

    lines = ["# QMoE throughput", "",
             f"Measured by `python benchmarks/throughput.py` ({setting}), CPU only."]
    for input_kind, rows in tables.items():
        base_train, base_infer = rows["naive"]
        lines += ["", f"Input: {input_kind}.", "",
                  "| model | train samples/s | inference samples/s | train vs (a) | inference vs (a) |",
                  "|---|---:|---:|---:|---:|"]
        for kind, label in labels.items():
            train, infer = rows[kind]
            lines.append(f"| {label} | {train:.1f} | {infer:.1f} | {train / base_train:.2f}x | "
                         f"{infer / base_infer:.2f}x |")
    lines += ["", "Heterogeneous experts against the same model with identical ones (train / inference):", ""]
    for input_kind, rows in tables.items():
        for kind in ("dense", "top1"):
            (train, infer), (het_train, het_infer) = rows[kind], rows[f"{kind}_het"]
            lines.append(f"- {input_kind}, {'dense' if kind == 'dense' else 'top_k=1'}: "
                         f"{het_train / train:.2f}x / {het_infer / infer:.2f}x")
    lines += ["", "Time per training sample (ms, float input) against the number of experts:", "",
              "| n_experts | " + " | ".join(str(n) for n in args.sweep) + " |",
              "|---|" + "---:|" * len(args.sweep)]
    for kind, times in sweep.items():
        lines.append(f"| {'top_k=1' if kind == 'top1' else 'dense'} | " + " | ".join(f"{t:.2f}" for t in times) + " |")
    growth = sweep["top1"][-1] / sweep["top1"][args.sweep.index(2)] if 2 in args.sweep else float("nan")
    lines += ["", f"top_k=1 time per sample grows {growth:.2f}x from 2 to {args.sweep[-1]} experts; "
              f"dense grows {sweep['dense'][-1] / sweep['dense'][args.sweep.index(2)]:.2f}x."
              if 2 in args.sweep else ""]
    text = "\n".join(lines) + "\n"
    print("\n" + text)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.md").write_text(text)
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for kind, times in sweep.items():
        axis.plot(args.sweep, times, marker="o", label="top_k=1" if kind == "top1" else "dense")
    axis.set(xlabel="number of experts", ylabel="ms per training sample", xscale="log",
             title=f"QMoE training cost, {args.qubits} qubits, batch {args.batch}")
    axis.set_xticks(args.sweep, [str(n) for n in args.sweep])
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out / "scaling.png", dpi=120)
    print(f"wrote {args.out / 'throughput.md'} and {args.out / 'scaling.png'}")


def main(argv: list[str] | None = None) -> None:
    run(bench_arguments(argparse.ArgumentParser(description=BENCH)).parse_args(argv))
