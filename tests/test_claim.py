"""The claim, measured: relu and erf networks trained by full-batch GD at widths 1024 .. 16 384
(16x), 3 seeds each; their kernel drift exponents, fitted by the aggregation's own statistics,
against the rates theory expects (docs/expected_rates.md, MATH.md section 6): relu-like
width^-1/2 (activation-pattern flips), smooth width^-1 (Dyer & Gur-Ari 2019)."""

from __future__ import annotations

import pandas as pd
import pytest

from ntk_sweep.aggregate import fit_power_laws, verdict
from ntk_sweep.core.kernels import empirical_ntk, kernel_drift
from ntk_sweep.core.network import MLP, init_params
from ntk_sweep.core.training import gd_trajectory
from ntk_sweep.dataset_sources import load_dataset

WIDTHS = (1024, 4096, 16384)
SEEDS = (0, 1, 2)
STEPS = 500  # lr 0.1: t = 50, the loss is down by ~100x at every width


def _final_drift(activation: str, width: int, seed: int) -> float:
    data = load_dataset("sine", seed=seed)
    net = MLP(input_dim=1, width=width, activation=activation, sigma_w=1.0, sigma_b=1.0)
    params0 = init_params(net, seed)
    (state,) = gd_trajectory(net, params0, data.x_train, data.y_train, 0.1, STEPS, [STEPS])
    k0 = empirical_ntk(net, params0, data.x_train)
    return kernel_drift(empirical_ntk(net, state.params, data.x_train), k0)


@pytest.mark.slow
def test_relu_and_erf_drift_exponents_are_the_expected_ones():
    runs = pd.DataFrame(
        [
            {
                "model.activation": act,
                "model.parameterization": "ntk",
                "model.width": w,
                "seed": s,
                "status": "FINISHED",
                "kernel_drift": _final_drift(act, w, s),
            }
            for act in ("relu", "erf")
            for w in WIDTHS
            for s in SEEDS
        ]
    )
    fits = fit_power_laws(
        runs, ["model.activation", "model.parameterization", "model.width"], ["kernel_drift"]
    ).set_index("model.activation")
    assert set(fits["status"]) == {"ok"}
    relu, erf = fits.loc["relu"], fits.loc["erf"]
    assert relu["expected_slope"] == -0.5 and erf["expected_slope"] == -1.0
    assert -0.65 < relu["asym_slope"] < -0.35, relu["asym_slope"]
    assert erf["asym_slope"] < -0.75, erf["asym_slope"]
    lines = verdict(fits.reset_index())
    drift_lines = {
        act: next(x for x in lines if act in x and "kernel_drift:" in x) for act in fits.index
    }
    assert "expected -0.5 (heuristic: relu, coherent flips" in drift_lines["relu"]
    assert "expected -1 (rate: smooth erf" in drift_lines["erf"]
