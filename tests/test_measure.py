"""The one measurement record: `core.measure.measure` runs from plain Python with no
Hydra, MLflow or matplotlib, and the record it returns is what the app logs to MLflow and
writes to arrays/ntk.npz."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from ntk_sweep.core import kernels
from ntk_sweep.core.measure import Schedule, measure, measure_steps, rms
from ntk_sweep.core.network import MLP, forward, init_params
from ntk_sweep.dataset_sources import load_dataset
from tests.conftest import compose_cfg
from tests.test_network import explicit_jacobian

ROOT = Path(__file__).resolve().parents[1]

NOTEBOOK = """
import json, sys
from ntk_sweep.dataset_sources import load_dataset
from ntk_sweep.core.measure import Schedule, measure
from ntk_sweep.core.network import MLP
data = load_dataset("sine", seed=1, n_train=12, n_test=30, noise=0.0, frequency=1.0)
net = MLP(input_dim=1, width=40, depth=2, activation="erf", sigma_b=1.0)
schedule = Schedule(lr=0.5, steps=25, log_steps=(0, 1, 5, 25), analytic=True)
rec = measure(net, data, schedule, seed=1)
loaded = sorted(m for m in ("hydra", "omegaconf", "mlflow", "matplotlib") if m in sys.modules)
print(json.dumps({"loaded": loaded, "history": {k: v.tolist() for k, v in rec.history.items()},
                  "init": rec.init, "f_test": rec.f_test.tolist()}))
"""


def test_a_notebook_measures_without_any_app_framework_and_the_app_logs_the_same_numbers(
    tmp_path,
):
    out = subprocess.run(
        [sys.executable, "-c", NOTEBOOK], capture_output=True, text=True, check=True, cwd=ROOT
    )
    got = json.loads(out.stdout)
    assert got["loaded"] == []

    # the same network, data and schedule through the app (Hydra compose + real MLflow store)
    from ntk_sweep.experiment import run_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [
        "dataset=sine",
        "dataset.n_train=12",
        "dataset.n_test=30",
        "dataset.noise=0.0",
        "dataset.frequency=1.0",
        "seed=1",
        "width=40",
        "depth=2",
        "model.activation=erf",
        "lr=0.5",
        "train.steps=25",
        "train.n_log_points=2",
        "train.snapshot_steps=[1,5]",
        "tracking.figures=none",
        "tracking.progress=false",
        f"tracking.uri={uri}",
    ]
    cfg = compose_cfg(*overrides)
    summary = run_experiment(cfg, output_dir=tmp_path / "run")
    assert summary["status"] == "FINISHED"
    client = mlflow.MlflowClient(uri)
    steps = [0, 1, 5, 25]
    for key, values in got["history"].items():
        logged = sorted(
            (m.step, m.value) for m in client.get_metric_history(summary["run_id"], key)
        )
        finite = [(s, v) for s, v in zip(steps, values, strict=True) if not math.isnan(v)]
        assert [(s, v) for s, v in logged if not math.isnan(v)] == finite, key
    metrics = client.get_run(summary["run_id"]).data.metrics
    for key, value in got["init"].items():  # MLflow stores inf as the largest float
        assert metrics[key] == (sys.float_info.max if value == math.inf else value), key
    with np.load(tmp_path / "run" / "arrays" / "ntk.npz") as z:
        assert np.array_equal(z["f_test"], np.asarray(got["f_test"]))
        assert list(z["steps"]) == steps


def _small():
    data = load_dataset("teacher", seed=2, n_train=10, n_test=15, input_dim=3)
    net = MLP(input_dim=3, width=64, depth=1, activation="relu", sigma_b=0.5)
    return data, net


def test_the_records_metrics_match_its_own_arrays_and_an_independent_recomputation():
    data, net = _small()
    schedule = Schedule(lr=0.3, steps=40, log_steps=(0, 10, 40), progress_steps=(5, 20))
    events = []
    gen = measure_steps(net, data, schedule, seed=4)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as done:
            rec = done.value
            break
    assert [e.step for e in events] == [0, 5, 10, 20, 40]
    assert [bool(e.metrics) for e in events] == [True, False, True, False, True]
    assert events[0].init == rec.init and all(e.init is None for e in events[1:])
    h = rec.history
    for i in range(3):
        assert h["lin_error_train"][i] == rms(rec.f_train[i] - rec.f_lin_train[i])
        assert h["lin_error_test"][i] == rms(rec.f_test[i] - rec.f_lin_test[i])
    assert h["kernel_drift"][-1] == kernels.kernel_drift(rec.ntk_final, rec.ntk_init)
    assert h["kernel_drift"][0] == 0.0
    # independent: the initial kernel from an explicit Jacobian (unit cotangents), the outputs
    params0 = init_params(net, 4)
    np.testing.assert_allclose(rec.f_train[0], forward(net, params0, data.x_train), rtol=1e-13)
    jac = explicit_jacobian(net, params0, data.x_train)
    np.testing.assert_allclose(rec.ntk_init, jac @ jac.T, rtol=1e-12, atol=1e-12)
    # the loss at step 0 is 1/(2N) |f0 - y|^2
    r = rec.f_train[0] - data.y_train
    assert h["loss"][0] == pytest.approx(r @ r / (2 * len(r)), rel=1e-14)
    assert rec.failure == "" and rec.final_step == 40
    assert set(rec.arrays(data)) >= {"ntk_init", "ntk_final", "f_kernel_test", "y_test"}


def test_a_diverging_measurement_stops_with_the_reason_and_nan_after_it():
    data, net = _small()
    schedule = Schedule(lr=200.0, steps=200, log_steps=(0, 1, 100, 200))
    rec = measure(net, data, schedule, seed=0)
    assert rec.failure.startswith("loss became") and "diverged" in rec.failure
    assert 0 < rec.final_step < 200
    assert np.isnan(rec.history["loss"][-1]) and np.isfinite(rec.history["loss"][0])
    assert rec.phase_net == "divergent"


def test_measuring_twice_is_bit_identical():
    data, net = _small()
    schedule = Schedule(lr=0.3, steps=30, log_steps=(0, 3, 30))
    a, b = measure(net, data, schedule, seed=7), measure(net, data, schedule, seed=7)
    for key in a.history:
        assert np.array_equal(a.history[key], b.history[key], equal_nan=True), key
    assert np.array_equal(a.ntk_final, b.ntk_final)
