"""Aggregation of a real sweep made by the app: `ntk-aggregate` on the runs `run.py -m` logged."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import mlflow
import numpy as np
import pandas as pd
import pytest

from ntk_sweep import tracking
from tests.test_app import ROOT, run_cli
from tests.test_cluster import _free_port
from tests.test_tracking import damage, digest, finished_store  # noqa: F401


def _aggregate_cli(uri: str, out) -> subprocess.CompletedProcess:
    """`python -m ntk_sweep.aggregate` on the store `uri`, writing into `out`."""
    return subprocess.run(
        [sys.executable, "-m", "ntk_sweep.aggregate", "--tracking-uri", uri, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_real_sweep_aggregates_one_row_per_width_and_polyfit_slope(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run_cli(
        "-m",
        "width=64,256,1024",
        "seed=0,1,2",
        "train.steps=60",
        "tracking.figures=false",
        "tracking.aggregate_on_end=true",  # the callback aggregates once the sweep ends
        f"tracking.uri={uri}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("ntk-sweep").experiment_id],
        "tags.`ntk_sweep.role` = 'sweep'",
    )
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "aggregate")}
    assert "aggregate/summary.csv" in logged and "aggregate/fits.csv" in logged

    out = tmp_path / "agg"
    cli = _aggregate_cli(uri, out)
    assert cli.returncode == 0, cli.stderr
    assert "verdict:" in cli.stdout
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["model.width"]) == [64, 256, 1024]
    assert list(summary["n_seeds"]) == [3, 3, 3]
    m = "kernel_drift"
    assert (
        (summary[f"{m}_ci_low"] <= summary[f"{m}_mean"])
        & (summary[f"{m}_mean"] <= summary[f"{m}_ci_high"])
    ).all()

    # the group means, read back independently from MLflow
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    finals = pd.DataFrame(
        {"width": int(r.data.params["model.width"]), m: r.data.metrics[m]} for r in runs
    )
    assert len(finals) == 9
    means = finals.groupby("width")[m].mean()
    np.testing.assert_allclose(summary[f"{m}_mean"], means.values, rtol=1e-12)
    fits = pd.read_csv(out / "fits.csv")
    fit = fits[fits["metric"] == m].iloc[0]
    used = [float(w) for w in str(fit["widths_used"]).split(";")]
    slope = np.polyfit(np.log(used), np.log(means.loc[[int(w) for w in used]].values), 1)[0]
    assert fit["slope"] == pytest.approx(slope, rel=1e-10)
    assert fit["slope_ci_low"] <= fit["slope"] <= fit["slope_ci_high"]


@pytest.mark.slow
def test_real_lr_sweep_aggregates_along_lr(tmp_path):
    """A real 3-lr sweep at one width (lr_sweep's layout): the CLI prints no
    warnings and no line over 200 characters, and draws drift vs lr with 2N/lambda_max."""
    from matplotlib.image import imread

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run_cli(
        "-m",
        "experiment=lr_sweep",
        "width=64",
        "lr=0.1,1.6,6.4",
        "seed=0,1",
        "train.steps=60",
        "tracking.figures=false",
        f"tracking.uri={uri}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "agg"
    cli = _aggregate_cli(uri, out)
    assert cli.returncode == 0, cli.stderr
    assert "Warning" not in cli.stderr and "overflow" not in cli.stderr, cli.stderr
    assert max(len(line) for line in cli.stdout.splitlines()) <= 200
    assert "- swept axis train.lr at fixed model.width=64: 3 values (no width fits)" in cli.stdout
    assert "2N/lambda_max of the initial NTK (lr_max_stable, median): " in cli.stdout
    assert "no fit" not in cli.stdout
    # the phase per lr (tags ntk_sweep.phase_net / phase_lin), as measured for this net:
    # 2N/lambda_max is about 0.9, so 1.6 catapults the network and diverges its linearisation
    for lr, net, lin in (("0.1", "lazy", "lazy"), ("1.6", "catapult", "divergent"),
                         ("6.4", "divergent", "divergent")):  # fmt: skip
        phase = f"lr phase: network {net} x2; linearised {lin} x2"
        assert f"lr={lr}: 2/2 finished, {phase}" in cli.stdout
    image = imread(out / "drift_vs_lr.png")
    assert image.ndim == 3 and image.shape[1] > 200
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["train.lr"]) == [0.1, 1.6, 6.4]


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", ["out is a file", "malformed uri", "not a database", "damaged", "server down"]
)
def test_an_unusable_out_or_store_is_one_line_exit_2(case, finished_store, tmp_path):  # noqa: F811
    """ntk-aggregate refuses, before reading or writing anything, with one line and exit code 2:
    --out naming a file, a malformed URI, a file that is no database, a damaged
    store, a server that is down (the app's bounded check: seconds, not MLflow's retries)."""
    db = tmp_path / "mlflow.db"
    shutil.copy(finished_store, db)
    uri, out = f"sqlite:///{db}", tmp_path / "agg"
    if case == "out is a file":
        out.write_text("a file\n")
        expected = f"error: --out: {out} is a file, not a folder (pass a folder; it is created)"
    elif case == "malformed uri":
        uri = "foo://bar"
        expected = f"error: --tracking-uri=foo://bar is invalid: expected {tracking.EXPECTED_URI}"
    elif case == "not a database":
        db.write_text("not a database\n" * 300)
        expected = (
            f"error: tracking store {uri} is damaged (quick_check: file is not a database): "
            "restore it from a backup or choose another --tracking-uri"
        )
    elif case == "damaged":
        damage(db)
        expected = f"error: tracking store {uri} is damaged (quick_check: "
    else:
        uri = f"http://127.0.0.1:{_free_port()}"
        expected = f"error: tracking server {uri} is unreachable ("
    before = digest(db)
    started = time.monotonic()
    res = _aggregate_cli(uri, out)
    assert res.returncode == 2, res.stderr
    assert time.monotonic() - started < 60
    (line,) = res.stderr.strip().splitlines()
    if expected.endswith(("(", ": ")):  # the rest is the OS's or SQLite's own words
        assert line.startswith(expected), line
    else:
        assert line == expected
    assert "Traceback" not in res.stdout + res.stderr
    assert digest(db) == before  # nothing written into the store
    assert out.is_file() if case == "out is a file" else not out.exists()
    if case in ("out is a file", "malformed uri", "server down"):  # the store is intact
        (run,) = mlflow.MlflowClient(f"sqlite:///{db}").search_runs(["1"])
        assert run.info.status == "FINISHED" and run.data.metrics == {"kernel_drift": 0.25}
