"""Ready-made Keras classifiers: a QMoE model and the single-QNN baseline it is compared with."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cirq
import numpy as np
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq.circuits import (EXPERT_PREFIX, Ansatz, Observable, default_readouts, validate_positive_int,
                               validate_qubits)
from qmoe_tfq.encoding import AngleEncoder
from qmoe_tfq.execution.backends import Backend, Noise, differentiator_config
from qmoe_tfq.experts import QUANTUM, ExpertPQC
from qmoe_tfq.hybrid import ClassicalExpert, classical_router
from qmoe_tfq.coherent import CoherentQMoELayer
from qmoe_tfq.layers import QMoELayer
from qmoe_tfq.mixture import MixtureLayer
from qmoe_tfq.serialization import to_cirq_json


def _classifier_inputs(qubits: Sequence[cirq.Qid], n_features: int | None,
                       encoder_rotations: Sequence[str], encoder_scale: float
                       ) -> tuple[keras.Input, AngleEncoder | None]:
    """Float-feature input with an encoder when `n_features` is given, else a circuit input."""
    if n_features is None:
        return keras.Input(shape=(), dtype=tf.string, name="circuits"), None
    encoder = AngleEncoder(qubits, rotations=encoder_rotations, scale=encoder_scale, n_features=n_features)
    return keras.Input(shape=(n_features,), dtype=tf.float32, name="features"), encoder


def _classifier(inputs: keras.Input, readouts: tf.Tensor, n_classes: int, learning_rate: float,
                name: str) -> keras.Model:
    validate_positive_int(n_classes, "n_classes")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}.")
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="classes")(readouts)
    model = keras.Model(inputs, outputs, name=name)
    return _compiled(model, keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", ["accuracy"])


def _compiled(model: keras.Model, optimizer: keras.optimizers.Optimizer, loss: Any, metrics: Sequence[str]
              ) -> keras.Model:
    """`model` compiled, its optimizer's slots already made.

    A first training step that creates the slots is traced twice by `tf.function`; QMoE steps
    hold thousands of simulator ops, so building them here saves seconds per model.
    """
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    optimizer.build(model.trainable_variables)
    return model


def _hybrid_parts(expert_kind: str | tuple[int, int], router_kind: str, n_experts: int, n_readouts: int,
                  classical_hidden: int) -> tuple[list | None, keras.layers.Layer | None]:
    """(experts, router) arguments of `QMoELayer` for the builder's kind options."""
    if expert_kind == "quantum":
        experts = None
    elif expert_kind == "classical":
        experts = [ClassicalExpert(n_readouts, classical_hidden, name=f"classical_expert_{i}")
                   for i in range(n_experts)]
    elif (isinstance(expert_kind, tuple) and len(expert_kind) == 2
          and all(isinstance(n, int) and n >= 0 for n in expert_kind) and sum(expert_kind) > 0):
        n_quantum, n_classical = expert_kind
        experts = [QUANTUM] * n_quantum + [
            ClassicalExpert(n_readouts, classical_hidden, name=f"classical_expert_{i}")
            for i in range(n_quantum, n_quantum + n_classical)]
    else:
        raise ValueError(f"expert_kind={expert_kind!r} is not allowed; use 'quantum', 'classical' or a "
                         "(n_quantum, n_classical) pair of counts.")
    if router_kind not in ("quantum", "classical"):
        raise ValueError(f"router_kind={router_kind!r} is not allowed; use 'quantum' or 'classical'.")
    n_total = n_experts if experts is None else len(experts)
    return experts, (classical_router(n_total) if router_kind == "classical" else None)


AGGREGATIONS = ("classical", "coherent")


def build_qmoe_classifier(qubits: Sequence[cirq.Qid], n_classes: int, *, n_features: int | None = None,
                          n_experts: int = 4, expert_layers: int = 2, router_layers: int = 2,
                          top_k: int | None = None, observables: Sequence[Observable] | None = None,
                          learning_rate: float = 0.05,
                          encoder_rotations: Sequence[str] = ("ry",), encoder_scale: float = np.pi,
                          expert_kind: str | tuple[int, int] = "quantum", router_kind: str = "quantum",
                          classical_hidden: int = 8, aggregation: str = "classical",
                          **layer_kwargs) -> keras.Model:
    """A compiled QMoE classifier: (encoder) -> `QMoELayer` -> softmax `Dense(n_classes)`.

    With `n_features` the model takes float features ``[batch, n_features]`` and angle-encodes them
    in-graph; without, it takes serialized circuits ``<string>[batch]`` (quantum data).
    `expert_kind` is ``"quantum"`` (PQC experts, the paper), ``"classical"`` (`ClassicalExpert`
    MLPs) or a ``(n_quantum, n_classical)`` pair; `router_kind` is ``"quantum"`` (the PQC router)
    or ``"classical"`` (a dense layer). Classical parts need `n_features`. `observables` are the
    experts' readouts (Z on each qubit by default). `aggregation="coherent"` makes the layer a
    `CoherentQMoELayer` (QMoE+; needs `n_features`, no `top_k`). Extra keyword arguments go to the layer.

    >>> model = build_qmoe_classifier(cirq.GridQubit.rect(1, 4), n_classes=2, n_features=4, top_k=1)
    >>> model.predict(np.random.rand(8, 4), verbose=0).shape
    (8, 2)
    """
    qubits = validate_qubits(qubits)
    experts, router = _hybrid_parts(expert_kind, router_kind, n_experts, len(observables or qubits),
                                    classical_hidden)
    if n_features is None and (experts is not None or router is not None):
        raise ValueError("classical experts or routers read float features: give n_features.")
    inputs, encoder = _classifier_inputs(qubits, n_features, encoder_rotations, encoder_scale)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation={aggregation!r} is not allowed; use one of {AGGREGATIONS}.")
    if aggregation == "coherent":
        if top_k is not None or experts is not None or router is not None:
            raise ValueError("aggregation='coherent' mixes every built-in quantum expert in one circuit "
                             "(CoherentQMoELayer): it takes no top_k and no classical experts or router.")
        if encoder is None:
            raise ValueError("aggregation='coherent' uploads float features into the router register: give n_features.")
        moe = CoherentQMoELayer(qubits, n_experts, expert_layers, router_layers, encoder=encoder,
                                observables=observables, name="qmoe", **layer_kwargs)
        return _classifier(inputs, moe(inputs), n_classes, learning_rate, "qmoe_classifier")
    all_classical = router is not None and experts is not None and QUANTUM not in experts
    moe = QMoELayer(qubits, None if experts is not None else n_experts, expert_layers=expert_layers,
                    router_layers=router_layers, top_k=top_k, encoder=None if all_classical else encoder, experts=experts, router=router,
                    observables=observables, name="qmoe", **layer_kwargs)
    return _classifier(inputs, moe(inputs), n_classes, learning_rate, "qmoe_classifier")


