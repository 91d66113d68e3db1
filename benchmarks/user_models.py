"""`auto` against every exact executor and TensorCircuit-NG on models a user writes: QCNN experts on quantum data.

The task is the TFQ QCNN tutorial's (excited cluster states on 8 qubits: is the excitation's angle
within pi/2?). The QMoE has three experts the way a user would write them, each a different
program: the tutorial's convolution + pooling QCNN (``X**s``, ``Y**s``, ``Z**s``, ``ZZ**s``,
``YY**s``, ``XX**s``, CNOT, inverse selectors), a lighter ry/rz + CZ brickwork and a
Heisenberg-style XX/YY/ZZ chain; the router is the layer's built-in one. TC-NG runs the same
circuits translated gate by gate (`tc_program`) from the same weights on the input circuits' states,
checked against the layer's outputs before it is timed. Each (model, backend) runs in its own
process, in turns with the other backends of its routing (`qmoe_tfq.turns.Turns`): the first
training step (compilation included), then rounds of `fit` (one epoch of the round's batches) and
`predict` over them, as the peers' benchmark times them (a `train_on_batch` call took 13-17 ms more
than Keras's compiled training step of this model, ~24 ms; `fit` adds ~6 ms a batch), round r of
every backend before round r + 1 of any, and the process's peak memory.

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
from qmoe_tfq.benchmark import summary, timed_rounds
from qmoe_tfq.turns import Turns, serve
from tc_readouts import expectations, pauli_terms

HERE = Path(__file__).parent
BACKENDS = ("auto", "statevector", "noiseless", "TC-NG")
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


def tc_program(circuit, symbols: list[str], qubits, readouts):
    """`circuit` (weights named `symbols`) read with `readouts`, as a TensorCircuit-NG function of (input state,
    weights), gate by gate: a power of X, Y, Z, XX, YY or ZZ is its rotation by pi times the exponent (equal up to
    a global phase, which no expectation sees), a gate without symbols its unitary."""
    import cirq
    import numpy as np
    import sympy
    import tensorcircuit as tc

    index = {q: i for i, q in enumerate(qubits)}
    position = {name: i for i, name in enumerate(symbols)}
    rotations = {cirq.XPowGate: "rx", cirq.YPowGate: "ry", cirq.ZPowGate: "rz", cirq.XXPowGate: "rxx",
                 cirq.YYPowGate: "ryy", cirq.ZZPowGate: "rzz"}
    steps = []  # (gate name, qubit indices, weight position or None, angle or its factor, unitary or None)
    for op in circuit.all_operations():
        where = [index[q] for q in op.qubits]
        if cirq.is_parameterized(op):
            exponent = op.gate.exponent
            (symbol,) = exponent.free_symbols
            factor = float(exponent.coeff(symbol))
            name = next((n for kind, n in rotations.items() if isinstance(op.gate, kind)), None)
            if name is None or exponent.subs(symbol, 0) != 0 or sympy.diff(exponent, symbol, 2) != 0:
                raise ValueError(f"no TC-NG rotation for {op!r}")
            steps.append((name, where, position[str(symbol)], np.pi * factor))
        else:
            steps.append(("unitary", where, None, cirq.unitary(op).astype(np.complex64)))
    terms = pauli_terms(readouts, index)

    def run(state, weights):
        c = tc.Circuit(len(qubits), inputs=state)
        for name, where, at, value in steps:
            if at is None:
                c.any(*where, unitary=value)
            else:
                getattr(c, name)(*where, theta=value * weights[at])
        return expectations(c, terms)

    return run


def tc_model(moe, head, top1: bool):
    """TensorCircuit-NG's version of `moe` (built) and its Dense `head`: the router's and every expert's circuit as
    `tc_program`s, each vmapped over the batch's input states and jitted, starting from `moe`'s and `head`'s weights.
    Top-1 runs every expert on every sample and keeps the routed one's readouts (the experts' programs differ, and
    routed groups of varying size would make jit compile again for each size). Without the gate's load-balancing
    loss (a few ops on [B, E])."""
    import tensorcircuit as tc
    import tensorflow as tf
    import tf_keras as keras

    K = tc.set_backend("tensorflow")
    qubits = list(moe.qubits)

    def jitted(part):
        run = tc_program(part.model_circuit, [s.decode() for s in part.symbol_names.numpy()], qubits, part.readouts)
        return K.jit(K.vmap(run, vectorized_argnums=0))

    router, experts = jitted(moe.router), [jitted(e) for e in moe.experts]

    class TCMoE(keras.layers.Layer):
        def build(self, input_shape):
            def copy(name, variable):
                return self.add_weight(name, variable.shape, initializer=keras.initializers.Constant(variable.numpy()))
            self.router_weights = copy("router", moe.router.parameters)
            self.expert_weights = [copy(f"expert_{i}", e.parameters) for i, e in enumerate(moe.experts)]
            self.logit_scale = copy("logit_scale", moe.logit_scale)

        def call(self, states):
            gates = tf.nn.softmax(self.logit_scale * router(states, self.router_weights))  # [B, E]
            readouts = tf.stack([run(states, w) for run, w in zip(experts, self.expert_weights)], axis=1)  # [B, E, O]
            if not top1:
                return tf.einsum("be,beo->bo", gates, readouts)
            index = tf.argmax(gates, axis=1, output_type=tf.int32)  # [B]
            top = tf.gather(gates, index, batch_dims=1)  # [B]
            # the layer's renormalised top-1 weight: 1, and the router still learns through it
            return (top / tf.stop_gradient(top))[:, None] * tf.gather(readouts, index, batch_dims=1)

    states = keras.Input(shape=(2 ** len(qubits),), dtype=tf.complex64)
    dense = keras.layers.Dense(head.units)
    model = keras.Model(states, dense(TCMoE()(states)))
    dense.set_weights(head.get_weights())
    return model


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
        circuits = (train + test)[:args.batch * args.steps]
        x = tfq.convert_to_tensor(circuits)  # <string>[samples]
        y = np.concatenate([train_labels, test_labels])[:args.batch * args.steps]  # [samples]
        inputs = keras.Input(shape=(), dtype=tf.string)
        peer = args.backend == "TC-NG"
        self.moe = qmoe.QMoELayer(qubits, experts=[qcnn(qubits, "a"), brickwork(qubits, 3, "b"),
                                                   heisenberg(qubits, 2, "c")],
                                  top_k=1 if args.mode == "top1" else None,
                                  backend="statevector" if peer else args.backend)
        head = keras.layers.Dense(2)
        self.model = keras.Model(inputs, head(self.moe(inputs)))
        if peer:  # the same model on TC-NG, from the same weights, taking the input circuits' states
            states = np.stack([cirq.final_state_vector(c, qubit_order=qubits) for c in circuits])  # [samples, 2**n]
            x = states.astype(np.complex64)
            # checked on 3 samples: a shape the timed batches do not have, so the first step still compiles them
            reference = self.model(tfq.convert_to_tensor(circuits[:3])).numpy()  # [3, 2]
            self.model = tc_model(self.moe, head, args.mode == "top1")
            np.testing.assert_allclose(self.model(x[:3]).numpy(), reference, atol=1e-4,
                                       err_msg="TC-NG's model and the QMoELayer it copies disagree")
        self.model.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        options = tf.data.Options()
        options.autotune.enabled = False  # as the peers' benchmark: autotuning stretched steps of a few ms
        self.data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch).cache().with_options(options)
        self.samples = len(y)
        self.peer = peer

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
        return {"simulator": "" if self.peer else self.moe.simulator, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


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


def to_peer(rows: dict[str, dict], backend: str, peer: str, key: str) -> str:
    """`backend`'s samples/s over `peer`'s, the median of the rounds' ratios (round r against round r)."""
    return f"{statistics.median(a / b for a, b in zip(rows[backend][key], rows[peer][key])):.2f}x"


