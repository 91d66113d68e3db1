"""qmoe-tfq against its peers at 4 to 16 qubits: every executor, `auto`, and TensorCircuit-NG.

The model is `qmoe-tfq bench`'s: float features angle-encoded with ry, a router PQC (logits =
3 x readouts), 8 experts of 3 layers of ry/rz + a CZ ring reading Z on every qubit, a Dense(2)
head, Adam and cross-entropy, batch 64. Each model runs in its own process (fresh XLA caches, its own
peak memory), in turns with the models of its routing (`qmoe_tfq.turns.Turns`): a first step, then
rounds of `fit` and `predict` over as many batches as make a training round last about a second, round r
of every model before round r + 1 of any, printed as the median with the rounds' spread; first with
Keras's defaults (one batch per call of the step function), then compiled again with
``steps_per_execution=16``: Keras's own cost per call, ~0.8 ms here, is then paid once per 16 batches,
by every peer alike. This process then writes benchmarks/results.md and benchmarks/peers.png with the
ratios to TensorCircuit-NG, each the median of the rounds' ratios.

Peers, all the same model and the same data:
  TFQ naive      n_experts separate tfq.layers.PQC and a router PQC, combined densely;
  qmoe <backend> QMoELayer on backend "statevector" (this package's TF kernel), "noiseless"
                 (TFQ's qsim) and "auto" (what a user gets), top_k=1 and dense;
  qmoe xla step  the statevector model compiled with jit_compile=True: the whole training and
                 inference step one XLA program (up to --xla-step-max qubits);
  TC-NG          TensorCircuit-NG 1.10 on its TensorFlow backend, the experts as one vmapped, jitted
                 circuit function (dense: every (sample, expert) pair; top-1: each sample with its
                 routed expert's weights), the fastest way to write this model there.

    make bench                                   # installs requirements-bench.txt first
    python benchmarks/peers.py [--widths 4 8] [--rounds 5] [--round-seconds 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from qmoe_tfq.benchmark import build, spread, summary, timed_rounds
from qmoe_tfq.turns import Turns, serve
from tc_readouts import expectations, pauli_terms

HERE = Path(__file__).parent
KINDS = ("top1", "dense")


def tc_model(n_qubits: int, n_experts: int, n_layers: int, top1: bool):
    """The TensorCircuit-NG model: same circuits, readouts, routing and head as `QMoELayer`'s."""
    import numpy as np
    import tensorcircuit as tc
    import tensorflow as tf
    import tf_keras as keras

    from qmoe_tfq.routers import router_readouts

    K = tc.set_backend("tensorflow")
    qubits = list(range(n_qubits))

    import cirq
    grid = cirq.GridQubit.rect(1, n_qubits)
    index = {q: i for i, q in enumerate(grid)}
    router_terms = pauli_terms(router_readouts(grid, n_experts), index)
    expert_terms = pauli_terms([cirq.Z(q) for q in grid], index)

    def readouts(x, weights, terms):
        circuit = tc.Circuit(n_qubits)
        for q in qubits:
            circuit.ry(q, theta=np.pi * x[q])
        for layer in range(n_layers):
            for q in qubits:
                circuit.ry(q, theta=weights[layer, q, 0])
                circuit.rz(q, theta=weights[layer, q, 1])
            for q in qubits:
                circuit.cz(q, (q + 1) % n_qubits)
        return expectations(circuit, terms)

    experts = K.jit(K.vmap(lambda x, w: readouts(x, w, expert_terms), vectorized_argnums=(0, 1)))
    router = K.jit(K.vmap(lambda x, w: readouts(x, w, router_terms), vectorized_argnums=0))

    class TCMoE(keras.layers.Layer):
        def build(self, input_shape):
            init = keras.initializers.RandomUniform(0, 2 * np.pi)
            self.expert_weights = self.add_weight("experts", (n_experts, n_layers, n_qubits, 2), initializer=init)
            self.router_weights = self.add_weight("router", (n_layers, n_qubits, 2), initializer=init)
            self.logit_scale = self.add_weight("logit_scale", (), initializer=keras.initializers.Constant(3.0))

        def call(self, x):
            gates = tf.nn.softmax(self.logit_scale * router(x, self.router_weights))  # [B, E]
            batch = tf.shape(x)[0]
            if top1:
                index = tf.argmax(gates, axis=1, output_type=tf.int32)  # [B]
                weight = tf.gather(gates, index, batch_dims=1)  # [B]
                return weight[:, None] * experts(x, tf.gather(self.expert_weights, index))
            rows = experts(tf.repeat(x, n_experts, axis=0), tf.tile(self.expert_weights, [batch, 1, 1, 1]))
            return tf.einsum("be,ben->bn", gates, tf.reshape(rows, [batch, n_experts, n_qubits]))

    inputs = keras.Input(shape=(n_qubits,), dtype=tf.float32)
    model = keras.Model(inputs, keras.layers.Dense(2)(TCMoE()(inputs)))
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def labels(width: int, statevector_max: int, xla_step_max: int) -> list[str]:
    """The models measured at `width` qubits."""
    backends = ["statevector", "noiseless", "auto"] if width <= statevector_max else ["noiseless", "auto"]
    backends += ["xla step"] if width <= min(xla_step_max, statevector_max) else []
    return ["TFQ naive, dense"] + [f"{name}, {kind}" for kind in KINDS
                                   for name in [f"qmoe {b}" for b in backends] + ["TC-NG"]]


