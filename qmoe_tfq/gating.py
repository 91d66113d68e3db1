"""The gating policy as a Keras layer: `Gate` turns router logits into a `Routing` and owns what
the policy keeps (the selection bias), adds (the auxiliary losses) and reports (router health).

Like tf-models' router layers, the gate adds its own losses and metrics; the tensor maths is in
`routing`. Shapes: B samples, E experts.
"""
from __future__ import annotations

import warnings

import tensorflow as tf
import tf_keras as keras

from qmoe_tfq import routing
from qmoe_tfq.routing import Routing, RoutingPolicy


class ExpertUsage(keras.metrics.Metric):
    """Experts that received no (sample, expert) pair since the last reset (each epoch, in ``fit``).

    Its result is the number of unused experts. When Keras resets it (the next epoch, or
    ``evaluate``) after a stretch in which some expert got nothing, it warns once per layer, if
    `warn` (sparse routing: under dense routing every expert runs on every sample, and "unused"
    only means never the top choice).
    """

    def __init__(self, n_experts: int, layer: str, warn: bool = True, **kwargs) -> None:
        super().__init__(name=f"{layer}_unused_experts", **kwargs)
        self.layer, self.warn = layer, warn
        self.counts = self.add_weight("counts", shape=(n_experts,), initializer="zeros")
        self.warned = False

    def update_state(self, usage: tf.Tensor) -> None:
        # Building a functional model inside a distribution strategy's scope calls the layer in
        # cross-replica context, where there is no batch to count and SUM variables cannot be updated.
        if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context():
            return
        self.counts.assign_add(usage)

    def result(self) -> tf.Tensor:
        return tf.reduce_sum(tf.cast(tf.equal(self.counts, 0.0), tf.float32))

    def reset_state(self) -> None:
        counts = self.counts.numpy() if tf.executing_eagerly() else None
        if self.warn and counts is not None and counts.sum() > 0 and (counts == 0).any() and not self.warned:
            self.warned = True
            warnings.warn(f"{self.layer}: experts {[int(i) for i in (counts == 0).nonzero()[0]]} received no "
                          "sample in a whole epoch; consider balance='bias', routing='expert_choice' or a "
                          "larger load_balance_weight.", RuntimeWarning, stacklevel=2)
        self.counts.assign(tf.zeros_like(self.counts))


class Gate(keras.layers.Layer):
    """Router logits <float32>[B, E] -> `Routing`, with the policy's losses, metrics and bias.

    Metric names start with `prefix` (the QMoE layer's name): ``<prefix>_routing_entropy`` ...

    >>> gate = Gate(RoutingPolicy(3, top_k=1), prefix="moe")
    >>> gate(tf.constant([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])).expert_index.numpy().tolist()
    [[0], [2]]
    """

    def __init__(self, policy: RoutingPolicy, prefix: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.policy, self.prefix = policy, prefix

    def build(self, input_shape: tf.TensorShape) -> None:
        if self.policy.balance == "bias":
            # Selection only: moved by `routing.bias_update` after each training step, never by gradients.
            self.expert_bias = self.add_weight("expert_bias", shape=(self.policy.n_experts,), initializer="zeros",
                                               trainable=False, aggregation=tf.VariableAggregation.MEAN)
        sparse = self.policy.top_k is not None or self.policy.routing == "expert_choice"
        if self.policy.metrics != "none":
            self.usage = ExpertUsage(self.policy.n_experts, self.prefix, warn=sparse)
        super().build(input_shape)

    def select(self, logits: tf.Tensor, training: bool | None = None) -> Routing:
        """The routing decision alone (no losses, metrics or bias step), e.g. for inspection."""
        if not self.built:
            self.build(logits.shape)
        bias = self.expert_bias if self.policy.balance == "bias" else None
        return routing.gate(logits, self.policy, training, bias)

    def _report(self, terms: routing.RoutingTerms) -> None:
        """Router health as metrics ``<prefix>_...``: the aux losses in use, entropy, confidence, drops, usage."""
        policy, prefix = self.policy, self.prefix
        if policy.balance_loss:
            self.add_metric(terms.load_balance, name=f"{prefix}_load_balance")
        if policy.z_loss_weight > 0:
            self.add_metric(terms.z_loss, name=f"{prefix}_z_loss")
        self.add_metric(terms.entropy, name=f"{prefix}_routing_entropy")
        self.add_metric(terms.confidence, name=f"{prefix}_router_confidence")
        self.add_metric(terms.dropped, name=f"{prefix}_dropped_fraction")
        self.usage.update_state(terms.usage)
        if policy.metrics == "per_expert":
            for index in range(policy.n_experts):
                self.add_metric(terms.fractions[index], name=f"{prefix}_expert_{index}_fraction")

    def call(self, logits: tf.Tensor, training: bool | None = None) -> Routing:
        return self.observe(self.select(logits, training), training)

    def observe(self, route: Routing, training: bool | None = None) -> Routing:
        """Adds the policy's losses and metrics for `route` (and moves the selection bias when training).

        `call` observes its own decision; coherent aggregation, whose gates are Born probabilities,
        observes `routing.born_routing` of them.
        """
        if not self.built:
            self.build(route.probabilities.shape)
        policy = self.policy
        terms = routing.routing_terms(route, policy)
        if policy.balance_loss:
            self.add_loss(policy.load_balance_weight * terms.load_balance)
        if policy.z_loss_weight > 0:
            self.add_loss(policy.z_loss_weight * terms.z_loss)
        if policy.metrics != "none":
            self._report(terms)
        if training and policy.balance == "bias":
            self.expert_bias.assign_add(routing.bias_update(terms.fractions, policy.bias_rate))
        return route