def to_best(rows: dict[str, dict], backend: str, key: str) -> str:
    """`to_peer` against this package's best executor (by median samples/s)."""
    best = max((b for b in rows if b != "TC-NG"), key=lambda b: statistics.median(rows[b][key]))
    return to_peer(rows, backend, best, key)


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
             f"Heisenberg), built-in router, batch {args.batch}, on this package's executors and on TensorCircuit-NG 1.10 "
             "(the same circuits gate by gate, vmapped and jitted per part; top-1 runs every expert and keeps the "
             f"routed one's readouts), {args.rounds} rounds of `fit` over {args.steps} "
             "batches and `predict` over them; each backend in its own process, in turns with the others of its "
             "routing (round r of every backend before round r + 1 of any); median samples/s (± half the range, % "
             "of median); ratios to the best of this package's executors and to TC-NG are the median of the rounds' "
             "ratios.",
             "", "| routing | backend | ran on | first step s | train samples/s | inference samples/s | "
             "train vs best | inference vs best | train vs TC-NG | inference vs TC-NG | first step vs qsim | peak MB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in MODES:
        rows = measure_in_turns(mode, args)
        for backend, r in rows.items():
            print(mode, backend, r, flush=True)
            lines.append(f"| {mode} | {backend} | {r['simulator']} | {r['first_step']:.1f} | {summary(r['train'])} | "
                         f"{summary(r['infer'])} | {to_best(rows, backend, 'train')} | {to_best(rows, backend, 'infer')} | "
                         f"{to_peer(rows, backend, 'TC-NG', 'train')} | {to_peer(rows, backend, 'TC-NG', 'infer')} "
                         f"| {r['first_step'] / rows['noiseless']['first_step']:.1f}x | {r['peak_mb']:.0f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
