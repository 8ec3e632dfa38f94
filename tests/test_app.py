"""End to end: `python run.py` in subprocesses and `run_experiment` in process, on real SQLite
MLflow stores in tmp_path. Tiny widths and few steps, except the paper test."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from ntk_sweep.config import PAPER_SNAPSHOT_STEPS, compute_log_steps
from ntk_sweep.dataset_sources import load_dataset
from ntk_sweep.experiment import run_experiment
from tests.conftest import compose_cfg

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = ROOT / "run.py"
STEP_METRICS = [
    "loss",
    "loss_lin",
    "loss_kernel",
    "kernel_drift",
    "kernel_drift_test",
    "kernel_distance",
    "kernel_distance_test",
    "lin_error_train",
    "lin_error_test",
    "kernel_pred_error_train",
    "kernel_pred_error_test",
    "analytic_pred_error_test",
    "param_movement",
    "param_movement_layer1",
    "param_movement_layer2",
]
INIT_METRICS = [
    "ntk_lambda_max",
    "ntk_lambda_min",
    "ntk_condition_number",
    "ntk_analytic_lambda_max",
    "ntk_analytic_condition_number",
    "ntk_analytic_vs_empirical",
    "lr_max_stable",
    "lr_effective",
]


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, str(RUN_PY), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def runs_of(uri: str) -> list:
    client = mlflow.MlflowClient(uri)
    exps = client.search_experiments()
    return [r for e in exps for r in client.search_runs([e.experiment_id])]


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# --------------------------------------------------------------------------- single run


@pytest.mark.slow
def test_single_run_records_params_metrics_and_arrays(tmp_path, db):
    out = tmp_path / "run"
    res = run_cli(
        "train.steps=20", "width=32", f"tracking.uri={db}", f"hydra.run.dir={out}", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert "ntk-sweep run FINISHED" in res.stdout
    (run,) = runs_of(db)
    client = mlflow.MlflowClient(db)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "w=32 s=0 steps=20"  # width and seed first (sweep_ui)
    p = run.data.params
    assert p["model.width"] == "32" and p["width"] == "32" and p["train.steps"] == "20"
    assert p["model.activation"] == "relu" and p["model.parameterization"] == "ntk"
    assert p["dataset.name"] == "paper_toy" and p["seed"] == "0" and p["train.lr"] == "0.1"
    tags = run.data.tags
    assert tags["ntk_sweep.role"] == "job" and tags["ntk_sweep.sweep_id"] == ""
    assert tags["ntk_sweep.output_dir"] == str(out) and tags["ntk_sweep.job_num"] == "0"
    assert len(tags["ntk_sweep.config_hash"]) == 64 and "ntk_sweep.git_commit" in tags

    expected_steps = compute_log_steps(20, 20, PAPER_SNAPSHOT_STEPS)
    for key in STEP_METRICS:
        h = history(client, run.info.run_id, key)
        assert [s for s, _ in h] == expected_steps, key
        assert np.all(np.isfinite([v for _, v in h])), key
    drift = history(client, run.info.run_id, "kernel_drift")
    assert drift[0] == (0, 0.0) and drift[-1][1] > 0
    assert history(client, run.info.run_id, "lin_error_train")[0] == (0, 0.0)
    for key in INIT_METRICS:
        assert [s for s, _ in history(client, run.info.run_id, key)] == [0], key
    assert "test_loss" not in run.data.metrics  # paper_toy's test grid has no target
    m = run.data.metrics
    assert m["final_step"] == 20 and m["train_time_s"] > 0 and m["figures_time_s"] > 0
    assert m["lr_effective"] == 0.1 and m["lr_max_stable"] > 0.1

    art = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config", "hydra", "arrays", "figures"} <= art
    figs = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "figures")}
    assert "fig1_data_init.png" in figs and "drift.png" in figs
    assert (out / "figures" / "fig8_net_vs_kernel_dynamics.png").is_file()
    dl = tmp_path.parent / f"{tmp_path.name}-download"
    dl.mkdir()
    local = client.download_artifacts(run.info.run_id, "arrays/ntk.npz", str(dl))
    with np.load(local) as z:
        assert list(z["steps"]) == expected_steps
        assert z["x_train"].shape == (4, 1) and z["y_train"].shape == (4,)
        assert z["ntk_init"].shape == (4, 4) and z["ntk_final"].shape == (4, 4)
        assert z["ntk_analytic"].shape == (4, 4)
        n_test = z["x_test"].shape[0]
        for key in ("f_test", "f_lin_test", "f_kernel_test"):
            assert z[key].shape == (len(expected_steps), n_test), key
        assert not np.array_equal(z["ntk_init"], z["ntk_final"])
    cfg_text = Path(client.download_artifacts(run.info.run_id, "config/config.yaml", str(dl)))
    assert "width: 32" in cfg_text.read_text()
    # nothing but the run folder, the database and its artifacts in the launch directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlruns", "run"]


# --------------------------------------------------------------------------- multirun


@pytest.mark.slow
def test_multirun_2x2_one_parent_four_children_default_store(tmp_path, empty_db):
    shutil.copy(empty_db, tmp_path / "mlflow.db")  # the default store: <launch dir>/mlflow.db
    # chdir=true moves the jobs' working directory, never the default store
    res = run_cli(
        "-m",
        "width=32,64",
        "seed=0,1",
        "train.steps=10",
        "tracking.figures=false",
        "hydra.job.chdir=true",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = runs_of(uri)
    parents = [r for r in runs if r.data.tags.get("ntk_sweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("ntk_sweep.role") == "job"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert re.fullmatch(r"sweep \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", parent.info.run_name)
    assert parent.data.tags["ntk_sweep.preset"] == ""  # no preset
    assert parent.data.tags["ntk_sweep.swept"] == "width,seed"
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.data.tags["ntk_sweep.sweep_id"] for r in children} == {parent.info.run_id}
    # run names: width and seed, what varies across the sweep (train.steps=10 does not)
    assert sorted(r.info.run_name for r in children) == sorted(
        f"w={w} s={s}" for w in (32, 64) for s in (0, 1)
    )
    assert res.stdout.strip().splitlines()[-1] == (
        f"{parent.info.run_name}: 4/4 finished, 0 failed, 0 killed; "
        f"aggregate: ntk-aggregate --sweep {parent.info.run_id}; "
        f"MLflow UI search: tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.data.tags["ntk_sweep.job_num"] for r in children) == ["0", "1", "2", "3"]
    # Hydra's folders only: outputs/sweeps/<date>/<time>/{0..3, multirun.yaml, parent id}
    (sweep_dir,) = [p for p in (tmp_path / "outputs" / "sweeps").glob("*/*")]
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["sweeps"]
    assert sorted(p.name for p in sweep_dir.iterdir()) == [
        "0",
        "1",
        "2",
        "3",
        "mlflow_parent_run_id",
        "multirun.yaml",
    ]
    assert (sweep_dir / "mlflow_parent_run_id").read_text().strip() == parent.info.run_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlruns", "outputs"]


@pytest.mark.slow
def test_diverging_run_fails_with_reason_and_the_sweep_goes_on(tmp_path, db):
    res = run_cli(
        "-m",
        "lr=0.1,1000",
        "width=32",
        "train.steps=100",
        "tracking.figures=false",
        f"tracking.uri={db}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    runs = {r.data.params.get("lr"): r for r in runs_of(db) if "lr" in r.data.params}
    assert runs["0.1"].info.status == "FINISHED"
    bad = runs["1000.0"]
    assert bad.info.status == "FAILED"
    reason = bad.data.tags["ntk_sweep.failure_reason"]
    assert "diverged" in reason and "loss became" in reason
    assert bad.data.metrics["lr_max_stable"] < 1000
    assert "FAILED" in res.stdout


@pytest.mark.slow
def test_sigterm_marks_the_run_and_its_sweep_killed_keeping_metrics(tmp_path, db):
    proc = subprocess.Popen(
        [
            sys.executable,
            str(RUN_PY),
            "-m",
            "train.steps=1000000",
            "width=64",
            f"tracking.uri={db}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = mlflow.MlflowClient(db)

    def job_runs():
        return [r for r in runs_of(db) if r.data.tags.get("ntk_sweep.role") == "job"]

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until training has logged a few steps
            runs = job_runs()
            if runs and len(history(client, runs[0].info.run_id, "loss")) >= 3:
                break
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    (run,) = job_runs()
    assert run.info.status == "KILLED"
    assert "SIGTERM" in run.data.tags["ntk_sweep.failure_reason"]
    assert len(history(client, run.info.run_id, "loss")) >= 3
    (parent,) = [r for r in runs_of(db) if r.data.tags.get("ntk_sweep.role") == "sweep"]
    assert parent.info.status == "KILLED"


# Bad input (one line, exit code 2, nothing stored): tests/test_bad_input.py, the whole table.


# --------------------------------------------------------------------------- in process


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(tmp_path, db):
    cfg = compose_cfg(
        "train.steps=30",
        "width=48",
        "depth=2",
        "dataset=sine",
        "seed=3",
        f"tracking.uri={db}",
        "tracking.figures=false",
    )
    a = run_experiment(cfg, output_dir=tmp_path / "a")
    b = run_experiment(cfg, output_dir=tmp_path / "b")
    assert a["status"] == b["status"] == "FINISHED" and a["run_id"] != b["run_id"]
    assert a["config_hash"] == b["config_hash"]
    client = mlflow.MlflowClient(db)
    keys = [k for k in client.get_run(a["run_id"]).data.metrics if not k.endswith("time_s")]
    assert "test_loss" in keys and "param_movement_layer3" in keys
    for key in keys:
        assert history(client, a["run_id"], key) == history(client, b["run_id"], key), key
    with (
        np.load(tmp_path / "a" / "arrays" / "ntk.npz") as za,
        np.load(tmp_path / "b" / "arrays" / "ntk.npz") as zb,
    ):
        for key in za.files:
            assert np.array_equal(za[key], zb[key]), key


@pytest.mark.slow
def test_paper_fits_the_least_squares_line_and_paper_fixed_fits_far_better(tmp_path, db):
    ds = load_dataset("paper_toy")
    a = np.c_[ds.x_train[:, 0], np.ones(len(ds.x_train))]
    coef = np.linalg.lstsq(a, ds.y_train, rcond=None)[0]
    r = a @ coef - ds.y_train
    ls_loss = float(r @ r) / (2 * len(r))
    paper = run_experiment(
        compose_cfg("experiment=paper", f"tracking.uri={db}", "tracking.figures=false"),
        output_dir=tmp_path / "paper",
    )
    fixed = run_experiment(
        compose_cfg("experiment=paper_fixed", f"tracking.uri={db}", "tracking.figures=false"),
        output_dir=tmp_path / "fixed",
    )
    assert paper["status"] == fixed["status"] == "FINISHED"
    assert paper["final_step"] == 3000
    # degenerate kernel (rank 2): the network can only fit the least-squares line
    assert paper["metrics"]["ntk_condition_number"] == float("inf")
    assert abs(paper["metrics"]["loss"] - ls_loss) < 0.05 * ls_loss
    assert abs(paper["metrics"]["loss_kernel"] - ls_loss) < 1e-3 * ls_loss
    assert fixed["metrics"]["loss"] < 0.1 * ls_loss
    assert np.isfinite(fixed["metrics"]["ntk_condition_number"])


@pytest.mark.slow
def test_phases_and_kernel_diagnostics_read_back_from_the_store(tmp_path, db):
    """Three learning rates straddling 2N/lambda_max (width 128, where the catapult exists),
    then the lazy limit alpha = 1e12 of a linear network (a constant kernel)."""
    from ntk_sweep.core.kernel_predictions import max_stable_lr
    from ntk_sweep.core.kernels import empirical_ntk
    from ntk_sweep.core.network import MLP, init_params

    data = load_dataset("paper_toy")
    net = MLP(1, 128, sigma_b=1.0)
    lr_max = max_stable_lr(empirical_ntk(net, init_params(net, 0), data.x_train))
    client = mlflow.MlflowClient(db)
    base = ("width=128", "train.steps=300", f"tracking.uri={db}", "tracking.figures=false")
    runs = {}
    for ratio in (0.5, 1.4, 30):
        cfg = compose_cfg(*base, f"lr={ratio * lr_max!r}")
        runs[ratio] = run_experiment(cfg, output_dir=tmp_path / str(ratio))
    tags = {r: client.get_run(s["run_id"]).data.tags for r, s in runs.items()}
    got = {r: (t["ntk_sweep.phase_net"], t["ntk_sweep.phase_lin"]) for r, t in tags.items()}
    assert got == {0.5: ("lazy", "lazy"), 1.4: ("catapult", "divergent"), 30: ("divergent",) * 2}
    assert runs[30]["status"] == "FAILED" and "diverged" in tags[30]["ntk_sweep.failure_reason"]
    for ratio, summary in runs.items():
        m = client.get_run(summary["run_id"]).data.metrics
        assert m["lr_over_lr_max_stable"] == pytest.approx(ratio, rel=1e-12)
    expected_steps = compute_log_steps(300, 20, PAPER_SNAPSHOT_STEPS)
    catapult = runs[1.4]["run_id"]
    lam = history(client, catapult, "kernel_lambda_max")
    assert [s for s, _ in lam] == expected_steps
    assert lam[0][1] == client.get_run(catapult).data.metrics["ntk_lambda_max"]
    assert lam[-1][1] < 0.7 * lam[0][1]  # the catapult flattened the kernel
    velocity = history(client, catapult, "kernel_velocity")
    assert [s for s, _ in velocity] == expected_steps[1:]  # undefined at step 0
    assert all(v > 0 for _, v in velocity)
    alignment = history(client, catapult, "kernel_alignment")
    assert [s for s, _ in alignment] == expected_steps and all(0 < v <= 1 for _, v in alignment)

    lazy = run_experiment(
        compose_cfg(
            *base, "model.activation=linear", "model.alpha=1.0e12", "width=32", "train.steps=50"
        ),
        output_dir=tmp_path / "linear",
    )
    velocity = [v for _, v in history(client, lazy["run_id"], "kernel_velocity")]
    assert len(velocity) > 5 and max(velocity) <= 1e-12
    assert client.get_run(lazy["run_id"]).data.tags["ntk_sweep.phase_net"] == "lazy"


def test_numpy_floating_point_warnings_become_one_logged_line(caplog):
    import logging
    import warnings

    from ntk_sweep.experiment import _unstable_lr_message
    from ntk_sweep.job import log_warnings

    with caplog.at_level(logging.WARNING, logger="ntk_sweep.job"), log_warnings():
        with np.errstate(over="warn", invalid="warn"):
            big = np.power(np.full(3, 10.0), 400)  # overflow encountered in power
            _ = big - big  # invalid value encountered in subtract
            _ = np.power(np.full(2, 10.0), 500)  # the same message again
        warnings.warn("kernel is singular", RuntimeWarning, stacklevel=1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0] == "kernel is singular", lines
    assert lines[1].startswith("numerical overflow / NaN (overflow encountered in power; ")
    assert "invalid value encountered in subtract" in lines[1]
    # the unstable-lr line names the bound and suggests lr_effective = lr_max_stable / 2
    line = _unstable_lr_message(0.1, 0.1, 0.00315254, 1.0)
    assert "31.7x the stable bound 2N/lambda_max=0.00315254" in line
    assert line.endswith("a stable choice is lr=0.0016") and "\n" not in line


def test_progress_eta_leaves_out_log_step_work_and_compilation(capsys):
    from ntk_sweep.progress import Progress

    p = Progress(100, "train x", "bar", n_log_steps=5)
    now = p.start + 10.0
    # 2 log steps took 6 s of the 10: 40 GD steps in 4 s (10 steps/s); 3 log steps left at 3 s
    p.log_work_s, p.n_logged = 6.0, 2
    assert p.eta(40, now) == pytest.approx(60 / 10 + 3 * 3.0)
    # a one-time compile in the first 5 steps (3 s of GD time) is left out after restart_rate
    p.base_step, p.base_gd_s = 5, 3.0
    assert p.eta(40, now) == pytest.approx(60 * (1.0 / 35) + 9.0)
    assert np.isnan(Progress(100, "t", "bar").eta(0, p.start + 1))
    p.status("compiling (once)")  # drawn at once, before tqdm's delay, in the bar's postfix
    err = capsys.readouterr().err
    assert "train x:   0%|" in err and err.rstrip().endswith(
        "0/100 steps [00:00, compiling (once)]"
    )


def test_the_paper_presets_test_kernel_subset_leaves_out_the_kink_at_x_0(tmp_path):
    from ntk_sweep.core.measure import test_kernel_index
    from ntk_sweep.core.network import kink_inputs
    from ntk_sweep.experiment import preflight

    data, net, _ = preflight(
        compose_cfg("experiment=paper", f"tracking.uri=sqlite:///{tmp_path}/m.db")
    )
    kinks = kink_inputs(net, data.x_test)
    assert data.x_test[0, 0] == 0 and np.flatnonzero(kinks).tolist() == [0]
    sub = test_kernel_index(len(data.x_test), 64, kinks)
    assert len(sub) == 64 and 0 not in sub and sub[-1] == len(data.x_test) - 1
    assert np.all(np.diff(sub) > 0)
    # sigma_b = 1 (paper_fixed) has no kink: the plain evenly spaced subsample, x = 0 included
    _, fixed, _ = preflight(
        compose_cfg("experiment=paper_fixed", f"tracking.uri=sqlite:///{tmp_path}/m.db")
    )
    assert not kink_inputs(fixed, data.x_test).any()
    np.testing.assert_array_equal(
        test_kernel_index(200, 64), np.unique(np.round(np.linspace(0, 199, 64)).astype(int))
    )
