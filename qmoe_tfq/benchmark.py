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
data (serialized circuits, the same for all three). Sweeps over the number of experts and over the
batch size (float input, top_k=1 and dense) show how the time per sample scales. Every model is timed
in rounds of `fit` and `predict` (the median and spread of the rounds). Writes
benchmarks/throughput.md and benchmarks/scaling.png.

    qmoe-tfq bench                 # or python benchmarks/throughput.py; 8 qubits, 3 layers, batch 64
    qmoe-tfq bench --quick         # smoke run: 3 qubits, 1 layer, 2 experts, 1 round of 1 batch
"""
from __future__ import annotations

import argparse
import gc
import statistics
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
ROUTING = {"top1": "top_k=1", "dense": "dense"}  # the models' kinds as tabled


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


def spread(values: list[float]) -> float:
    """Half the range of repeated measurements as a share of their median."""
    return (max(values) - min(values)) / 2 / statistics.median(values)


def summary(values: list[float]) -> str:
    """Repeated samples/s as printed and tabled: the median (three significant figures below 100, else whole) and
    the `spread`.

    >>> summary([990.4, 1100.0, 1210.2])
    '1100 (±10%)'
    >>> summary([3.0, 3.21, 3.3])
    '3.21 (±5%)'
    """
    median = statistics.median(values)
    shown = f"{median:.0f}" if median >= 100 else f"{median:.3g}"  # 16 qubits runs at a few samples/s
    return f"{shown} (±{spread(values):.0%})"


def repeated(inputs: np.ndarray | tf.Tensor, y: np.ndarray, batches: int) -> tf.data.Dataset:
    """`batches` copies of the batch (`inputs`, `y`), as `fit` and `predict` read it."""
    options = tf.data.Options()
    # tf.data's autotuning made steps of a few milliseconds last a multiple of ~5 ms on a 2-core machine
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensors((inputs, y)).repeat(batches).cache().with_options(options)


def timed_rounds(model: keras.Model, data: tf.data.Dataset, samples: int,
                 rounds: int) -> tuple[list[float], list[float]]:
    """Training and inference samples/s of each of `rounds` rounds: one `fit` epoch over `data` (`samples` samples),
    then one `predict` over it. `fit` and `predict` rather than `train_on_batch`, which spends ~6 ms per call in
    Keras itself, more than a step of most models measured here.

    Python's collector runs before each, not in it: a full collection of the ~0.5M objects TF, Cirq and sympy
    leave after import took ~220 ms here (~280 ms in TC-NG's process), and one landing in a round of ~0.2 s
    halved that round's rate (inference spreads of ±27-29% at 4 qubits)."""
    train, infer = [], []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        model.fit(data, verbose=0)
        train.append(samples / (time.perf_counter() - start))
        gc.collect()
        start = time.perf_counter()
        model.predict(data, verbose=0)
        infer.append(samples / (time.perf_counter() - start))
    return train, infer


def throughput(model: keras.Model, inputs: np.ndarray | tf.Tensor, y: np.ndarray, batches: int,
               rounds: int) -> tuple[list[float], list[float]]:
    """`timed_rounds` over `batches` copies of one batch, after an untimed batch of each (the compilations)."""
    data = repeated(inputs, y, batches)
    model.fit(data.take(1), verbose=0)
    model.predict(data.take(1), verbose=0)
    return timed_rounds(model, data, batches * len(y), rounds)


def cell(values: list[float]) -> str:
    """The rounds' median and spread, as tabled."""
    return f"{statistics.median(values):.1f} (±{spread(values):.0%})"


def per_sample(values: list[float]) -> float:
    """Median samples/s as milliseconds per sample."""
    return 1000.0 / statistics.median(values)


def run(args: argparse.Namespace) -> None:
    """Runs the benchmark and writes the table and the plot."""
    if args.quick:
        args.qubits, args.layers, args.batch, args.steps, args.rounds = 3, 1, 16, 1, 1
        args.sweep, args.batch_sweep = [1, 2], [8, 16]
        args.experts = min(args.experts, 2)

    qubits = cirq.GridQubit.rect(1, args.qubits)
    rng = np.random.default_rng(0)

    def batch_of(size: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(0, 1, size=(size, args.qubits)).astype(np.float32)  # <float32>[size, qubits]
        return x, (x[:, 0] > 0.5).astype(np.int32)  # <int32>[size]

    x, y = batch_of(args.batch)
    circuits = qmoe.encode(x, qubits)
    setting = (f"{args.qubits} qubits, {args.layers} layers, batch {args.batch}, {args.experts} experts; "
               f"{args.rounds} rounds of `fit` and `predict` over {args.steps} batches, after an untimed batch; "
               f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads")
    print(f"throughput: {setting}")

    labels = {"naive": "(a) naive PQC composition, dense", "dense": "(b) QMoELayer dense",
              "top1": "(c) QMoELayer top_k=1", "dense_het": "(d) dense, heterogeneous experts",
              "top1_het": "(e) top_k=1, heterogeneous experts"}

    def measure(kind: str, n_experts: int, float_input: bool, inputs: np.ndarray | tf.Tensor, targets: np.ndarray,
                batches: int) -> tuple[list[float], list[float]]:
        result = throughput(build(kind, qubits, n_experts, args.layers, float_input), inputs, targets, batches,
                            args.rounds)
        print(f"{'float' if float_input else 'circuits':<9}{kind:<10}{n_experts:>3} experts, batch {len(targets):<5} "
              f"train {cell(result[0])} samples/s   inference {cell(result[1])} samples/s")
        return result

    features = {}  # (kind, n_experts, batch size) -> training and inference samples/s of the rounds, float input

    def on_features(kind: str, n_experts: int, size: int) -> tuple[list[float], list[float]]:
        """Measured once: the sweeps' points at --experts and --batch are the table's models."""
        if (kind, n_experts, size) not in features:
            batches = max(1, args.steps * args.batch // size)  # the same samples per round at every batch size
            features[kind, n_experts, size] = measure(kind, n_experts, True,
                                                      *((x, y) if size == args.batch else batch_of(size)), batches)
        return features[kind, n_experts, size]

    tables = {"float features": {kind: on_features(kind, args.experts, args.batch) for kind in labels},
              "quantum data (circuits)": {kind: measure(kind, args.experts, False, circuits, y, args.steps)
                                          for kind in labels}}

    # ms per sample (training, inference) of top-1 and dense on float features, against experts and against batch
    by_experts = {kind: [on_features(kind, n, args.batch) for n in args.sweep] for kind in ROUTING}
    by_batch = {kind: [on_features(kind, args.experts, size) for size in args.batch_sweep] for kind in ROUTING}

    lines = ["# QMoE throughput", "",
             f"Measured by `python benchmarks/throughput.py` ({setting}), CPU only. Samples/s: the median of the "
             "rounds (± half their range, as % of the median); ratios are of medians."]
    for input_kind, rows in tables.items():
        base_train, base_infer = map(statistics.median, rows["naive"])
        lines += ["", f"Input: {input_kind}.", "",
                  "| model | train samples/s | inference samples/s | train vs (a) | inference vs (a) |",
                  "|---|---:|---:|---:|---:|"]
        for kind, label in labels.items():
            train, infer = rows[kind]
            lines.append(f"| {label} | {cell(train)} | {cell(infer)} | {statistics.median(train) / base_train:.2f}x | "
                         f"{statistics.median(infer) / base_infer:.2f}x |")
    lines += ["", "Heterogeneous experts against the same model with identical ones (train / inference):", ""]
    for input_kind, rows in tables.items():
        for kind in ("dense", "top1"):
            same, het = rows[kind], rows[f"{kind}_het"]
            lines.append(f"- {input_kind}, {ROUTING[kind]}: " + " / ".join(
                f"{statistics.median(h) / statistics.median(s):.2f}x" for s, h in zip(same, het)))
    for title, column, values, points in (
            ("the number of experts", "n_experts", args.sweep, by_experts),
            (f"the batch size ({args.experts} experts, {args.steps * args.batch} samples per round)", "batch",
             args.batch_sweep, by_batch)):
        lines += ["", f"Milliseconds per sample (float input) against {title}, training / inference:", "",
                  f"| {column} | " + " | ".join(str(v) for v in values) + " |", "|---|" + "---:|" * len(values)]
        for kind, measured in points.items():
            lines.append(f"| {ROUTING[kind]} | " + " | ".join(
                f"{per_sample(train):.3f} / {per_sample(infer):.3f}" for train, infer in measured) + " |")
    if 2 in args.sweep and args.sweep[-1] > 2:
        growth = {kind: per_sample(points[-1][0]) / per_sample(points[args.sweep.index(2)][0])
                  for kind, points in by_experts.items()}
        lines += ["", f"From 2 to {args.sweep[-1]} experts the training time per sample grows {growth['top1']:.2f}x "
                      f"with top_k=1 and {growth['dense']:.2f}x dense."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.md").write_text(text)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, values, points, label in ((axes[0], args.sweep, by_experts, "number of experts"),
                                        (axes[1], args.batch_sweep, by_batch, "batch size")):
        for color, (kind, measured) in enumerate(points.items()):
            axis.plot(values, [per_sample(train) for train, _ in measured], color=f"C{color}", marker="o",
                      label=f"{ROUTING[kind]}, training")
            axis.plot(values, [per_sample(infer) for _, infer in measured], "--", color=f"C{color}", marker="s",
                      label=f"{ROUTING[kind]}, inference")
        axis.set(xlabel=label, ylabel="ms per sample", xscale="log", yscale="log")
        axis.set_xticks(values, [str(v) for v in values])
        axis.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        axis.legend(fontsize=7)
    figure.suptitle(f"QMoE cost per sample, {args.qubits} qubits, {args.layers} layers")
    figure.tight_layout()
    figure.savefig(args.out / "scaling.png", dpi=120)
    print(f"wrote {args.out / 'throughput.md'} and {args.out / 'scaling.png'}")


def main(argv: list[str] | None = None) -> None:
    run(bench_arguments(argparse.ArgumentParser(description=BENCH)).parse_args(argv))
