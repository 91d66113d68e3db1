"""Which expert handles which input: routing statistics, a Keras callback, and gate heatmaps."""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import NamedTuple

import matplotlib
import numpy as np
import tensorflow as tf
import tf_keras as keras

from qmoe_tfq.mixture import MixtureLayer

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


class RoutingStatistics(NamedTuple):
    """Summary of a batch of gate weights ``[n_samples, n_experts]``.

    Attributes:
        mean_gates: <[E]> mean weight of each expert over all samples.
        class_gates: <[C, E]> mean weight of each expert over the samples of each class.
        entropy: mean over samples of the entropy (nats) of the router's probabilities when they
            are given (the layer's ``routing_entropy`` metric), else of the gate weights; 0 when
            every sample goes to one expert, log(E) when it spreads evenly.
        usage_entropy: entropy of `mean_gates`; log(E) when experts are used equally overall.
        specialisation: <[E]> for each expert, the share of its total weight that goes to its
            most frequent class (1 / C for an expert that treats all classes alike).
        top_class: <[E]> the class each expert is used most for.
    """

    mean_gates: np.ndarray
    class_gates: np.ndarray
    entropy: float
    usage_entropy: float
    specialisation: np.ndarray
    top_class: np.ndarray


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1)


def routing_statistics(gates: np.ndarray, labels: np.ndarray | None = None,
                       probabilities: np.ndarray | None = None) -> RoutingStatistics:
    """Statistics of gate weights, per class when `labels` (ints 0..C-1) are given; the entropy of the
    router's `probabilities` <[n_samples, n_experts]> when given (top-k gates are one-hot: entropy 0).

    >>> stats = routing_statistics(np.array([[1.0, 0.0], [0.0, 1.0]]), labels=np.array([0, 1]))
    >>> stats.class_gates.tolist(), stats.specialisation.tolist()
    ([[1.0, 0.0], [0.0, 1.0]], [1.0, 1.0])
    """
    gates = np.asarray(gates, dtype=np.float64)
    if gates.ndim != 2:
        raise ValueError(f"gates must be [n_samples, n_experts], got shape {gates.shape}.")
    labels = np.zeros(len(gates), dtype=int) if labels is None else np.asarray(labels).astype(int).reshape(-1)
    if len(labels) != len(gates):
        raise ValueError(f"labels has {len(labels)} entries for {len(gates)} samples.")
    classes = np.arange(labels.max() + 1)
    class_gates = np.stack([gates[labels == c].mean(axis=0) if (labels == c).any()
                            else np.zeros(gates.shape[1]) for c in classes])
    # weight_per_class <[C, E]>: total weight each expert receives from each class.
    weight_per_class = np.stack([gates[labels == c].sum(axis=0) for c in classes])
    totals = weight_per_class.sum(axis=0)
    specialisation = np.divide(weight_per_class.max(axis=0), totals, out=np.zeros_like(totals),
                               where=totals > 0)
    mean_gates = gates.mean(axis=0)
    spread = gates if probabilities is None else np.asarray(probabilities, dtype=np.float64)
    return RoutingStatistics(mean_gates, class_gates, float(_entropy(spread).mean()),
                             float(_entropy(mean_gates)), specialisation, weight_per_class.argmax(axis=0))


def plot_gate_heatmap(class_gates: np.ndarray, path: str | os.PathLike | None = None,
                      class_names: Sequence[str] | None = None, title: str = "mean gate weight per class",
                      ) -> matplotlib.figure.Figure:
    """Draws ``class_gates`` [C, E] as a heatmap (rows: classes, columns: experts); saves a PNG to `path`."""
    class_gates = np.asarray(class_gates)
    n_classes, n_experts = class_gates.shape
    figure, axis = plt.subplots(figsize=(1.2 + 0.9 * n_experts, 1.0 + 0.6 * n_classes))
    image = axis.imshow(class_gates, cmap="viridis", vmin=0.0, vmax=max(1e-9, class_gates.max()), aspect="auto")
    for (row, column), value in np.ndenumerate(class_gates):
        axis.text(column, row, f"{value:.2f}", ha="center", va="center",
                  color="white" if value < 0.6 * class_gates.max() else "black", fontsize=9)
    axis.set_xticks(range(n_experts), [f"expert {i}" for i in range(n_experts)], rotation=30)
    axis.set_yticks(range(n_classes), class_names or [f"class {c}" for c in range(n_classes)])
    axis.set_title(title)
    figure.colorbar(image, ax=axis, fraction=0.05)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure


def find_qmoe_layer(model: keras.Model) -> MixtureLayer:
    """The model's (first) `QMoELayer` or `CoherentQMoELayer`."""
    for layer in model.layers:
        if isinstance(layer, MixtureLayer):
            return layer
    raise ValueError(f"model {model.name!r} has no QMoELayer.")


class RoutingLogger(keras.callbacks.Callback):
    """Logs routing statistics on fixed data after every epoch.

    Adds ``routing_entropy``, ``routing_usage_entropy`` and ``expert_<i>_mean_gate`` to the epoch
    logs (so `History` and other callbacks see them), keeps every epoch's `RoutingStatistics` in
    ``self.history``, and with `log_dir` writes them, a gate histogram and the class heatmap to
    TensorBoard. `inputs` are the model's inputs: when layers precede the QMoE layer (a ``Dense``
    feature extractor), they run first. ``routing_entropy`` is the router probabilities' entropy, as
    the layer's metric of that name. With a QMoE ``model`` and its data::

        logger = RoutingLogger(x_val, y_val, log_dir="runs/qmoe")
        model.fit(x_train, y_train, epochs=5, callbacks=[logger])
        plot_gate_heatmap(logger.history[-1].class_gates, "gates.png")
    """

    def __init__(self, inputs, labels=None, log_dir: str | os.PathLike | None = None,
                 layer: MixtureLayer | None = None) -> None:
        super().__init__()
        self.inputs, self.labels, self.layer = inputs, labels, layer
        self.history: list[RoutingStatistics] = []
        self._feeder: keras.Model | None = None
        self._writer = None if log_dir is None else tf.summary.create_file_writer(os.fspath(log_dir))

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self._feeder = None

    def _layer_inputs(self, layer: MixtureLayer):
        """What `layer` receives when the model gets `self.inputs` (the inputs themselves if it is first)."""
        if layer not in self.model.layers or any(layer.input is tensor for tensor in self.model.inputs):
            return self.inputs
        if self._feeder is None:  # the layers in front, made once
            self._feeder = keras.Model(self.model.inputs, layer.input)
        return self._feeder.predict(self.inputs, verbose=0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        layer = self.layer or find_qmoe_layer(self.model)
        route = layer.route(self._layer_inputs(layer))
        gates = route.gate_matrix().numpy()
        stats = routing_statistics(gates, self.labels, route.probabilities.numpy())
        self.history.append(stats)
        if logs is not None:
            logs["routing_entropy"] = stats.entropy
            logs["routing_usage_entropy"] = stats.usage_entropy
            logs.update({f"expert_{i}_mean_gate": float(g) for i, g in enumerate(stats.mean_gates)})
        if self._writer is not None:
            self._write_summaries(epoch, gates, stats)

    def _write_summaries(self, epoch: int, gates: np.ndarray, stats: RoutingStatistics) -> None:
        figure = plot_gate_heatmap(stats.class_gates, title=f"epoch {epoch + 1}")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
        with self._writer.as_default(step=epoch):
            tf.summary.scalar("routing/entropy", stats.entropy)
            tf.summary.scalar("routing/usage_entropy", stats.usage_entropy)
            for index, value in enumerate(stats.mean_gates):
                tf.summary.scalar(f"routing/expert_{index}_mean_gate", value)
            tf.summary.histogram("routing/gates", gates)
            tf.summary.image("routing/class_heatmap", tf.image.decode_png(buffer.getvalue())[None])
        self._writer.flush()
