"""The router's terms for one batch's `routing.Routing`: the auxiliary losses (Switch load balance,
ST-MoE z-loss, routing information), the loss-free balancing step, and the health metrics a gate reports.

Pure tensor functions, like `routing`; `gating.Gate` adds them as losses and metrics. Shapes: B samples,
E experts, k experts per sample.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

from qmoe_tfq.routing import Routing, RoutingPolicy


class RoutingTerms(NamedTuple):
    """The router's terms for one batch: losses and health metrics."""

    load_balance: tf.Tensor  # <float32>[] Switch balance loss (1 when uniform, E when collapsed)
    z_loss: tf.Tensor  # <float32>[] router z-loss
    usage: tf.Tensor  # <float32>[E] kept (sample, expert) pairs per expert (top choice when dense)
    fractions: tf.Tensor  # <float32>[E] usage as a share of all kept pairs
    entropy: tf.Tensor  # <float32>[] mean over samples of the entropy of the gate probabilities
    confidence: tf.Tensor  # <float32>[] mean over samples of the largest gate probability
    dropped: tf.Tensor  # <float32>[] share of pairs dropped by capacity (expert choice: of unchosen samples)
    information: tf.Tensor  # <float32>[] mutual information between sample and expert, as a share of log E


def measure(route: Routing, policy: RoutingPolicy, valid: tf.Tensor | None = None) -> RoutingTerms:
    """Balance loss, z-loss, routing information and the router's health for `route`.

    Dense routing dispatches to every expert; usage and balance are then measured on each sample's
    top choice. `valid` <bool>[B] marks the rows that are samples when a batch was padded (to a shape
    XLA compiled for); the others count for nothing.
    """
    if policy.routing == "top_k" and policy.top_k is None:
        assigned = tf.argmax(route.probabilities, axis=-1, output_type=tf.int32)[:, None]  # <int32>[B, 1]
        kept = tf.ones_like(assigned, dtype=tf.bool)
    else:
        assigned, kept = route.expert_index, route.kept  # <int32>[B, k], <bool>[B, k]
    if valid is not None:
        kept = tf.logical_and(kept, valid[:, None])  # <bool>[B, k]
    usage = expert_usage(assigned, policy.n_experts, kept)  # <float32>[E]
    fractions = usage / tf.maximum(tf.reduce_sum(usage), 1.0)
    probabilities = route.probabilities
    entropy = batch_mean(_entropy(probabilities), valid)
    if policy.routing == "expert_choice":
        dropped = batch_mean(tf.cast(tf.logical_not(tf.reduce_any(route.kept, axis=1)), tf.float32), valid)
    else:
        dropped = batch_mean(1.0 - tf.reduce_mean(tf.cast(route.kept, tf.float32), axis=1), valid)
    return RoutingTerms(load_balancing_loss(probabilities, fractions, valid), router_z_loss(route.logits, valid), usage,
                        fractions, entropy, batch_mean(tf.reduce_max(probabilities, axis=-1), valid), dropped,
                        routing_information(probabilities, entropy, valid))


def batch_mean(values: tf.Tensor, valid: tf.Tensor | None = None) -> tf.Tensor:
    """The mean of `values` over the batch (axis 0), or over its `valid` <bool>[B] rows; 0 for an empty batch,
    which a replica of a distributed step can get (a plain mean would make the step's loss NaN)."""
    if valid is None:
        return tf.math.divide_no_nan(tf.reduce_sum(values, axis=0), tf.cast(tf.shape(values)[0], values.dtype))
    weights = tf.reshape(tf.cast(valid, values.dtype), [-1] + [1] * (values.shape.rank - 1))  # <float32>[B, 1...]
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights, axis=0), tf.reduce_sum(weights))


def bias_update(fractions: tf.Tensor, rate: float) -> tf.Tensor:
    """<float32>[E] DeepSeek-V3's loss-free balancing step: +rate below the mean load, -rate above.

    The bias is in logit units; DeepSeek-V3's rate of 0.001 assumes ~10^5 steps, ours (0.1 by
    default) the few hundred of a small quantum model's training.
    """
    return rate * tf.sign(tf.reduce_mean(fractions) - fractions)


def expert_usage(expert_index: tf.Tensor, n_experts: int, kept: tf.Tensor) -> tf.Tensor:
    """<float32>[E] kept (sample, slot) pairs each expert receives."""
    one_hot = tf.one_hot(expert_index, n_experts, dtype=tf.float32)  # <float32>[B, k, E]
    return tf.reduce_sum(one_hot * tf.cast(kept, tf.float32)[..., None], axis=[0, 1])


def load_balancing_loss(probabilities: tf.Tensor, fractions: tf.Tensor, valid: tf.Tensor | None = None) -> tf.Tensor:
    """Switch Transformer's balance loss: E * sum_i fraction_routed_i * mean_probability_i.

    Equals 1 when routing is uniform and grows to E when one expert takes everything.
    """
    n_experts = probabilities.shape[-1]
    return float(n_experts) * tf.reduce_sum(fractions * batch_mean(probabilities, valid))


def _entropy(probabilities: tf.Tensor) -> tf.Tensor:
    """<float32>[...] entropy in nats of the distributions along the last axis."""
    return -tf.reduce_sum(probabilities * tf.math.log(probabilities + 1e-9), axis=-1)


def routing_information(probabilities: tf.Tensor, entropy: tf.Tensor | None = None,
                        valid: tf.Tensor | None = None) -> tf.Tensor:
    """The mutual information between a batch's samples and their experts, as a share of log E.

    I = H(mean gate) - mean H(gate): the information-maximising clustering objective (Krause et al.
    2010; Mod-Squad's expert-task loss without task labels). It is 1 when every sample is sure of its
    expert and the experts share the batch evenly, 0 when every sample gets the same gates. `entropy`
    is the mean of H(gate) when already computed; `valid` as for `batch_mean`.

    >>> [round(float(routing_information(tf.constant(gates))), 3) for gates in ([[1.0, 0.0], [0.0, 1.0]],
    ...                                                                        [[0.9, 0.1], [0.9, 0.1]])]
    [1.0, 0.0]
    """
    if entropy is None:
        entropy = batch_mean(_entropy(probabilities), valid)
    log_experts = math.log(max(probabilities.shape[-1], 2))
    return (_entropy(batch_mean(probabilities, valid)) - entropy) / log_experts


def router_z_loss(logits: tf.Tensor, valid: tf.Tensor | None = None) -> tf.Tensor:
    """ST-MoE's z-loss: mean over samples of logsumexp(logits)^2; keeps logits small."""
    return batch_mean(tf.square(tf.reduce_logsumexp(logits, axis=-1)), valid)
