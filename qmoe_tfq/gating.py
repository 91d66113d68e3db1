"""The routing policies, each a Keras layer: `TopK`, `ExpertChoice` and `DenseGate` turn router
logits into a `Routing` and own what the policy keeps (the selection bias), adds (the auxiliary
losses) and reports (router health).

Like tf-models' router layers, a gate adds its own losses and metrics; the tensor maths is in
`routing` and `routing_terms`. A gate is made on its own (``TopK(1, balance="bias")``) and handed to a
mixture layer, which binds it to its number of experts and its name (the metrics' prefix). Shapes: B
samples, E experts.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import tensorflow as tf
import tf_keras as keras

from qmoe_tfq import routing, routing_terms
from qmoe_tfq.routing import EXPERT_CHOICE_CAPACITY, Routing, RoutingPolicy


# The routing terms a gate reports, as (metric suffix, `RoutingTerms` field), and when.
_REPORTED = (("load_balance", "load_balance", lambda policy: policy.balance_loss),
             ("z_loss", "z_loss", lambda policy: policy.z_loss_weight > 0),
             ("routing_information", "information", lambda policy: policy.information_weight > 0),
             ("routing_entropy", "entropy", lambda policy: True),
             ("router_confidence", "confidence", lambda policy: True),
             ("dropped_fraction", "dropped", lambda policy: True))


class RouterHealth(keras.metrics.Metric):
    """A gate's router health since the last reset (each epoch, in ``fit``): one metric with many results.

    Its result is a dict, which Keras logs key by key: the mean per step of each routing term `policy`
    reports (``<layer>_load_balance`` if it trains with the balance loss, ``<layer>_z_loss`` and
    ``<layer>_routing_information`` if their weight is > 0, ``<layer>_routing_entropy``,
    ``<layer>_router_confidence``, ``<layer>_dropped_fraction``, and ``<layer>_expert_<i>_fraction``
    with ``metrics="per_expert"``) and ``<layer>_unused_experts``, the number of experts that received
    no (sample, expert) pair. A step updates one vector of sums and the usage counts; a Keras ``Mean``
    per term would update two variables each.

    >>> gate = TopK(1, z_loss_weight=0.0, name="moe")
    >>> route = gate(tf.constant([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]))
    >>> sorted(gate.health.result())
    ['moe_dropped_fraction', 'moe_load_balance', 'moe_router_confidence', 'moe_routing_entropy', 'moe_unused_experts']
    >>> float(gate.health.result()["moe_unused_experts"])
    0.0

    When Keras resets it (the next epoch, validation, or ``evaluate``) after a training epoch in
    which some expert got nothing, it warns once per layer if `policy` routes sparsely (under dense
    routing every expert runs on every sample, and "unused" only means never the top choice).
    Stretches of inference (validation, ``evaluate``) count but do not warn.
    """

    def __init__(self, policy: RoutingPolicy, layer: str, **kwargs) -> None:
        super().__init__(name=f"{layer}_router_health", **kwargs)
        self.layer = layer
        self.warn = policy.top_k is not None or policy.routing == "expert_choice"
        self.reported = [(f"{layer}_{suffix}", field) for suffix, field, when in _REPORTED if when(policy)]
        self.per_expert = policy.n_experts if policy.metrics == "per_expert" else 0
        # The one Keras weight: files written before the sums and the flag existed hold `counts` alone.
        self.counts = self.add_weight("counts", shape=(policy.n_experts,), initializer="zeros")
        self._add_state(len(self.reported) + self.per_expert + 1)
        self.warned = False

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _add_state(self, sums: int) -> None:
        # Not Keras weights (see `counts`), but tracked, so that a SavedModel reaches them.
        def state(name: str, shape: tuple) -> tf.Variable:
            variable = tf.Variable(tf.zeros(shape), trainable=False, name=name,
                                   aggregation=tf.VariableAggregation.SUM,
                                   synchronization=tf.VariableSynchronization.ON_READ)
            self._track_trackable(variable, name=name)
            return variable
        self.sums = state("sums", (sums,))  # each reported term's sum over steps, then the number of steps
        self.trained = state("trained", ())  # > 0 once a training step counted

    def update_state(self, terms: routing_terms.RoutingTerms, training: bool = False) -> None:
        # Building a functional model inside a distribution strategy's scope calls the layer in
        # cross-replica context, where there is no batch to count and SUM variables cannot be updated.
        if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context():
            return
        step = [tf.stack([getattr(terms, field) for _, field in self.reported] + [tf.ones([])])]  # <float32>[R + 1]
        if self.per_expert:
            step.insert(0, terms.fractions)  # <float32>[E]
        self.sums.assign_add(tf.concat(step, axis=0))
        self.counts.assign_add(terms.usage)
        if training:
            self.trained.assign(1.0)

    def result(self) -> dict[str, tf.Tensor]:
        means = tf.unstack(tf.math.divide_no_nan(self.sums[:-1], self.sums[-1]))  # [E'] + R scalars
        names = [f"{self.layer}_expert_{index}_fraction" for index in range(self.per_expert)]
        names += [name for name, _ in self.reported]
        unused = tf.reduce_sum(tf.cast(tf.equal(self.counts, 0.0), tf.float32))  # <float32>[]
        return {**dict(zip(names, means)), f"{self.layer}_unused_experts": unused}

    def load_own_variables(self, store: Mapping[str, tf.Tensor]) -> None:
        # A `.keras` file keeps a metric's weights under its class's name: one written before this class
        # existed holds ExpertUsage's counts, which this one does not look for. An epoch's tally, it restarts.
        if len(store.keys()):
            super().load_own_variables(store)

    def reset_state(self) -> None:
        counts = self.counts.numpy() if tf.executing_eagerly() else None
        if (self.warn and counts is not None and self.trained.numpy() > 0 and counts.sum() > 0
                and (counts == 0).any() and not self.warned):
            self.warned = True
            warnings.warn(f"{self.layer}: experts {[int(i) for i in (counts == 0).nonzero()[0]]} received no "
                          "sample in the last training epoch; consider balance='bias', routing='expert_choice' "
                          "or a larger load_balance_weight.", RuntimeWarning, stacklevel=2)
        for variable in (self.counts, self.sums, self.trained):
            variable.assign(tf.zeros_like(variable))


class Gate(keras.layers.Layer):
    """Router logits <float32>[B, E] -> `Routing`, with the policy's losses, metrics and bias.

    The base of the policies below (use one of them); settings every policy shares:

    Args:
        temperature: the softmax temperature of the gates.
        router_noise: std of the Gaussian noise added to the logits in training.
        z_loss_weight: weight of ST-MoE's router z-loss (keeps logits small).
        information_weight: weight of ``1 - I``, where I is the mutual information between a batch's
            samples and their experts as a share of log E (`routing_terms.routing_information`): it rewards
            routing that is sure per sample and even over the batch, so that kinds of input that differ
            go to experts of their own. 0 (off) by default.
        metrics: ``"summary"`` (routing entropy, router confidence, dropped pairs, unused experts, and
            the aux losses whose weight is > 0), ``"per_expert"`` (also each expert's share) or
            ``"none"`` (the aux losses still train).

    Metric names start with the mixture layer's name: ``<layer>_routing_entropy`` ...
    """

    def __init__(self, policy: RoutingPolicy, **kwargs) -> None:
        super().__init__(**kwargs)
        self.policy, self.prefix = policy, None

    def bind(self, n_experts: int, prefix: str) -> None:
        """Fixes the number of experts (checking the policy against it) and the metrics' prefix."""
        if self.prefix is not None and self.prefix != prefix:
            raise ValueError(f"gate {self.name} already routes for {self.prefix}; give each layer its own gate.")
        self.policy, self.prefix = dataclasses.replace(self.policy, n_experts=n_experts), prefix

    def build(self, input_shape: tf.TensorShape) -> None:
        if self.prefix is None:
            self.bind(int(input_shape[-1]), self.name)
        if self.policy.balance == "bias":
            # Selection only: moved by `routing_terms.bias_update` after each training step, never by gradients.
            self.expert_bias = self.add_weight("expert_bias", shape=(self.policy.n_experts,), initializer="zeros",
                                               trainable=False, aggregation=tf.VariableAggregation.MEAN)
        if self.policy.metrics != "none":
            self.health = RouterHealth(self.policy, self.prefix)
        super().build(input_shape)

    def get_build_config(self) -> None:
        """None: a reloaded gate is built by its layer after `bind`, not from a stored shape (which would bind it
        to its own name)."""
        return None

    @property
    def rows_per_sample(self) -> float:
        """Routed (sample, expert) pairs per sample, for sizing the experts' executor calls."""
        return self.policy.rows_per_sample

    def get_config(self) -> dict:
        policy = self.policy
        return {**super().get_config(), "temperature": policy.temperature, "router_noise": policy.router_noise,
                "z_loss_weight": policy.z_loss_weight, "information_weight": policy.information_weight,
                "metrics": policy.metrics}

    def select(self, logits: tf.Tensor, training: bool | None = None) -> Routing:
        """The routing decision alone (no losses, metrics or bias step), e.g. for inspection."""
        if not self.built:
            self.build(logits.shape)
        bias = self.expert_bias if self.policy.balance == "bias" else None
        return routing.gate(logits, self.policy, training, bias)

    def call(self, logits: tf.Tensor, training: bool | None = None) -> Routing:
        return self.observe(self.select(logits, training), training)

    def observe(self, route: Routing, training: bool | None = None) -> Routing:
        """Adds the policy's losses and metrics for `route` (and moves the selection bias when training).

        `call` observes its own decision; coherent aggregation, whose gates are Born probabilities,
        observes `routing.born_routing` of them.
        """
        if not self.built:
            self.build(route.probabilities.shape)
        terms = routing_terms.measure(route, self.policy)
        self.report(terms, training)
        self.add_terms(terms, training)
        return route

    def report(self, terms: routing_terms.RoutingTerms, training: bool | None = None) -> None:
        """Updates the router health metric with a routing's `terms`: `observe`'s first half, for a layer that
        measured its routing where it routed (inside its inference XLA computation, which then hands out no
        terms)."""
        if self.policy.metrics != "none":
            self.health.update_state(terms, bool(training))

    def add_terms(self, terms: routing_terms.RoutingTerms, training: bool | None = None) -> None:
        """Adds the policy's losses for a routing's `terms` (and moves the selection bias when training):
        `observe`'s second half."""
        for loss in self.weighted_losses(terms):
            self.add_loss(loss)
        if training and self.policy.balance == "bias":
            self.expert_bias.assign_add(routing_terms.bias_update(terms.fractions, self.policy.bias_rate))

    def weighted_losses(self, terms: routing_terms.RoutingTerms) -> list[tf.Tensor]:
        """The policy's weighted losses <float32>[] for a routing's `terms` (the balance loss, z-loss, information
        loss it trains with): what an inference XLA computation hands out, each of its outputs costing its launch."""
        policy = self.policy
        losses = [policy.load_balance_weight * terms.load_balance] if policy.balance_loss else []
        if policy.z_loss_weight > 0:
            losses.append(policy.z_loss_weight * terms.z_loss)
        if policy.information_weight > 0:
            losses.append(policy.information_weight * (1.0 - terms.information))
        return losses


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class TopK(Gate):
    """Each sample goes to its `k` most probable experts (weights renormalised over them).

    >>> gate = TopK(1)
    >>> gate(tf.constant([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])).expert_index.numpy().tolist()
    [[0], [2]]

    Args:
        k: experts per sample.
        capacity_factor: None, or at most ``ceil(capacity_factor * B * k / E)`` pairs per expert
            (first choices first; dropped pairs contribute nothing).
        balance: ``"aux_loss"`` (the Switch loss, weighted by `load_balance_weight`) or ``"bias"``
            (DeepSeek-V3: a non-trainable per-expert bias added to the logits for selection only,
            moved by `bias_rate` towards under-used experts after every training step).
        temperature, router_noise, z_loss_weight, information_weight, metrics: see `Gate`.
    """

    def __init__(self, k: int = 1, *, capacity_factor: float | None = None, balance: str = "aux_loss",
                 load_balance_weight: float = 1e-2, bias_rate: float = 0.1, temperature: float = 1.0,
                 router_noise: float = 0.0, z_loss_weight: float = 1e-3, information_weight: float = 0.0,
                 metrics: str = "summary", **kwargs) -> None:
        if k is None:
            raise ValueError("k must be a positive integer, got None; for every expert use DenseGate().")
        super().__init__(RoutingPolicy(None, k, temperature, router_noise, capacity_factor, load_balance_weight,
                                       z_loss_weight, "top_k", balance, bias_rate, metrics, information_weight), **kwargs)

    def get_config(self) -> dict:
        policy = self.policy
        return {**super().get_config(), "k": policy.top_k, "capacity_factor": policy.capacity_factor,
                "balance": policy.balance, "load_balance_weight": policy.load_balance_weight,
                "bias_rate": policy.bias_rate}


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class ExpertChoice(Gate):
    """Each expert takes the ``ceil(capacity_factor * B * k / E)`` samples of the batch it scores highest.

    Zhou et al. 2022: on average ``capacity_factor * k`` experts per sample, balanced by
    construction; a sample may get none or several. The choice depends on the whole batch.

    Args:
        k: the mean experts per sample before the capacity factor.
        capacity_factor: see above (2 by default, the paper's main setting).
        temperature, router_noise, z_loss_weight, information_weight, metrics: see `Gate`.
    """

    def __init__(self, k: int = 1, *, capacity_factor: float = EXPERT_CHOICE_CAPACITY, temperature: float = 1.0,
                 router_noise: float = 0.0, z_loss_weight: float = 1e-3, information_weight: float = 0.0,
                 metrics: str = "summary", **kwargs) -> None:
        super().__init__(RoutingPolicy(None, k, temperature, router_noise, capacity_factor, 0.0, z_loss_weight,
                                       "expert_choice", "aux_loss", 0.0, metrics, information_weight), **kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.policy.top_k, "capacity_factor": self.policy.capacity_factor}


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class DenseGate(Gate):
    """Every sample uses every expert, weighted by the softmax of the logits (the QMoE paper's routing).

    Args:
        load_balance_weight: weight of the Switch balance loss, measured on each sample's top choice.
        temperature, router_noise, z_loss_weight, information_weight, metrics: see `Gate`.
    """

    def __init__(self, *, load_balance_weight: float = 1e-2, temperature: float = 1.0, router_noise: float = 0.0,
                 z_loss_weight: float = 1e-3, information_weight: float = 0.0, metrics: str = "summary",
                 **kwargs) -> None:
        super().__init__(RoutingPolicy(None, None, temperature, router_noise, None, load_balance_weight,
                                       z_loss_weight, "top_k", "aux_loss", 0.0, metrics, information_weight), **kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "load_balance_weight": self.policy.load_balance_weight}
