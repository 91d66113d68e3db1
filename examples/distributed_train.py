"""Data-parallel QMoE training on TensorFlow's own distributed engine.

Starts 2 worker processes on this machine (127.0.0.1, free ports) with TF_CONFIG and
`tf.distribute.MultiWorkerMirroredStrategy`, trains a few steps with checkpoints
(`BackupAndRestore`), then checks that the workers' final weights agree with each other and with
one process trained on the same global batches.

    python examples/distributed_train.py            # 2 workers, 4 qubits, 4 experts, 3 epochs
    python examples/distributed_train.py --quick    # 2 qubits, 2 experts, 1 epoch

On a real cluster, run the same worker command on every host with its own TF_CONFIG (see README).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GLOBAL_BATCH = 16


def data(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(96, n_features)).astype(np.float32)
    return x, (x[:, 0] + 0.3 * x[:, -1] > 0.65).astype(np.int32)


def build_model(args: argparse.Namespace):
    import cirq
    import tf_keras as keras

    import qmoe_tfq as qmoe

    keras.utils.set_random_seed(args.seed)
    model = qmoe.build_qmoe_classifier(cirq.GridQubit.rect(1, args.qubits), 2, n_features=args.qubits,
                                       n_experts=args.experts, expert_layers=1, router_layers=1, top_k=1,
                                       load_balance_weight=args.load_balance)
    # Plain SGD: Adam's normalised steps would turn float round-off in near-zero gradients into
    # visible weight differences between the distributed and the single-process run.
    model.compile(optimizer=keras.optimizers.SGD(0.2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def train(args: argparse.Namespace, strategy=None) -> list[np.ndarray]:
    import tensorflow as tf
    import tf_keras as keras

    x, y = data(args.qubits)
    if strategy is None:
        model = build_model(args)
        callbacks = []
    else:
        with strategy.scope():
            model = build_model(args)
        callbacks = [keras.callbacks.BackupAndRestore(os.path.join(args.workdir, "backup"))]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    model.fit(dataset, epochs=args.epochs, verbose=2 if strategy is not None else 0, callbacks=callbacks)
    return model.get_weights()


def run_worker(args: argparse.Namespace) -> None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    # Before TensorFlow Quantum loads: importing it starts the runtime, and collectives must be
    # configured before that.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    from qmoe_tfq.distributed import is_chief
    weights = train(args, strategy)
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    np.savez(os.path.join(args.workdir, f"worker_{index}.npz"), *weights)
    print(f"worker {index} ({'chief' if is_chief() else 'worker'}) done, "
          f"{strategy.num_replicas_in_sync} replicas in sync")


def launch(args: argparse.Namespace) -> float:
    from qmoe_tfq.distributed import free_ports, worker_tf_config

    addresses = [f"127.0.0.1:{port}" for port in free_ports(args.workers)]
    workers = []
    for index in range(args.workers):
        env = {**os.environ, "TF_CONFIG": worker_tf_config(addresses, index), "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, __file__, "--worker", "--workdir", args.workdir, "--qubits", str(args.qubits),
                   "--experts", str(args.experts), "--epochs", str(args.epochs), "--seed", str(args.seed),
                   "--load-balance", str(args.load_balance)]
        workers.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    start = time.perf_counter()
    for index, worker in enumerate(workers):
        try:
            out, _ = worker.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            raise SystemExit(f"worker {index} did not finish within {args.timeout} s")
        if worker.returncode != 0:
            raise SystemExit(f"worker {index} failed:\n{out[-3000:]}")
        print(next((line for line in out.splitlines() if line.startswith("worker ")), ""))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--qubits", type=int, default=4)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load-balance", type=float, default=0.0,
                        help="load-balancing loss weight; it is computed on each replica's share of the "
                             "batch (as in Switch Transformer), so above 0 the runs differ slightly")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--workdir", help="checkpoints and results (default: a temporary directory)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.qubits, args.experts, args.epochs = 2, 2, 1
    if args.worker:
        run_worker(args)
        return
    with tempfile.TemporaryDirectory() as scratch:
        args.workdir = args.workdir or scratch
        seconds = launch(args)
        per_worker = [list(np.load(Path(args.workdir) / f"worker_{i}.npz").values()) for i in range(args.workers)]
        import qmoe_tfq  # noqa: F401
        single = train(args)
    across = max(np.abs(a - b).max() for w in per_worker[1:] for a, b in zip(per_worker[0], w))
    versus_single = max(np.abs(a - b).max() for a, b in zip(per_worker[0], single))
    print(f"{args.workers} workers trained {args.epochs} epoch(s) of {GLOBAL_BATCH}-sample global batches in "
          f"{seconds:.1f} s")
    print(f"max |weight difference| between workers: {across:.2e}")
    print(f"max |weight difference| workers vs single process: {versus_single:.2e}")
    if across > 1e-6 or versus_single > 1e-5:
        raise SystemExit("distributed training disagrees with single-process training")


if __name__ == "__main__":
    main()