def batches_per_round(seconds_per_batch: float, round_seconds: float, most: int) -> int:
    """Batches that make a training round last about `round_seconds`: at least 4, at most `most`, and from 16 on
    a multiple of 16 (whole calls of 16 batches). Keras's own cost per `fit` or `predict` call (~5 ms here) is
    then a small share of every peer's round, whatever its speed; with a fixed 16 batches it was up to a third
    of a 4-qubit round and narrowed every ratio towards 1."""
    batches = min(most, max(4, round(round_seconds / seconds_per_batch)))
    return batches if batches < 16 else min(most, -(-batches // 16) * 16)


class Measured:
    """Model `args.model` at `args.width` qubits, in this process, measured when `Turns` says (`serve`): "start"
    (the first step, then a timed warm-up of 4 batches that sets the batches per round), "round" (one `fit` epoch of
    the round's batches, then `predict` on them), "per call" (compiled again with `args.steps_per_execution` and
    traced in an untimed round), "end" (which executor ran, peak memory)."""

    def __init__(self, args: argparse.Namespace) -> None:
        import qmoe_tfq as qmoe
        import cirq
        import numpy as np
        import tensorflow as tf
        import tf_keras as keras

        keras.utils.set_random_seed(0)
        self.args = args
        self.name, kind = args.model.split(", ")
        qubits = cirq.GridQubit.rect(1, args.width)
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 1, size=(args.max_batches * args.batch, args.width)).astype(np.float32)  # [samples, width]
        y = (x[:, 0] > 0.5).astype(np.int32)  # [samples]
        options = tf.data.Options()
        # tf.data's autotuning made a step last a multiple of ~5 ms on this 2-core machine (runs snapped between
        # 3.2k, 6.5k and 13k samples/s), whatever the model; off, each runs at its own pace.
        options.autotune.enabled = False
        self.every_batch = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch).cache().with_options(options)
        if self.name == "TC-NG":
            self.model = tc_model(args.width, args.experts, args.layers, kind == "top1")
        elif self.name == "TFQ naive":
            self.model = build("naive", qubits, args.experts, args.layers, True)
        elif self.name == "qmoe xla step":
            self.model = build(kind, qubits, args.experts, args.layers, True, "statevector")
            self.model.compile(self.model.optimizer, self.model.loss, jit_compile=True)
        else:
            self.model = build(kind, qubits, args.experts, args.layers, True, self.name.split()[1])
        self.moe = [layer for layer in self.model.layers if isinstance(layer, qmoe.QMoELayer)]

    def start(self) -> dict:
        start = time.perf_counter()
        self.model.fit(self.every_batch.take(1), verbose=0)
        first = time.perf_counter() - start
        self.model.predict(self.every_batch.take(1), verbose=0)
        start = time.perf_counter()
        self.model.fit(self.every_batch.take(4), verbose=0)
        self.batches = batches_per_round((time.perf_counter() - start) / 4, self.args.round_seconds,
                                         self.args.max_batches)
        self.data = self.every_batch.take(self.batches)
        return {"first_step": first, "batches": self.batches}

    def round(self) -> dict:
        (train,), (infer,) = timed_rounds(self.model, self.data, self.batches * self.args.batch, 1)
        return {"train": train, "infer": infer}

    def per_call(self) -> dict:
        self.model.compile(self.model.optimizer, self.model.loss, jit_compile=self.name == "qmoe xla step",
                           steps_per_execution=self.args.steps_per_execution)
        self.model.fit(self.data, verbose=0)
        self.model.predict(self.data, verbose=0)
        return {}

    def end(self) -> dict:
        import resource

        return {"simulator": self.moe[0].simulator if self.moe else "",
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_in_turns(width: int, labels: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """The rows of `labels` at `width` qubits, each model in its own process, in turns (`Turns`): first steps one
    after another, then `args.rounds` rounds with Keras's defaults and as many with `args.steps_per_execution`."""
    options = [f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items()
               if key in ("experts", "layers", "batch", "round_seconds", "max_batches", "steps_per_execution")]
    commands = {label: [sys.executable, __file__, "--width", str(width), "--model", label] + options
                for label in labels}
    with Turns(commands, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}) as turns:
        rows = turns.start("start")
        default = turns.rounds("round", args.rounds)
        turns.rounds("per call", 1)
        per_call = turns.rounds("round", args.rounds)
        for label, (answer,) in turns.rounds("end", 1).items():
            rows[label].update(answer)
            for key, answers in (("", default[label]), ("_per_call", per_call[label])):
                rows[label].update({measure + key: [a[measure] for a in answers] for measure in ("train", "infer")})
    for label, failure in turns.failed.items():  # e.g. killed for memory: the width keeps what else it measured
        print(f"{width:>3} qubits  {label:<24} ended with {failure}", flush=True)
    return {label: row for label, row in rows.items() if label not in turns.failed}


def flops(width: int, experts: int, layers: int, dense: bool) -> float:
    """A lower bound on real flops per forward sample: every gate pass over the state, complex mul-add = 8 flops.

    Per expert row: (1 encoding + 2 * layers rotations) per qubit on 2**n amplitudes (fused: one
    2x2 per qubit and layer block, 2 complex mul-adds per amplitude), `layers` CZ phase layers, and
    n readouts; training adds about twice the forward work (autodiff)."""
    amplitudes = 2 ** width
    per_row = (width * (layers + 1) * 2 + layers + width) * amplitudes * 8
    rows = experts + 1 if dense else 2  # the router row, then the routed experts
    return 3 * rows * per_row


def round_ratios(rows: dict, label: str, peer: str, key: str) -> list[float]:
    """Model `label`'s samples/s over `peer`'s, round by round (`key`: "train", "infer", "train_per_call"...): the
    two ran in the same turns, so each round's pair shares the machine's state at the time. Empty where either was
    not measured."""
    if key not in rows.get(label, {}) or key not in rows.get(peer, {}):
        return []
    return [mine / theirs for mine, theirs in zip(rows[label][key], rows[peer][key])]


def speedup(rows: dict, label: str, peer: str, key: str) -> float | None:
    """The median of `round_ratios`, or None where either model was not measured."""
    ratios = round_ratios(rows, label, peer, key)
    return statistics.median(ratios) if ratios else None


def ratio(rows: dict, label: str, peer: str, key: str, with_spread: bool = False) -> str:
    """`speedup` as tabled, with the round ratios' spread if `with_spread`."""
    ratios = round_ratios(rows, label, peer, key)
    if not ratios:
        return "n/a"
    return f"{statistics.median(ratios):.2f}x" + (f" (±{spread(ratios):.0%})" if with_spread else "")


def write(results: list[dict], args: argparse.Namespace) -> None:
    """results.md (tables and ratios to TC-NG) and peers.png (ratio against qubits)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_call = args.steps_per_execution
    lines = ["# qmoe-tfq against its peers", "",
             f"`python benchmarks/peers.py` (`make bench`): {args.experts} experts, {args.layers} layers of ry/rz + CZ "
             f"ring, ry angle encoding, float features, 2-core CPU, no GPU. Each model runs in its own process, in turns "
             "with the other models of its routing: first steps one at a time, then round r of every model before "
             "round r + 1 of any. After a first step (`fit` on one batch, compilation included) and a timed warm-up of 4 batches, "
             "rounds of `fit` (one epoch of the round's batches) and of `predict` on the same batches, as many "
             f"batches per round as make a training round last about {args.round_seconds:g} s (4 to "
             f"{args.max_batches}; the tables' batches column); rounds per width: "
             + ", ".join(f"{r['width']} qubits {r['rounds']}" for r in results)
             + ". Then the same rounds with the model compiled again with "
             f"`steps_per_execution={per_call}` (\"{per_call} per call\": Keras runs up to {per_call} batches in one "
             "call of its step function). Python's collector runs before each timed `fit` and `predict`, not in it "
             "(a full collection took ~0.2 s in every peer's process). Samples/s: the median of the rounds (± half "
             "their range, as % of the "
             "median); a ratio is the median of the rounds' ratios (round r against round r, run minutes apart at most; "
             "± half their range in the first table), to TensorCircuit-NG 1.10 (TF backend, vmapped and jitted) for "
             "the same routing and the same setting.", "",
             f"## `auto` against TC-NG", "",
             "| qubits | `auto` ran | top-1 train | dense train | top-1 inference | dense inference | "
             f"top-1 train, {per_call} per call | dense train, {per_call} per call | "
             f"top-1 inference, {per_call} per call | dense inference, {per_call} per call |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        rows = result["rows"]
        cells = [ratio(rows, f"qmoe auto, {kind}", f"TC-NG, {kind}", key, with_spread=True)
                 for key in ("train", "infer", "train_per_call", "infer_per_call") for kind in KINDS]
        ran = rows.get("qmoe auto, top1", {}).get("simulator", "")
        lines.append(f"| {result['width']} | {ran} | " + " | ".join(cells) + " |")
    lines.append("")
    for kind in KINDS:
        lines += [f"## {'top_k=1' if kind == 'top1' else 'dense'}", "",
                  "| qubits | batch x batches | model | ran on | first step s | train samples/s | inference samples/s | train vs TC-NG | "
                  f"inference vs TC-NG | train, {per_call} per call | inference, {per_call} per call | train vs TC-NG, "
                  f"{per_call} per call | inference vs TC-NG, {per_call} per call | peak MB |",
                  "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for result in results:
            rows = result["rows"]
            for label, row in rows.items():
                if not (label.endswith(kind) or label.startswith("TFQ naive")):
                    continue
                measured = [summary(row[key]) if key in row else "n/a" for key in ("train", "infer")]
                measured += [ratio(rows, label, f"TC-NG, {kind}", key) for key in ("train", "infer")]
                measured += [summary(row[key]) if key in row else "n/a" for key in ("train_per_call", "infer_per_call")]
                measured += [ratio(rows, label, f"TC-NG, {kind}", key) for key in ("train_per_call", "infer_per_call")]
                lines.append(f"| {result['width']} | {result['batch']} x {row['batches']} | {label} | {row['simulator']} | "
                             f"{row['first_step']:.1f} | " + " | ".join(measured) + f" | {row['peak_mb']:.0f} |")
        lines.append("")
    lines += ["## How close to the flop limit", "",
              "Lower-bound flops per training sample (state passes of fused gates, x3 for the backward pass) "
              "over measured time, against ~50 GFLOP/s for 2 AVX-512 cores in complex64 (a generous peak).", "",
              "| qubits | routing | model | GFLOP/s | of peak |", "|---:|---|---|---:|---:|"]
    for result in results:
        for kind in KINDS:
            label = f"qmoe auto, {kind}"
            if label in result["rows"]:
                gflops = flops(result["width"], args.experts, args.layers, kind == "dense")
                gflops *= statistics.median(result["rows"][label]["train"]) / 1e9
                lines.append(f"| {result['width']} | {kind} | {label} | {gflops:.2f} | {gflops / 50:.1%} |")
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print("\n" + text)

    figure, axis = plt.subplots(figsize=(6, 4))
    series = [(backend, "train", "") for backend in ("auto", "statevector", "noiseless", "xla step")]
    series.append(("auto", "train_per_call", f", {per_call} per call"))
    for kind, style in (("top1", "-"), ("dense", "--")):
        for backend, key, setting in series:
            points = [(r["width"], speedup(r["rows"], f"qmoe {backend}, {kind}", f"TC-NG, {kind}", key))
                      for r in results]
            points = [(width, value) for width, value in points if value is not None]
            if points:
                axis.plot(*zip(*points), style, marker="o" if not setting else "s",
                          label=f"{backend}, {'top-1' if kind == 'top1' else 'dense'}{setting}")
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.set(xlabel="qubits", ylabel="training samples/s vs TensorCircuit-NG", yscale="log",
             title=f"qmoe-tfq / TC-NG, {args.experts} experts")
    axis.set_xticks([r["width"] for r in results])
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.out / "peers.png", dpi=120)
    print(f"wrote {args.out / 'results.md'} and {args.out / 'peers.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 6, 8, 10, 12, 16])
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)  # one model, in a child process
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--round-seconds", type=float, default=1.0,
                        help="about how long a training round lasts (sets each model's batches per round)")
    parser.add_argument("--max-batches", type=int, default=512, help="most batches per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-execution", type=int, default=16,
                        help="batches per call in the second set of rounds (Keras's compile argument)")
    parser.add_argument("--statevector-max", type=int, default=12, help="widest run forced onto 'statevector'")
    parser.add_argument("--xla-step-max", type=int, default=8, help="widest run of the whole step under XLA")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--write-only", action="store_true", help="rewrite results.md from the stored peers-N.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.model is not None:
        measured = Measured(args)
        serve({"start": measured.start, "round": measured.round, "per call": measured.per_call, "end": measured.end})
        return
    for width in args.widths if not args.write_only else []:
        every = labels(width, args.statevector_max, args.xla_step_max)
        rows = {}
        for kind in KINDS:  # each model in turns with those its ratios compare it with: the same routing
            rows.update(measure_in_turns(width, [label for label in every if label.endswith(kind)], args))
        result = {"width": width, "batch": args.batch, "rounds": args.rounds,
                  "rows": {label: rows[label] for label in every if label in rows}}
        for label, row in result["rows"].items():
            print(f"{width:>3} qubits  {label:<24} first step {row['first_step']:5.1f} s  {row['batches']:>3} "
                  f"batches per round  train "
                  f"{summary(row['train'])} samples/s  inference {summary(row['infer'])}; {args.steps_per_execution} "
                  f"per call {summary(row['train_per_call'])}, {summary(row['infer_per_call'])}  "
                  f"{row['peak_mb']:.0f} MB", flush=True)
        (args.out / f"peers-{width}.json").write_text(json.dumps(result))
    results = [json.loads((args.out / f"peers-{w}.json").read_text()) for w in args.widths
               if (args.out / f"peers-{w}.json").exists()]
    write(results, args)


if __name__ == "__main__":
    main()
