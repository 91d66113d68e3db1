"""`CoherentQMoELayer`: QMoE+ coherent aggregation, the sibling of `QMoELayer` (as TFQ keeps
`ControlledPQC` beside `PQC`). One batch goes::

    features ─► encoder angles ─► router register's Born probabilities p [B, E] (the gates)
             ─► one circuit per sample: router, then every expert controlled on its basis state
             ─► outputs sum_e p_e <O>_e [B, n_readouts]
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cirq
import tensorflow as tf
import tf_keras as keras

from qmoe_tfq import routing
from qmoe_tfq.circuits import ROUTER_PREFIX, Ansatz, Observable, validate_positive_int
from qmoe_tfq.coherent_mixture import CoherentMixture, ancilla_register, basis_projectors
from qmoe_tfq.encoding import FeatureEncoder
from qmoe_tfq.execution import Executor
from qmoe_tfq.execution.backends import Backend, Execution
from qmoe_tfq.experts import ExpertPQC
from qmoe_tfq.gating import DenseGate
from qmoe_tfq.inputs import InputReader
from qmoe_tfq.mixture import MixtureLayer
from qmoe_tfq.settings import make_execution, pop_settings


@keras.utils.register_keras_serializable(package="qmoe_tfq")
class CoherentQMoELayer(MixtureLayer):
    """QMoE+ coherent aggregation: a router register of log2(E) extra qubits controls every expert in one circuit.

    The router re-uploads the features before each of its layers; expert ``e`` acts controlled on
    the register being in basis state ``e``; measuring the observables gives
    ``sum_e p_e(x) <O>_e(x)`` with the register's Born probabilities ``p_e`` as the gates. Dense
    by nature: every expert's gates are in every circuit, so it costs about what dense routing does.

    >>> import qmoe_tfq as qmoe
    >>> qubits = cirq.GridQubit.rect(1, 2)
    >>> moe = qmoe.CoherentQMoELayer(qubits, n_experts=2, encoder=qmoe.AngleEncoder(qubits))
    >>> moe(tf.constant([[0.1, 0.7], [0.9, 0.3]])).shape  # [batch, len(observables)]
    TensorShape([2, 2])
    >>> float(moe.gate_weights(tf.constant([[0.1, 0.7]])).numpy().sum().round(5))  # Born probabilities
    1.0

    Input shape: float features ``[batch, n_features]``. Output shape: ``[batch, len(observables)]``.
    The Switch load-balancing loss goes through `add_loss`; routing entropy, confidence and unused
    experts through metrics (the z-loss of probabilities is zero, so there is none).

    Args:
        qubits: the experts' qubits; the register goes beside them (`coherent_mixture.ancilla_register`).
        n_experts: a power of two >= 2.
        expert_layers, router_layers: depths of the built-in experts and router (``ansatz.layers`` by default).
        encoder: the `AngleEncoder`/`CircuitEncoder` of the features (required).
        observables: what the experts read; Z on each qubit by default.
        ansatz: the experts' and router's `Ansatz`.
        load_balance_weight, metrics: as for `DenseGate`.
        execution: where and how circuits run, as for `QMoELayer`.
        **kwargs: Keras layer arguments, and the execution's settings (``backend``, ``repetitions``,
            ``differentiator``, ``noise``) when `execution` is not given.
    """

    default_name = "coherent_qmoe"

    def __init__(self, qubits: Sequence[cirq.Qid], n_experts: int = 4, expert_layers: int | None = None,
                 router_layers: int | None = None, *, encoder: FeatureEncoder | None = None,
                 observables: Sequence[Observable] | None = None, ansatz: Ansatz | None = None,
                 load_balance_weight: float = 1e-2, metrics: str = "summary",
                 execution: Execution | Backend | Executor | None = None, **kwargs) -> None:
        n_experts = validate_positive_int(n_experts, "n_experts")
        if n_experts < 2 or n_experts & (n_experts - 1):
            raise ValueError(f"CoherentQMoELayer addresses experts by the basis states of a qubit register, so "
                             f"n_experts must be a power of two >= 2, got {n_experts}.")
        if encoder is None:
            raise ValueError("CoherentQMoELayer uploads float features into the router register: pass "
                             "encoder=qmoe_tfq.AngleEncoder(qubits).")
        settings = pop_settings(kwargs)
        execution = make_execution(settings, execution)
        if settings:
            raise ValueError(f"CoherentQMoELayer takes no {sorted(settings)}: its routing is dense, its router built in.")
        ansatz = ansatz or Ansatz()
        if not isinstance(ansatz, Ansatz):
            raise TypeError(f"CoherentQMoELayer re-uploads features into its router register with a qmoe_tfq.Ansatz; "
                            f"ansatz must be one, got {ansatz!r}.")
        super().__init__(qubits, observables, ansatz, encoder, execution, **kwargs)
        self.n_experts = n_experts
        self.expert_layers = validate_positive_int(ansatz.layers if expert_layers is None else expert_layers,
                                                   "expert_layers")
        self.router_layers = validate_positive_int(ansatz.layers if router_layers is None else router_layers,
                                                   "router_layers")
        self.gate = DenseGate(load_balance_weight=load_balance_weight, z_loss_weight=0.0, metrics=metrics,
                              name="gate")
        self.gate.bind(n_experts, self.name)
        self.register = ancilla_register(self.qubits, n_experts.bit_length() - 1)
        with tf.name_scope(self.name):
            experts = dataclasses.replace(self.ansatz, layers=self.expert_layers)
            self.experts = [self.builtin_expert(index, experts) for index in range(n_experts)]
            self.router = ExpertPQC(self.ansatz.circuit(self.register, self.router_layers, ROUTER_PREFIX),
                                    basis_projectors(self.register), name="router", **self.executor_args)

    def build(self, input_shape: tf.TensorShape) -> None:
        input_shape = tf.TensorShape(input_shape)
        self._inputs = InputReader.for_shape(self.name, self.qubits, self._executor, self.encoder, input_shape,
                                             f"it encodes them with {self.encoder.name}")
        if not self.encoder.built:
            self.encoder.build(input_shape)
        self._mixture = CoherentMixture(self._executor, self.qubits, self.register, self.encoder, self.router_layers,
                                        self.ansatz, ROUTER_PREFIX, self.router, self.experts, self.observables,
                                        self.noise)
        self.gate.build(tf.TensorShape([None, self.n_experts]))
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        angles = self._inputs.read(inputs).angles  # <float32>[B, F]
        self.gate.observe(routing.born_routing(self._mixture.gates(angles)), training)
        return self._mixture.outputs(angles)

    def route(self, inputs: tf.Tensor, training: bool = False) -> routing.Routing:
        """The routing decision for a batch: dense, gates = the register's Born probabilities."""
        return routing.born_routing(self._mixture.gates(self._read(inputs).angles))

    def get_config(self) -> dict:
        policy = self.gate.policy
        return {**super().get_config(), "n_experts": self.n_experts, "expert_layers": self.expert_layers,
                "router_layers": self.router_layers, "load_balance_weight": policy.load_balance_weight,
                "metrics": policy.metrics}

    @classmethod
    def from_config(cls, config: dict) -> CoherentQMoELayer:
        config, _, _ = cls.read_config(config, cls.__name__)
        return cls(**coherent_arguments(config))


# Settings of a format 1-3 QMoELayer config with aggregation="coherent" that this layer fixes or has no use for.
QMOE_ONLY = ("top_k", "temperature", "router_noise", "capacity_factor", "z_loss_weight", "routing", "balance",
             "bias_rate", "reuploading", "experts", "shared_experts", "router", "router_observables", "router_head")


def coherent_arguments(config: dict) -> dict:
    """`CoherentQMoELayer`'s arguments from a decoded config: its own, or an older `QMoELayer`'s in coherent mode."""
    arguments = {key: value for key, value in config.items() if key not in QMOE_ONLY}
    if "rotations" in arguments:  # formats 1-3
        arguments["ansatz"] = Ansatz(tuple(arguments.pop("rotations")), arguments.pop("entangler"),
                                     arguments.pop("entangle_first"))
    return arguments
