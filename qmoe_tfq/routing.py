"""The gating policy: router logits -> `Routing` (softmax with temperature, noise, top-k, capacity)
and the auxiliary terms (load balance, z-loss, routed fractions).

A small frozen `RoutingPolicy` holds the hyper-parameters; everything else is pure tensor
functions without Keras state, so tests can check each on hand-made logits. Shapes: B samples,
E experts, k experts per sample.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import tensorflow as tf


class Routing(NamedTuple):
    """One batch's routing decision.

    Attributes:
        logits: <float32>[B, E] router logits (after noise, before temperature).
        probabilities: <float32>[B, E] softmax(logits / temperature).
        expert_index: <int32>[B, k] experts each sample is dispatched to (k = E when dense).
        combine_weights: <float32>[B, k] weight of each dispatched expert's readouts; zero where
            capacity dropped the pair.
        kept: <bool>[B, k] False where the expert was over capacity.
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
    """How logits become routing: see `QMoELayer` for each argument. Checked on construction."""

    n_experts: int
    top_k: int | None = None
    temperature: float = 1.0
    router_noise: float = 0.0
    capacity_factor: float | None = None
    load_balance_weight: float = 1e-2
    z_loss_weight: float = 1e-3

    def __post_init__(self) -> None:
        validate_routing(self.n_experts, self.top_k, self.temperature, self.router_noise,
                         self.capacity_factor, self.load_balance_weight, self.z_loss_weight)


class RoutingTerms(NamedTuple):
    """Auxiliary terms of one batch's routing."""

    load_balance: tf.Tensor  # <float32>[] Switch balance loss (1 when uniform, E when collapsed)
    z_loss: tf.Tensor  # <float32>[] router z-loss
    fractions: tf.Tensor  # <float32>[E] share of routed pairs per expert


def gate(logits: tf.Tensor, policy: RoutingPolicy, training: bool | None) -> Routing:
    """Routing for `logits` <float32>[B, E]: noise (training only), softmax, top-k, capacity."""
    if training and policy.router_noise > 0:
        logits += policy.router_noise * tf.random.normal(tf.shape(logits))
    probabilities = tf.nn.softmax(logits / policy.temperature, axis=-1)  # <float32>[B, E]
    # expert_index <int32>[B, k], combine_weights <float32>[B, k]
    expert_index, combine_weights = select_experts(probabilities, policy.top_k)
    if policy.capacity_factor is None:
        kept = tf.ones_like(expert_index, dtype=tf.bool)  # <bool>[B, k]
    else:
        capacity = expert_capacity(tf.shape(logits)[0], policy.top_k or policy.n_experts, policy.n_experts,
                                   policy.capacity_factor)
        kept = capacity_mask(expert_index, policy.n_experts, capacity)
        combine_weights *= tf.cast(kept, combine_weights.dtype)
    return Routing(logits, probabilities, expert_index, combine_weights, kept)


def born_routing(probabilities: tf.Tensor) -> Routing:
    """Dense routing whose gates are given probabilities <float32>[B, E] (coherent aggregation)."""
    probabilities = tf.maximum(probabilities, 0.0)  # sampling noise can dip below zero
    probabilities /= tf.reduce_sum(probabilities, axis=-1, keepdims=True)
    expert_index, combine_weights = select_experts(probabilities, None)
    return Routing(tf.math.log(probabilities + 1e-9), probabilities, expert_index, combine_weights,
                   tf.ones_like(expert_index, dtype=tf.bool))


def routing_terms(route: Routing, policy: RoutingPolicy) -> RoutingTerms:
    """Balance loss, z-loss and routed fractions of `route`.

    Dense routing dispatches to every expert; balance is then measured on each sample's top choice.
    """
    assigned = route.expert_index if policy.top_k else tf.argmax(
        route.probabilities, axis=-1, output_type=tf.int32)[:, None]  # <int32>[B, k or 1]
    return RoutingTerms(load_balancing_loss(route.probabilities, assigned), router_z_loss(route.logits),
                        routing_fractions(assigned, policy.n_experts))


def select_experts(probabilities: tf.Tensor, top_k: int | None) -> tuple[tf.Tensor, tf.Tensor]:
    """Dispatch targets and their weights: every expert (dense) or the k most probable, renormalised.

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
    top_values, expert_index = tf.math.top_k(probabilities, k=top_k)
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


def routing_fractions(expert_index: tf.Tensor, n_experts: int) -> tf.Tensor:
    """<float32>[E] share of dispatched (sample, slot) pairs that each expert receives."""
    one_hot = tf.one_hot(expert_index, n_experts, dtype=tf.float32)
    return tf.reduce_mean(tf.reduce_sum(one_hot, axis=1), axis=0) / tf.cast(
        tf.shape(expert_index)[1], tf.float32)


def load_balancing_loss(probabilities: tf.Tensor, expert_index: tf.Tensor) -> tf.Tensor:
    """Switch Transformer's balance loss: E * sum_i fraction_routed_i * mean_probability_i.

    Equals 1 when routing is uniform and grows to E when one expert takes everything.
    """
    n_experts = probabilities.shape[-1]
    fractions = routing_fractions(expert_index, n_experts)
    return float(n_experts) * tf.reduce_sum(fractions * tf.reduce_mean(probabilities, axis=0))


def router_z_loss(logits: tf.Tensor) -> tf.Tensor:
    """ST-MoE's z-loss: mean over samples of logsumexp(logits)^2; keeps logits small."""
    return tf.reduce_mean(tf.square(tf.reduce_logsumexp(logits, axis=-1)))


def validate_routing(n_experts: int, top_k: int | None, temperature: float, router_noise: float,
                     capacity_factor: float | None, load_balance_weight: float,
                     z_loss_weight: float) -> None:
    """Checks routing hyper-parameters, naming the argument, its value and what is allowed."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or not 1 <= top_k <= n_experts):
        raise ValueError(f"top_k must be None (dense) or an integer in 1..n_experts={n_experts}, got {top_k!r}.")
    if not _is_number(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}.")
    for name, value in (("router_noise", router_noise), ("load_balance_weight", load_balance_weight),
                        ("z_loss_weight", z_loss_weight)):
        if not _is_number(value) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    if capacity_factor is not None and (not _is_number(capacity_factor) or capacity_factor <= 0):
        raise ValueError(f"capacity_factor must be None (no limit) or a number > 0, got {capacity_factor!r}.")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
