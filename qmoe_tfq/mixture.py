"""What the two mixture layers share: `QMoELayer` (gates weight the experts' readouts) and
`CoherentQMoELayer` (one circuit holds router and experts). Qubits, observables, the built-in
ansatz, the feature encoder, where circuits run, and reading the gates.
"""
from __future__ import annotations

from collections.abc import Sequence

import cirq
import tensorflow as tf
import tensorflow_quantum as tfq
import tf_keras as keras

from qmoe_tfq import routing
from qmoe_tfq.circuits import (EXPERT_PREFIX, Ansatz, Observable, default_readouts, validate_observables,
                               validate_qubits)
from qmoe_tfq.encoding import FeatureEncoder, check_encoder
from qmoe_tfq.execution import Executor, make_executor
from qmoe_tfq.execution.backends import Backend, Execution, Noise, read_differentiator
from qmoe_tfq.experts import ExpertPQC, deserialize_part
from qmoe_tfq.inputs import Batch
from qmoe_tfq.qcnn import BUILTINS, QCNN, builtin_from_config
from qmoe_tfq.serialization import FORMAT_VERSION, read_layer_config, to_cirq_json

EXECUTION_FIELDS = ("backend", "repetitions", "noise", "differentiator")


class MixtureLayer(keras.layers.Layer):
    """A mixture of experts on `qubits`, read with `observables`; subclasses define `route` and `call`.

    Unnamed layers are called `default_name` (``qmoe``, ``qmoe_1``...), which prefixes their metrics.

    Args:
        qubits: the qubits every part acts on.
        observables: what each expert reads; Z on each qubit by default.
        ansatz: the built-in experts' and router's circuit.
        encoder: an `AngleEncoder` or `CircuitEncoder` for float features, or None.
        execution: where and how circuits run.
    """

    default_name = "qmoe"

    def __init__(self, qubits: Sequence[cirq.Qid], observables: Sequence[Observable] | None, ansatz: Ansatz | QCNN,
                 encoder: FeatureEncoder | None, execution: Execution, **kwargs) -> None:
        if kwargs.get("name") is None:  # Keras would call it q_mo_e_layer, and so its metrics q_mo_e_layer_...
            uid = keras.backend.get_uid(self.default_name)
            kwargs["name"] = self.default_name if uid == 1 else f"{self.default_name}_{uid - 1}"
        super().__init__(**kwargs)
        self.qubits = validate_qubits(qubits)
        self.observables = validate_observables(
            default_readouts(self.qubits) if observables is None else observables, self.qubits, "observables")
        if not isinstance(ansatz, BUILTINS):
            raise TypeError(f"ansatz must be a qmoe_tfq.Ansatz or qmoe_tfq.QCNN, got {ansatz!r}.")
        self.ansatz, self.execution = ansatz, execution
        self._executor = make_executor(execution.backend, execution.repetitions, execution.differentiator)
        self.encoder = check_encoder(encoder, self.qubits)

    @property
    def backend(self) -> Backend | Executor:
        return self.execution.backend

    @property
    def repetitions(self) -> int | None:
        return self.execution.repetitions

    @property
    def noise(self) -> Noise | None:
        return self.execution.noise

    @property
    def differentiator(self) -> tfq.differentiators.Differentiator | None:
        return self.execution.differentiator

    @property
    def executor_args(self) -> dict:
        """The execution settings every `ExpertPQC` part is made with."""
        return self.execution.args

    def builtin_expert(self, index: int, ansatz: Ansatz | QCNN | None = None) -> ExpertPQC:
        """The built-in expert number `index`: `ansatz` (by default the layer's), reading `observables`."""
        return ExpertPQC((ansatz or self.ansatz).circuit(self.qubits, prefix=EXPERT_PREFIX), self.observables,
                         name=f"expert_{index}", **self.executor_args)

    @property
    def simulator(self) -> str:
        """What runs the circuits: ``"statevector"`` (TF kernel), ``"noiseless"``/``"noisy"`` (TFQ) or a Cirq class;
        with ``backend="auto"``, ``"auto"`` until the layer is built, then what it chose."""
        return self._executor.name

    @property
    def executor(self) -> Executor:
        """The executor the circuits run on; with ``backend="auto"``, its `choices` say what runs where and why."""
        return self._executor

    @property
    def n_readouts(self) -> int:
        return len(self.observables)

    def build(self, input_shape: tf.TensorShape) -> None:
        # Parts run inside this layer's executor calls, never on their own; built, they export whole to a SavedModel.
        for part in self._flatten_layers(include_self=False, recursive=False):
            if isinstance(part, ExpertPQC) and not part.built:
                part.build(tf.TensorShape([None]))
        # the circuits' checks keep a table that every call reads: tracked here, so a SavedModel holds it
        self._checked_circuits = self._inputs.checked
        super().build(input_shape)

    def __call__(self, inputs, *args, **kwargs):
        self._adopt_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def _adopt_inputs(self, inputs: object) -> None:
        """Before the first build, a subclass may fit itself to what `inputs` hold (features or circuits)."""

    def _read(self, inputs: tf.Tensor) -> Batch:
        """`inputs` read as `call` reads them, the layer built on them first if it is not (for `route`)."""
        inputs = tf.convert_to_tensor(inputs)
        self._adopt_inputs(inputs)
        if not self.built:
            self.build(inputs.shape)
        return self._inputs.read(inputs)

    def route(self, inputs: tf.Tensor, training: bool = False) -> routing.Routing:
        raise NotImplementedError

    def gate_weights(self, inputs: tf.Tensor) -> tf.Tensor:
        """<float32>[batch, n_experts] weight of each expert in each sample's output (inference)."""
        return self.route(inputs).gate_matrix()

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape([tf.TensorShape(input_shape)[0], self.n_readouts])

    def get_config(self) -> dict:
        return {
            **super().get_config(), "qubits": to_cirq_json(self.qubits),
            "observables": to_cirq_json(self.observables), "ansatz": self.ansatz.get_config(),
            "encoder": None if self.encoder is None else keras.layers.serialize(self.encoder),
            **self.execution.get_config(),
            "format_version": FORMAT_VERSION,
        }

    @staticmethod
    def read_config(config: dict, layer: str, cirq_fields: tuple[str, ...] = ()) -> tuple[dict, dict, int]:
        """(config with Cirq fields, differentiator and encoder decoded; the stored execution fields, for
        nested `ExpertPQC` configs; the format version).

        Formats 1-3 stored the ansatz and execution as separate settings: they stay settings (`settings`)."""
        execution = {key: config.get(key) for key in EXECUTION_FIELDS}
        version = config.get("format_version", FORMAT_VERSION)
        config = read_layer_config(config, layer, ("qubits", "observables", "noise", *cirq_fields))
        config["differentiator"] = read_differentiator(config.get("differentiator"), f"{layer}.differentiator")
        if config.get("encoder") is not None:
            config["encoder"] = deserialize_part(config["encoder"], execution)
        if version >= 4:
            config["ansatz"] = builtin_from_config(config["ansatz"])
            config["execution"] = Execution(**{key: config.pop(key) for key in EXECUTION_FIELDS})
        return config, execution, version
