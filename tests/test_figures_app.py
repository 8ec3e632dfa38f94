"""Figures logged by real runs: the files in MLflow, and what figure 8 shows."""

from __future__ import annotations

import io
import struct

import matplotlib.image
import mlflow
import numpy as np
import pytest

from ntk_sweep import figures as F
from ntk_sweep.experiment import run_experiment
from tests.conftest import compose_cfg
from tests.test_figures import COMMON_FIGS as COMMON_FIGURES
from tests.test_figures import PAPER_FIGS as PAPER_FIGURES


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def logged_figures(uri: str, run_id: str) -> dict[str, bytes]:
    client = mlflow.MlflowClient(uri)
    out = {}
    for item in client.list_artifacts(run_id, "figures"):
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=item.path, tracking_uri=uri
        )
        with open(path, "rb") as fh:
            out[item.path.removeprefix("figures/").removesuffix(".png")] = fh.read()
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["experiment=paper_fixed", "width=256", "train.steps=120", "tracking.figures=all"],
            PAPER_FIGURES | COMMON_FIGURES,
        ),
        (
            ["dataset=teacher", "dataset.n_train=24", "width=128", "train.steps=40"],
            {"drift", "pred_vs_target"},  # the default set, paper
        ),
    ],
)
def test_runs_log_the_expected_figures_as_valid_pngs(tmp_path, overrides, expected):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_experiment(
        compose_cfg(*overrides, f"tracking.uri={uri}"), output_dir=tmp_path / "run"
    )
    assert summary["status"] == "FINISHED"
    figures = logged_figures(uri, summary["run_id"])
    assert set(figures) == expected
    for name, data in figures.items():
        width, height = png_size(data)
        assert 300 <= width <= 2500 and 200 <= height <= 2500, name
        image = matplotlib.image.imread(io.BytesIO(data))
        assert image.std() > 0.01, name  # not blank
        assert (tmp_path / "run" / "figures" / f"{name}.png").read_bytes() == data


def _figures_run(tmp_path, which: str) -> tuple[str, dict, object]:
    """A small real run (paper_toy, width 16, 10 steps) with tracking.figures=which:
    (store URI, run summary, output folder)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_cfg(
        "width=16", "train.steps=10", f"tracking.figures={which}", f"tracking.uri={uri}"
    )
    summary = run_experiment(cfg, output_dir=tmp_path / "run")
    assert summary["status"] == "FINISHED"
    return uri, summary, tmp_path / "run"


@pytest.fixture(scope="module")
def run_without_figures(tmp_path_factory):
    """One real run with tracking.figures=none, shared by the tests that read it back."""
    return _figures_run(tmp_path_factory.mktemp("nofig"), "none")


def _check_logged_set(uri, summary, out, expected) -> None:
    figures = logged_figures(uri, summary["run_id"])
    assert set(figures) == expected
    for name, data in figures.items():  # 7 x 4.5 in at 90 dpi; figures 8 and drift are taller
        tall = {"fig8_net_vs_kernel_dynamics": 504, "drift": 720}
        assert png_size(data) == (630, tall.get(name, 405)), name
    run = mlflow.MlflowClient(uri).get_run(summary["run_id"])
    if expected:
        assert run.data.metrics["figures_time_s"] > 0
    else:
        assert run.data.metrics["figures_time_s"] == 0
        assert not (out / "figures").exists()
        artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(summary["run_id"])}
        assert "figures" not in artifacts and "arrays" in artifacts


def test_tracking_figures_none_logs_no_figure(run_without_figures):
    """tracking.figures=none logs no figure artifact and draws nothing; read back from a
    real SQLite store. (all: test_runs_log_the_expected_figures_as_valid_pngs.)"""
    _check_logged_set(*run_without_figures, set())


@pytest.mark.slow
def test_tracking_figures_paper_logs_the_paper_set(tmp_path):
    """tracking.figures=paper logs exactly the paper's figures and drift (1-D data)."""
    _check_logged_set(*_figures_run(tmp_path, "paper"), PAPER_FIGURES | {"drift"})


