"""`backend="auto"`: each program on the executor its estimated cost favours, with the reason logged."""
import logging

import cirq
import numpy as np
import pytest

import qmoe_tfq as qmoe
from qmoe_tfq.execution.auto import AUTO_MAX_QUBITS, COSTS, Costs, ProgramShape, choose

SHALLOW = ProgramShape(n=8, steps=3, work=32, gates=72, rows=32)


def test_the_cheaper_executor_is_chosen_with_both_estimates_in_the_reason():
    cheap_kernel = Costs(kernel_call=0.0, kernel_step=1e-5, kernel_amplitude=1e-12, tfq_call=0.0, tfq_row=1e-3,
                         tfq_gate=0.0, tfq_gate_amplitude=1e-9, kernel_compile=1.0, kernel_compile_step=0.0,
                         horizon=100)
    choice = choose(SHALLOW, cheap_kernel)
    assert choice.executor == "statevector"
    assert "8 qubits, 3 kernel steps, 72 gates, 32 rows per call" in choice.reason
    assert "0.03 ms per training step on the statevector kernel (+1.0 s compile), 32.59 ms on qsim" in choice.reason
    slow_kernel = Costs(0.0, 1e-2, 1e-12, 0.0, 1e-3, 0.0, 1e-9, 1.0, 0.0, 100)  # 30 ms per step against qsim's 32.6 ms
    assert choose(SHALLOW, slow_kernel).executor == "noiseless"  # the compile tips it


def test_the_compile_is_spread_over_the_horizon():
    costs = Costs(0.0, 1e-4, 1e-12, 0.0, 1e-3, 0.0, 1e-9, 30.0, 0.0, horizon=10)
    assert choose(SHALLOW, costs).executor == "noiseless"
    assert choose(SHALLOW, Costs(0.0, 1e-4, 1e-12, 0.0, 1e-3, 0.0, 1e-9, 30.0, 0.0, horizon=10_000)).executor == "statevector"


def test_the_measured_constants_keep_shallow_circuits_on_the_kernel_and_wide_deep_user_experts_on_tfq():
    assert choose(SHALLOW).executor == "statevector"
    # the three user experts of benchmarks/user_models.py at 12 qubits: qsim measured 2.9x faster at 16 rows
    assert choose(ProgramShape(n=12, steps=49, work=52, gates=213, rows=16)).executor == "noiseless"


def test_a_layer_logs_and_reports_what_auto_chose_per_program(caplog):
    qubits = cirq.GridQubit.rect(1, 3)
    layer = qmoe.QMoELayer(qubits, n_experts=4, expert_layers=1, router_layers=1)  # dense: 4 rows per sample
    assert layer.simulator == "auto"  # nothing compiled before the layer is built
    with caplog.at_level(logging.INFO, logger="qmoe_tfq"):
        layer(np.zeros((2, 3), np.float32))
    lines = [r.getMessage() for r in caplog.records if r.name == "qmoe_tfq"]
    assert len(lines) == 2  # the experts' program and the router's
    assert lines[0].startswith("backend='auto' runs statevector: 3 qubits, ") and "128 rows per call" in lines[0]
    assert lines[1] == "backend='auto' runs statevector: as the layer's first program (one executor per layer)"
    assert layer.simulator == "statevector"


def test_wider_than_the_limit_runs_on_tfq_and_says_why():
    layer = qmoe.QMoELayer(cirq.GridQubit.rect(1, AUTO_MAX_QUBITS + 1), n_experts=2, expert_layers=1,
                           router_layers=1, top_k=1)
    layer(np.zeros((1, AUTO_MAX_QUBITS + 1), np.float32))
    assert layer.simulator == "noiseless"
    assert layer.executor.choices[0].reason == f"{AUTO_MAX_QUBITS + 1} qubits, more than AUTO_MAX_QUBITS=14"


@pytest.mark.parametrize("kwargs,simulator", [({"repetitions": 100}, "noiseless"),
                                              ({"backend": "noisy", "repetitions": 10,
                                                "noise": cirq.depolarize(0.01)}, "noisy"),
                                              ({"backend": "statevector"}, "statevector")])
def test_shots_and_noise_stay_on_tfq_and_a_named_backend_is_kept(kwargs, simulator):
    assert qmoe.QMoELayer(cirq.GridQubit.rect(1, 2), n_experts=2, **kwargs).simulator == simulator


def test_the_constants_in_use_price_qsim_per_row_as_measured_here():
    # guards against a calibration pasted in the wrong unit: qsim's cost per 8-qubit row is 0.1-2 ms here
    assert 1e-4 < COSTS.tfq_seconds(SHALLOW) / SHALLOW.rows < 2e-3
    assert COSTS.kernel_seconds(SHALLOW) < COSTS.tfq_seconds(SHALLOW)