def matching_qnn_layers(n_experts: int = 4, expert_layers: int = 2, router_layers: int = 2) -> int:
    """Ansatz depth at which a single QNN has as many circuit parameters as a QMoE layer."""
    return n_experts * expert_layers + router_layers


def build_qnn_classifier(qubits: Sequence[cirq.Qid], n_classes: int, *, n_features: int | None = None,
                         n_layers: int = matching_qnn_layers(), learning_rate: float = 0.05,
                         encoder_rotations: Sequence[str] = ("ry",), encoder_scale: float = np.pi,
                         rotations: Sequence[str] = Ansatz.rotations, entangler: str = Ansatz.entangler,
                         entangle_first: bool = Ansatz.entangle_first, observables: Sequence[Observable] | None = None,
                         **pqc_kwargs) -> keras.Model:
    """The baseline: one PQC (`ExpertPQC`) -> softmax `Dense(n_classes)`.

    `n_layers` defaults to `matching_qnn_layers()`, the depth whose parameter count matches the
    default `build_qmoe_classifier` (4 experts x 2 layers + a 2-layer router). The ansatz options
    and `observables` (Z on each qubit by default) are those of `QMoELayer`'s built-in experts;
    inputs as for `build_qmoe_classifier`.

    >>> model = build_qnn_classifier(cirq.GridQubit.rect(1, 4), n_classes=2, n_features=4)
    >>> model.predict(np.random.rand(8, 4), verbose=0).shape
    (8, 2)
    """
    qubits = validate_qubits(qubits)
    inputs, encoder = _classifier_inputs(qubits, n_features, encoder_rotations, encoder_scale)
    circuits = inputs if encoder is None else encoder(inputs)
    pqc = ExpertPQC(Ansatz(rotations, entangler, entangle_first).circuit(qubits, n_layers, EXPERT_PREFIX),
                    default_readouts(qubits) if observables is None else observables, name="qnn", **pqc_kwargs)
    return _classifier(inputs, pqc(circuits), n_classes, learning_rate, "qnn_classifier")


def with_backend(model: keras.Model, backend: Backend, repetitions: int | None = None,
                 noise: Noise | None = None, metrics: Sequence | None = None,
                 differentiator: tfq.differentiators.Differentiator | None = None) -> keras.Model:
    """A copy of `model`, same weights, whose QMoE and PQC layers run on another backend.

    Use it to train exactly and then evaluate with shots, under noise, or on a Google processor::

        on_qvm = with_backend(model, qmoe_tfq.hardware.google_virtual_machine("weber"), repetitions=1000)
        on_qvm.evaluate(x_test, y_test)

    The copy is compiled with a fresh optimizer of the same kind, the same loss and the same metrics
    (fresh copies of metric objects), or `metrics` when given. Its circuits are differentiated by
    `differentiator`, or the new backend's default when None (the model's own was chosen for its backend).
    """
    quantum_layers = (MixtureLayer, ExpertPQC)

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if isinstance(layer, quantum_layers):
            config.update(backend=backend, repetitions=repetitions,
                          noise=None if noise is None else to_cirq_json(noise),
                          differentiator=differentiator_config(differentiator))
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    if model.optimizer is not None:
        _compiled(copy, model.optimizer.__class__.from_config(model.optimizer.get_config()), model.loss,
                  _compiled_metrics(model) if metrics is None else metrics)
    return copy


def _compiled_metrics(model: keras.Model) -> list:
    """The metrics `model` was compiled with; metric objects as fresh copies (a metric keeps per-model state).

    tf_keras keeps them as given only in ``compiled_metrics._user_metrics``: its public `get_compile_config`
    cannot bring back a plain function.
    """
    given = tf.nest.flatten(getattr(model.compiled_metrics, "_user_metrics", None) or [])
    return [m.__class__.from_config(m.get_config()) if isinstance(m, keras.metrics.Metric) else m for m in given]