def test_drift_figure_draws_the_runs_kernel_diagnostics(run_without_figures):
    """The drift figure of a real run's history (its logged per-step metrics,
    read back from MLflow) has the lambda_max / alignment and velocity panels, and they draw
    exactly the logged values at the steps > 0 (the log step axis cannot show step 0;
    lambda_max at step 0 is the dotted reference line)."""
    uri, summary, out = run_without_figures
    client = mlflow.MlflowClient(uri)
    with np.load(out / "arrays" / "ntk.npz") as z:
        steps = z["steps"]
    history = {}
    for key in ("kernel_drift", "kernel_distance", *F.KERNEL_DIAGNOSTICS):
        logged = dict((m.step, m.value) for m in client.get_metric_history(summary["run_id"], key))
        history[key] = np.array([logged.get(int(s), np.nan) for s in steps])
    assert (
        np.isnan(history["kernel_velocity"][0]) and np.isfinite(history["kernel_lambda_max"]).all()
    )
    fig = F.plot_drift(steps, history, lr=0.1)
    drift_ax, lam_ax, vel_ax, align_ax = fig.axes[:4]
    later = steps > 0

    def line(ax, label):
        (hit,) = [ln for ln in ax.get_lines() if ln.get_label().startswith(label)]
        return hit

    for ax, label, key in (
        (drift_ax, "kernel drift, train", "kernel_drift"),
        (lam_ax, "λ_max(Θ_t)", "kernel_lambda_max"),
        (align_ax, "alignment", "kernel_alignment"),
        (vel_ax, "kernel velocity", "kernel_velocity"),
    ):
        drawn = line(ax, label)
        np.testing.assert_array_equal(drawn.get_xdata(), steps[later], err_msg=key)
        np.testing.assert_array_equal(drawn.get_ydata(), history[key][later], err_msg=key)
    lam0 = line(lam_ax, "λ_max(Θ_0)")
    np.testing.assert_array_equal(lam0.get_ydata(), [history["kernel_lambda_max"][0]] * 2)
    assert vel_ax.get_yscale() == "log" and lam_ax.get_xscale() == "log"
    assert align_ax.get_ylabel() == "alignment" and lam_ax.get_ylabel().startswith("λ_max")
    # an old record without the diagnostics keeps the single panel
    old = {k: v for k, v in history.items() if k not in F.KERNEL_DIAGNOSTICS}
    assert len(F.plot_drift(steps, old, lr=0.1).axes) == 1


def fig8_gap(tmp_path, parameterization: str) -> float:
    """Max |network - kernel-dynamics prediction| on the test grid at figure 8's step (500)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / parameterization
    summary = run_experiment(
        compose_cfg(
            "experiment=paper_fixed",
            "width=50000",
            "train.steps=500",
            f"model.parameterization={parameterization}",
            "tracking.figures=false",
            f"tracking.uri={uri}",
        ),
        output_dir=out,
    )
    assert summary["status"] == "FINISHED"
    with np.load(out / "arrays" / "ntk.npz") as z:
        i = list(z["steps"]).index(500)
        return float(np.abs(z["f_test"][i] - z["f_kernel_test"][i]).max())


@pytest.mark.slow
def test_fig8_curves_coincide_at_large_width_and_separate_for_mean_field(tmp_path):
    """The arrays fig 8 draws (network and empirical kernel dynamics at step 500) agree within
    the core's measured tolerance (RMS <= 0.011 at width 50 000, test_dynamics) in the ntk
    parameterization, and visibly separate for mean_field."""
    ntk, mean_field = fig8_gap(tmp_path, "ntk"), fig8_gap(tmp_path, "mean_field")
    assert ntk < 0.025
    assert mean_field > 0.05 and mean_field > 4 * ntk
