"""Data-parallel training with tf.distribute: helpers for multi-worker clusters (TF_CONFIG).

QMoE layers need nothing special under a strategy: build and compile the model inside
``strategy.scope()``; every replica runs its share of the global batch through its own TFQ ops,
gradients are summed across replicas, and Keras divides the auxiliary losses (`add_loss`) by the
number of replicas so they are counted once.

Importing TensorFlow Quantum starts TensorFlow's runtime, and both logical devices and
`MultiWorkerMirroredStrategy` must be set up before that. So a script does, in this order::

    import os
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
        strategy = tf.distribute.MultiWorkerMirroredStrategy()   # reads TF_CONFIG
    # or, for replicas on one machine's CPU:
    # tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
    #                                             [tf.config.LogicalDeviceConfiguration()] * 2)
    # strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    import qmoe_tfq
"""
from __future__ import annotations

import json
import os
import socket



def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct TCP ports that are free on `host` right now."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_tf_config(addresses: list[str], index: int) -> str:
    """The TF_CONFIG of worker `index` in a cluster of `addresses` ("host:port"), as JSON text.

    Set it as the TF_CONFIG environment variable of each worker process before it creates
    `tf.distribute.MultiWorkerMirroredStrategy()`; worker 0 is the chief.
    """
    if not 0 <= index < len(addresses):
        raise ValueError(f"index={index} is not a worker of a {len(addresses)}-worker cluster.")
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}})


def is_chief() -> bool:
    """True in a single process, or in worker 0 of a TF_CONFIG cluster (the one that saves)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    return task.get("type", "worker") in ("worker", "chief") and task.get("index", 0) == 0
