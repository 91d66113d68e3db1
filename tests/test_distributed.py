"""tf.distribute: 2 CPU replicas and 2 localhost workers train like one process."""
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qmoe_tfq.distributed import free_ports, is_chief, worker_tf_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

MIRRORED = textwrap.dedent("""
    import os
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                                [tf.config.LogicalDeviceConfiguration()] * 2)
    import cirq, numpy as np, tf_keras as keras
    import qmoe_tfq as qmoe

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 2)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")

    def make(z_loss):
        keras.utils.set_random_seed(1)
        model = qmoe.build_qmoe_classifier(cirq.GridQubit.rect(1, 2), 2, n_features=2, n_experts=2,
                                           expert_layers=1, router_layers=1, top_k=1,
                                           load_balance_weight=0.0, z_loss_weight=z_loss, metrics="per_expert")
        model.compile(keras.optimizers.SGD(0.2), "sparse_categorical_crossentropy")
        return model

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = make(1.0)
    with strategy.scope():
        mirrored = make(1.0)
    mirrored.set_weights(single.get_weights())
    # z-loss is a mean over samples, so counted once it gives the same total loss on 2 replicas.
    a = single.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    b = mirrored.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    print("loss", a["loss"], b["loss"], "z", a["qmoe_z_loss"], b["qmoe_z_loss"])
    print("fraction", a["qmoe_expert_0_fraction"], b["qmoe_expert_0_fraction"])
    single.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    mirrored.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    print("weights", max(np.abs(p - q).max() for p, q in zip(single.get_weights(), mirrored.get_weights())))
    print("replicas", strategy.num_replicas_in_sync)
""")


def numbers(label: str, text: str) -> list[float]:
    line = next(line for line in text.splitlines() if line.startswith(label + " "))
    return [float(v) for v in re.findall(r"[-+]?\d+\.?\d*(?:e[-+]?\d+)?", line.split(" ", 1)[1])]


def test_mirrored_strategy_matches_single_process():
    result = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert numbers("replicas", out) == [2.0]
    loss_single, loss_mirrored, z_single, z_mirrored = numbers("loss", out)
    assert z_single > 0.1  # the aux loss is a visible part of the total
    assert loss_mirrored == pytest.approx(loss_single, abs=1e-5)
    assert z_mirrored == pytest.approx(z_single, abs=1e-5)
    fraction_single, fraction_mirrored = numbers("fraction", out)
    assert fraction_mirrored == pytest.approx(fraction_single, abs=1e-6)
    assert numbers("weights", out)[0] < 1e-5


def test_two_localhost_workers_agree_with_single_process():
    result = subprocess.run([sys.executable, str(EXAMPLES / "distributed_train.py"), "--quick", "--timeout", "240"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "worker 0 (chief) done, 2 replicas in sync" in result.stdout
    assert "worker 1 (worker) done, 2 replicas in sync" in result.stdout
    assert numbers("max |weight difference| between workers:", result.stdout)[0] < 1e-6
    assert numbers("max |weight difference| workers vs single process:", result.stdout)[0] < 1e-5


def test_cluster_helpers(monkeypatch):
    ports = free_ports(3)
    assert len(set(ports)) == 3
    config = worker_tf_config([f"127.0.0.1:{p}" for p in ports], 2)
    assert '"task": {"type": "worker", "index": 2}' in config
    with pytest.raises(ValueError, match="index=3 is not a worker of a 3-worker cluster"):
        worker_tf_config(["a:1", "b:2", "c:3"], 3)
    monkeypatch.setenv("TF_CONFIG", config)
    assert not is_chief()
    monkeypatch.delenv("TF_CONFIG")
    assert is_chief()
