"""The gating policy: router logits -> `Routing` (softmax with temperature, noise, top-k or expert
choice, capacity, selection bias); what the router adds and reports about a `Routing` is in
`routing_terms`.

A small frozen `RoutingPolicy` holds the hyper-parameters; everything else is pure tensor
functions without Keras state, so tests can check each on hand-made logits (`gating.Gate` is the
Keras layer that applies them). Shapes: B samples, E experts, k experts per sample.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import tensorflow as tf

ROUTINGS = ("top_k", "expert_choice")
BALANCES = ("aux_loss", "bias")
METRICS = ("summary", "per_expert", "none")
# Zhou et al. 2022's main setting (EC-CF2): on average two experts per sample. At 1, 20-31% of the
# samples got no expert at all, which cost 0.11 test accuracy on moons (8 experts, 5 seeds).
EXPERT_CHOICE_CAPACITY = 2.0
MAX_WEIGHT = 1e3  # largest router_noise, aux-loss weight or capacity factor accepted


class Routing(NamedTuple):
    """One batch's routing decision.

    Attributes:
        logits: <float32>[B, E] router logits (after noise, before temperature).
        probabilities: <float32>[B, E] softmax(logits / temperature).
        expert_index: <int32>[B, k] experts each sample is dispatched to (k = E when dense and
            for expert choice).
        combine_weights: <float32>[B, k] weight of each dispatched expert's readouts; zero where
            the pair is not kept.
        kept: <bool>[B, k] False where the expert was over capacity (or, for expert choice, did
            not choose the sample).
    """

    logits: tf.Tensor
    probabilities: tf.Tensor
    expert_index: tf.Tensor
    combine_weights: tf.Tensor
    kept: tf.Tensor

    def gate_matrix(self) -> tf.Tensor:
        """<float32>[B, E] combine weight of every expert for every sample (zero if unselected)."""
        n_experts = tf.shape(self.probabilities)[1]
        # one_hot <float32>[B, k, E]
        one_hot = tf.one_hot(self.expert_index, n_experts, dtype=self.combine_weights.dtype)
        return tf.reduce_sum(one_hot * self.combine_weights[..., None], axis=1)


@dataclasses.dataclass(frozen=True)
class RoutingPolicy:
    """How logits become routing: the hyper-parameters of a `gating` gate. Checked on construction.

    `n_experts` is None until the gate is bound to a layer (`gating.Gate.bind`).
    """

    n_experts: int | None
    top_k: int | None = None
    temperature: float = 1.0
    router_noise: float = 0.0
    capacity_factor: float | None = None
    load_balance_weight: float = 1e-2
    z_loss_weight: float = 1e-3
    routing: str = "top_k"
    balance: str = "aux_loss"
    bias_rate: float = 0.1
    metrics: str = "summary"
    information_weight: float = 0.0

    def __post_init__(self) -> None:
        top_k = self.top_k
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be None (dense) or a positive integer, got {top_k!r}.")
        if top_k is not None and self.n_experts is not None and top_k > self.n_experts:
            raise ValueError(f"top_k={top_k} is more than n_experts={self.n_experts}; use at most n_experts.")
        # Bounds keep every product of these with logits finite in float32 (1e-50 or 1e300 gave NaN outputs).
        if not _is_number(self.temperature) or not 1e-4 <= self.temperature <= 1e4:
            raise ValueError(f"temperature must be a number in [1e-4, 1e4] (logits are divided by it in float32), "
                             f"got {self.temperature!r}.")
        for name in ("router_noise", "load_balance_weight", "z_loss_weight", "information_weight"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= MAX_WEIGHT:
                raise ValueError(f"{name} must be a number in [0, {MAX_WEIGHT:g}], got {value!r}.")
        factor = self.capacity_factor
        if factor is not None and (not _is_number(factor) or not 0 < factor <= MAX_WEIGHT):
            raise ValueError(f"capacity_factor must be None (no limit) or a number in (0, {MAX_WEIGHT:g}] (from "
                             f"n_experts / top_k on it limits nothing), got {factor!r}.")
        for name, value, allowed in (("routing", self.routing, ROUTINGS), ("balance", self.balance, BALANCES),
                                     ("metrics", self.metrics, METRICS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not allowed; use one of {allowed}.")
        if not _is_number(self.bias_rate) or not 0 <= self.bias_rate <= 10:
            raise ValueError(f"bias_rate must be a number in [0, 10] (logit units per step), got {self.bias_rate!r}.")
        if self.routing == "expert_choice" and self.balance == "bias":
            raise ValueError("routing='expert_choice' is balanced by construction (every expert takes its "
                             "capacity); it takes no balance='bias'.")

    @property
    def rows_per_sample(self) -> float:
        """Routed (sample, expert) pairs per sample: k (top-k), E (dense) or capacity_factor * k (expert choice)."""
        k = self.n_experts if self.top_k is None else self.top_k
        return (self.capacity_factor or 2.0) * (self.top_k or 1) if self.routing == "expert_choice" else k

    @property
    def drops(self) -> bool:
        """Whether a capacity can leave routed (sample, expert) pairs out (expert choice, or top-k with a capacity)."""
        return self.routing == "expert_choice" or self.capacity_factor is not None

    @property
    def balance_loss(self) -> bool:
        """Whether the Switch load-balancing loss is added (token choice with balance='aux_loss')."""
        return self.routing == "top_k" and self.balance == "aux_loss" and self.load_balance_weight > 0


def gate(logits: tf.Tensor, policy: RoutingPolicy, training: bool | None, bias: tf.Tensor | None = None) -> Routing:
    """Routing for `logits` <float32>[B, E]: noise (training only), softmax, top-k or expert choice, capacity.

    `bias` <float32>[E] (balance='bias') is added to the tempered logits to *select* experts only
    (it rescales each expert's probability by exp(bias) before the top-k); the combine weights
    stay the probabilities of the selected experts.
    """
    if training and policy.router_noise > 0:
        logits += policy.router_noise * tf.random.normal(tf.shape(logits))
    probabilities = tf.nn.softmax(logits / policy.temperature, axis=-1)  # <float32>[B, E]
    if policy.routing == "expert_choice":
        return expert_choice(logits, probabilities, policy)
    # expert_index <int32>[B, k], combine_weights <float32>[B, k]
    expert_index, combine_weights = select_experts(probabilities, policy.top_k,
                                                   None if bias is None else logits / policy.temperature + bias)
    if policy.capacity_factor is None:
        kept = tf.ones_like(expert_index, dtype=tf.bool)  # <bool>[B, k]
    else:
        capacity = expert_capacity(tf.shape(logits)[0], policy.top_k or policy.n_experts, policy.n_experts,
                                   policy.capacity_factor)
        kept = capacity_mask(expert_index, policy.n_experts, capacity)
        combine_weights *= tf.cast(kept, combine_weights.dtype)
    return Routing(logits, probabilities, expert_index, combine_weights, kept)


def expert_choice(logits: tf.Tensor, probabilities: tf.Tensor, policy: RoutingPolicy) -> Routing:
    """Each expert takes the ``C = ceil(capacity_factor * B * k / E)`` samples it scores highest.

    Zhou et al. 2022: k (``top_k``, default 1) times ``capacity_factor`` (default
    `EXPERT_CHOICE_CAPACITY`) is the mean number of experts per sample; a sample may get 0..E
    experts; its weights are the gate probabilities of the experts that took it. The choice
    depends on the whole batch.
    """
    batch = tf.shape(probabilities)[0]
    n_experts = policy.n_experts
    capacity = tf.minimum(
        expert_capacity(batch, policy.top_k or 1, n_experts, policy.capacity_factor or EXPERT_CHOICE_CAPACITY), batch)
    _, chosen = tf.math.top_k(tf.transpose(probabilities), k=capacity)  # <int32>[E, C] samples per expert
    experts = tf.tile(tf.range(n_experts)[:, None], [1, capacity])  # <int32>[E, C]
    # kept <bool>[B, E]: expert e took sample b
    kept = tf.scatter_nd(tf.stack([chosen, experts], axis=-1), tf.ones_like(chosen), [batch, n_experts]) > 0
    expert_index = tf.tile(tf.range(n_experts)[None, :], [batch, 1])  # <int32>[B, E]
    return Routing(logits, probabilities, expert_index, probabilities * tf.cast(kept, tf.float32), kept)


def born_routing(probabilities: tf.Tensor) -> Routing:
    """Dense routing whose gates are given probabilities <float32>[B, E] (coherent aggregation)."""
    probabilities = tf.maximum(probabilities, 0.0)  # sampling noise can dip below zero
    probabilities /= tf.reduce_sum(probabilities, axis=-1, keepdims=True)
    expert_index, combine_weights = select_experts(probabilities, None)
    return Routing(tf.math.log(probabilities + 1e-9), probabilities, expert_index, combine_weights,
                   tf.ones_like(expert_index, dtype=tf.bool))


def select_experts(probabilities: tf.Tensor, top_k: int | None,
                   scores: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Dispatch targets and their weights: every expert (dense) or the k best, renormalised.

    The k best by `scores` <float32>[B, E] when given (biased selection), else by probability;
    the weights are always the selected probabilities.

    The renormalising sum is held constant in the backward pass. The forward values are the
    renormalised gates (summing to 1), and the task loss still trains the router at ``k = 1``,
    where a fully differentiated renormalisation would make every weight the constant 1.

    Returns:
        expert_index <int32>[B, k] and combine_weights <float32>[B, k].
    """
    if top_k is None:
        batch = tf.shape(probabilities)[0]
        n_experts = tf.shape(probabilities)[1]
        expert_index = tf.tile(tf.range(n_experts)[None, :], [batch, 1])
        return expert_index, probabilities
    _, expert_index = tf.math.top_k(probabilities if scores is None else scores, k=top_k)  # <int32>[B, k]
    top_values = tf.gather(probabilities, expert_index, batch_dims=1)  # <float32>[B, k]
    return expert_index, top_values / tf.stop_gradient(tf.reduce_sum(top_values, axis=1, keepdims=True))


def expert_capacity(batch_size: tf.Tensor, slots: int, n_experts: int, capacity_factor: float) -> tf.Tensor:
    """Pairs one expert takes per batch: ceil(capacity_factor * batch * slots / n_experts)."""
    fair_share = tf.cast(batch_size * slots, tf.float32) / float(n_experts)
    return tf.cast(tf.math.ceil(capacity_factor * fair_share), tf.int32)


def capacity_mask(expert_index: tf.Tensor, n_experts: int, capacity: tf.Tensor) -> tf.Tensor:
    """<bool>[B, k]: which (sample, slot) pairs fit in their expert's capacity.

    Priority follows GShard/Switch: every sample's first choice before any second choice, and
    within a slot, earlier samples first. Pairs past an expert's capacity are dropped.
    """
    # slot_major <int32>[k, B] so a cumulative count visits slot 0 of all samples first.
    slot_major = tf.transpose(expert_index)
    one_hot = tf.one_hot(tf.reshape(slot_major, [-1]), n_experts, dtype=tf.int32)
    # position <int32>[k * B]: how many earlier pairs went to the same expert.
    position = tf.reduce_sum((tf.cumsum(one_hot, axis=0) - 1) * one_hot, axis=1)
    keep = tf.reshape(position < capacity, tf.shape(slot_major))
    return tf.transpose(keep)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
