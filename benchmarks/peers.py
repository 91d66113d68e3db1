"""qmoe-tfq against its peers at 4 to 16 qubits: every executor, `auto`, and TensorCircuit-NG.

The model is `qmoe-tfq bench`'s: float features angle-encoded with ry, a router PQC (logits =
3 x readouts), 8 experts of 3 layers of ry/rz + a CZ ring reading Z on every qubit, a Dense(2)
head, Adam and cross-entropy, batch 64. Each width runs in its own process (one simulator state,
fresh XLA caches) and prints training and inference samples/s; this process then writes
benchmarks/results.md and benchmarks/peers.png with the ratios to TensorCircuit-NG.

Peers, all the same model and the same data:
  TFQ naive      n_experts separate tfq.layers.PQC and a router PQC, combined densely;
  qmoe <backend> QMoELayer on backend "statevector" (this package's TF kernel), "noiseless"
                 (TFQ's qsim) and "auto" (what a user gets), top_k=1 and dense;
  TC-NG          TensorCircuit-NG 1.10 on its TensorFlow backend, the experts as one vmapped, jitted
                 circuit function (dense: every (sample, expert) pair; top-1: each sample with its
                 routed expert's weights), the fastest way to write this model there.

    make bench                                   # installs requirements-bench.txt first
    python benchmarks/peers.py [--widths 4 8] [--steps 5]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

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

    def readout_specs(strings):
        specs = []
        for string in strings:
            spec = {"x": [], "y": [], "z": []}
            for qubit, pauli in string.items():
                spec[str(pauli).lower()].append(qubit.col)
            specs.append(spec)
        return specs

    import cirq
    router_specs = readout_specs(router_readouts(cirq.GridQubit.rect(1, n_qubits), n_experts))
    expert_specs = [{"z": [q]} for q in qubits]

    def readouts(x, weights, specs):
        circuit = tc.Circuit(n_qubits)
        for q in qubits:
            circuit.ry(q, theta=np.pi * x[q])
        for layer in range(n_layers):
            for q in qubits:
                circuit.ry(q, theta=weights[layer, q, 0])
                circuit.rz(q, theta=weights[layer, q, 1])
            for q in qubits:
                circuit.cz(q, (q + 1) % n_qubits)
        return K.stack([K.real(circuit.expectation_ps(**spec)) for spec in specs])

    experts = K.jit(K.vmap(lambda x, w: readouts(x, w, expert_specs), vectorized_argnums=(0, 1)))
    router = K.jit(K.vmap(lambda x, w: readouts(x, w, router_specs), vectorized_argnums=0))

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


def one_width(args: argparse.Namespace) -> dict:
    """Every model at `args.width` qubits, in this process."""
    import qmoe_tfq as qmoe  # noqa: F401  (tf_keras before TensorFlow)
    import cirq
    import numpy as np
    import tensorflow as tf

    from qmoe_tfq.benchmark import build, throughput

    qubits = cirq.GridQubit.rect(1, args.width)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(args.batch, args.width)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int32)
    backends = ["statevector", "noiseless", "auto"] if args.width <= args.statevector_max else ["noiseless", "auto"]
    models = {"TFQ naive, dense": lambda: build("naive", qubits, args.experts, args.layers, True)}
    for kind in KINDS:
        for backend in backends:
            models[f"qmoe {backend}, {kind}"] = (
                lambda kind=kind, backend=backend: build(kind, qubits, args.experts, args.layers, True, backend))
        models[f"TC-NG, {kind}"] = lambda kind=kind: tc_model(args.width, args.experts, args.layers, kind == "top1")
    result = {"width": args.width, "auto": {}, "rows": {}}
    for label, make in models.items():
        try:
            model = make()
            train, infer = throughput(model, x, y, args.steps)
            if label.startswith("qmoe auto"):
                result["auto"][label.split(", ")[1]] = next(
                    layer.simulator for layer in model.layers if isinstance(layer, qmoe.QMoELayer))
        except (tf.errors.ResourceExhaustedError, MemoryError) as error:
            print(f"{args.width:>3} qubits  {label:<28} out of memory: {type(error).__name__}", flush=True)
            continue
        result["rows"][label] = [train, infer]
        print(f"{args.width:>3} qubits  {label:<28} train {train:9.1f} samples/s  inference {infer:9.1f} samples/s",
              flush=True)
        # Each model as it finishes: a width killed by the OS (memory) keeps what it measured.
        (args.out / f"peers-{args.width}.json").write_text(json.dumps(result))
    return result


def flops(width: int, experts: int, layers: int, batch: int, dense: bool) -> float:
    """A lower bound on real flops per forward sample: every gate pass over the state, complex mul-add = 8 flops.

    Per expert row: (1 encoding + 2 * layers rotations) per qubit on 2**n amplitudes (fused: one
    2x2 per qubit and layer block, 2 complex mul-adds per amplitude), `layers` CZ phase layers, and
    n readouts; training adds about twice the forward work (autodiff)."""
    amplitudes = 2 ** width
    per_row = (width * (layers + 1) * 2 + layers + width) * amplitudes * 8
    rows = experts + 1 if dense else 2  # the router row, then the routed experts
    return 3 * rows * per_row


def write(results: list[dict], args: argparse.Namespace) -> None:
    """results.md (tables and ratios to TC-NG) and peers.png (ratio against qubits)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# qmoe-tfq against its peers", "",
             f"`python benchmarks/peers.py` (`make bench`): {args.experts} experts, {args.layers} layers of ry/rz + CZ "
             f"ring, ry angle encoding, batch {args.batch}, {args.steps} timed steps after a warm-up step, "
             "float features, one process per width, 2-core CPU, no GPU. Samples/s (train / inference) and "
             "ratio to TensorCircuit-NG 1.10 (TF backend, vmapped and jitted) for the same routing.", ""]
    for kind in KINDS:
        lines += [f"## {'top_k=1' if kind == 'top1' else 'dense'}", "",
                  "| qubits | auto ran | model | train samples/s | inference samples/s | train vs TC-NG | "
                  "inference vs TC-NG |", "|---:|---|---|---:|---:|---:|---:|"]
        for result in results:
            rows = result["rows"]
            peer = rows.get(f"TC-NG, {kind}")
            for label, (train, infer) in rows.items():
                if not (label.endswith(kind) or label.startswith("TFQ naive")):
                    continue
                ratio = (f"{train / peer[0]:.2f}x | {infer / peer[1]:.2f}x" if peer else "n/a | n/a")
                lines.append(f"| {result['width']} | {result['auto'].get(kind, '')} | {label} | {train:.1f} | {infer:.1f} | {ratio} |")
        lines.append("")
    lines += ["## How close to the flop limit", "",
              "Lower-bound flops per training sample (state passes of fused gates, x3 for the backward pass) "
              "over measured time, against ~50 GFLOP/s for 2 AVX-512 cores in complex64 (a generous peak).", "",
              "| qubits | routing | model | GFLOP/s | of peak |", "|---:|---|---|---:|---:|"]
    for result in results:
        for kind in KINDS:
            label = f"qmoe auto, {kind}"
            if label in result["rows"]:
                rate = flops(result["width"], args.experts, args.layers, args.batch, kind == "dense")
                rate *= result["rows"][label][0] / 1e9
                lines.append(f"| {result['width']} | {kind} | {label} | {rate:.2f} | {rate / 50:.1%} |")
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print("\n" + text)

    figure, axis = plt.subplots(figsize=(6, 4))
    for kind, style in (("top1", "-"), ("dense", "--")):
        for backend in ("auto", "statevector", "noiseless"):
            points = [(r["width"], r["rows"][f"qmoe {backend}, {kind}"][0] / r["rows"][f"TC-NG, {kind}"][0])
                      for r in results if f"qmoe {backend}, {kind}" in r["rows"] and f"TC-NG, {kind}" in r["rows"]]
            if points:
                axis.plot(*zip(*points), style, marker="o", label=f"{backend}, {'top-1' if kind == 'top1' else 'dense'}")
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.set(xlabel="qubits", ylabel="training samples/s vs TensorCircuit-NG", yscale="log",
             title=f"qmoe-tfq / TC-NG, {args.experts} experts, batch {args.batch}")
    axis.set_xticks([r["width"] for r in results])
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.out / "peers.png", dpi=120)
    print(f"wrote {args.out / 'results.md'} and {args.out / 'peers.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 6, 8, 10, 12, 16])
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)  # one width, in a child process
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--statevector-max", type=int, default=12, help="widest run forced onto 'statevector'")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--write-only", action="store_true", help="rewrite results.md from the stored peers-N.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.width is not None:
        one_width(args)
        return
    for width in args.widths if not args.write_only else []:
        command = [sys.executable, __file__, "--width", str(width)] + [
            f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items()
            if key in ("experts", "layers", "batch", "steps", "statevector_max", "out")]
        child = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if child.returncode:
            print(f"width {width}: the process ended with exit code {child.returncode}; keeping what it measured")
    results = [json.loads((args.out / f"peers-{w}.json").read_text()) for w in args.widths
               if (args.out / f"peers-{w}.json").exists()]
    write(results, args)


if __name__ == "__main__":
    main()
