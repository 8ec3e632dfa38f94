"""Tests of ntk_sweep.aggregate: statistics on synthetic frames, the CLI on a real MLflow
SQLite store populated by MlflowClient following the MLflow contract, and bad input."""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ntk_sweep.aggregate import (
    FIT_COLUMNS,
    MEAN_CI_METHOD,
    AggregateError,
    aggregate_sweep,
    compare_with_expected,
    default_group_keys,
    expected_rate,
    fit_power_laws,
    kink_note,
    log_contrast,
    lr_max_stable,
    main,
    markdown_table,
    slope_coefficients,
    slope_metric_names,
    slope_trend,
    summarize,
    t_interval,
    verdict,
)

WIDTHS = [64, 128, 256, 512, 1024, 2048]
BY = ["model.parameterization", "model.width"]
# parameterization -> (true slope, prefactor c): metric = c * width**slope * seed noise
TRUE = {"ntk": (-0.5, 1.0), "standard": (-1.0, 8.0), "mean_field": (0.0, 0.2)}


def _synthetic(n_seeds: int = 8, noise: float = 0.05, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for par, (slope, c) in TRUE.items():
        for w in WIDTHS:
            for s in range(n_seeds):
                rows.append(
                    {
                        "model.parameterization": par,
                        "model.activation": "relu",
                        "model.width": w,
                        "seed": s,
                        "status": "FINISHED",
                        "run_name": f"model.parameterization={par},model.width={w},seed={s}",
                        "kernel_drift": c * w**slope * np.exp(noise * rng.standard_normal()),
                        "lin_error_test": 0.5
                        * c
                        * w**slope
                        * np.exp(noise * rng.standard_normal()),
                        "loss": 0.01,
                    }
                )
    # A diverged run: its absurd metric must not enter the statistics, but it is counted.
    rows.append(
        {
            "model.parameterization": "ntk",
            "model.width": 256,
            "seed": n_seeds,
            "status": "FAILED",
            "run_name": "diverged-run",
            "failure_reason": "loss diverged at step 7",
            "kernel_drift": 1e6,
            "lin_error_test": math.nan,
            "loss": math.inf,
        }
    )
    rows.append(
        {
            "model.parameterization": "mean_field",
            "model.width": 64,
            "seed": n_seeds,
            "status": "KILLED",
            "run_name": "killed-run",
            "kernel_drift": 0.5,
        }
    )
    return pd.DataFrame(rows)


def _group_means(df: pd.DataFrame, par: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    ok = df[(df["status"] == "FINISHED") & (df["model.parameterization"] == par)]
    means = ok.groupby("model.width")[metric].mean()
    return means.index.to_numpy(float), means.to_numpy(float)


# --------------------------------------------------------------------------------------------
# (1) statistics on synthetic frames
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic():
    df = _synthetic()
    metrics = ["kernel_drift", "lin_error_test", "loss"]
    fits = fit_power_laws(df, BY, metrics, level=0.3)
    return df, fits


def test_summary_counts_and_excludes_failed_runs():
    df = _synthetic()
    s = summarize(df, BY, ["kernel_drift", "loss"])
    assert len(s) == len(TRUE) * len(WIDTHS)
    assert (s["n_seeds"] == 8).all()
    row = s[(s["model.parameterization"] == "ntk") & (s["model.width"] == 256)].iloc[0]
    assert row["n_runs"] == 9 and row["n_failed"] == 1 and row["n_killed"] == 0
    assert "diverged-run [FAILED: loss diverged at step 7]" in row["excluded_runs"]
    expected = df[(df["status"] == "FINISHED") & (df["model.parameterization"] == "ntk")]
    expected = expected[expected["model.width"] == 256]["kernel_drift"]
    assert row["kernel_drift_mean"] == pytest.approx(expected.mean(), rel=1e-12)
    assert row["kernel_drift_std"] == pytest.approx(expected.std(ddof=1), rel=1e-12)
    killed = s[(s["model.parameterization"] == "mean_field") & (s["model.width"] == 64)].iloc[0]
    assert killed["n_killed"] == 1 and "killed-run [KILLED]" in killed["excluded_runs"]
    assert (s["kernel_drift_ci_low"] <= s["kernel_drift_mean"]).all()
    assert (s["kernel_drift_mean"] <= s["kernel_drift_ci_high"]).all()
    assert (s["n_failed"].sum(), s["n_killed"].sum()) == (1, 1)


def test_fit_slope_matches_polyfit_and_ci_contains_true_slope(synthetic):
    df, fits = synthetic
    for par, (true_slope, _) in TRUE.items():
        for metric in ("kernel_drift", "lin_error_test"):
            f = fits[(fits["metric"] == metric) & (fits["model.parameterization"] == par)]
            assert len(f) == 1
            f = f.iloc[0]
            w, mu = _group_means(df, par, metric)
            slope, intercept = np.polyfit(np.log(w), np.log(mu), 1)
            assert f["status"] == "ok"
            assert f["slope"] == pytest.approx(slope, abs=1e-12)
            assert f["intercept"] == pytest.approx(intercept, abs=1e-12)
            assert f["slope_ci_low"] < f["slope"] < f["slope_ci_high"]
            assert f["slope_ci_low"] <= true_slope <= f["slope_ci_high"], (par, metric)
            assert f["n_widths"] == len(WIDTHS) and f["min_seeds"] == 8
            assert f["widths_used"] == ";".join(map(str, WIDTHS))
    assert {
        "metric",
        "slope",
        "slope_ci_low",
        "slope_ci_high",
        "intercept",
        "r2",
        "n_widths",
    } <= set(fits.columns)


def test_verdict_wording(synthetic):
    _, fits = synthetic
    lines = verdict(fits)
    text = "\n".join(lines)

    def line(par: str, start: str) -> str:
        prefix = f"[param={par}] {start}"
        return next(x for x in lines if x.startswith(prefix))

    ntk = line("ntk", "kernel_drift:")
    assert "falls with width (CI < 0)" in ntk
    assert "widths 512-2048: falls" in ntk  # the asymptotic fit: the widest half
    assert "expected -0.5 (heuristic: relu, coherent flips; Lee et al.: a bound): consistent" in ntk
    assert "all 6 widths -0.49" in ntk
    ntk_verdict = line("ntk", "verdict:")
    assert ntk_verdict.startswith("[param=ntk] verdict: claim supported")
    assert "the kernel tends to constant (kernel_drift slope -0.5" in ntk_verdict
    assert "consistent with the expected -0.5" in ntk_verdict
    assert "network approaches its linearisation (lin_error_test slope" in ntk_verdict
    std = line("standard", "kernel_drift:")
    assert "falls with width" in std and "no expected rate for parameterization standard" in std
    lin = line("standard", "lin_error_test:")
    assert "falls with width" in lin
    mf = line("mean_field", "kernel_drift:")
    assert "does not fall with width (CI contains 0)" in mf
    assert "expected 0 (rate: O(1) in mean_field (Mei et al. 2018)): consistent" in mf
    mf_verdict = line("mean_field", "verdict:")
    assert "as expected for the mean_field negative control" in mf_verdict
    assert "no trend of the kernel drift is resolved" in mf_verdict
    assert "UNEXPECTED" not in text
    assert "loss" not in text  # losses are fitted (fits.csv) but get no verdict
    assert "warning" not in text  # 8 seeds per width


def test_level_excludes_small_widths_and_unavailable_fit_is_a_row():
    df = _synthetic()
    # ntk drift = width**-0.5: below 0.1 only for widths > 100
    fits = fit_power_laws(df, BY, ["kernel_drift"], level=0.1)
    ntk = fits[fits["model.parameterization"] == "ntk"].iloc[0]
    assert ntk["status"] == "ok" and ntk["widths_excluded"] == "64"
    assert ntk["widths_used"] == "128;256;512;1024;2048" and ntk["n_widths"] == 5
    # mean_field drift ~0.2 everywhere: no width below 0.1 -> no power law, but O(1) at every
    # width is itself the negative control's expected answer
    mf = fits[fits["model.parameterization"] == "mean_field"].iloc[0]
    assert mf["status"] == "above level" and math.isnan(mf["slope"])
    assert "level 0.1 at every width (0.19" in mf["reason"]
    lines = verdict(fits)
    assert any(
        x.startswith("[param=mean_field] kernel_drift: mean kernel_drift >=")
        and x.endswith("O(1), does not fall into the lazy regime")
        for x in lines
    )
    assert any(
        x.startswith("[param=mean_field] verdict: as expected for the mean_field")
        and "kernel_drift stays O(1) at every width" in x
        for x in lines
    )
    # an ntk group whose drift stays O(1) does not support the claim
    ntk_big = df[df["model.parameterization"] == "ntk"].assign(kernel_drift=1.0)
    lines = verdict(fit_power_laws(ntk_big, BY, ["kernel_drift"], level=0.3))
    assert any("verdict: claim not supported: kernel_drift stays O(1)" in x for x in lines)
    # a mixed group (some widths above, fewer than 2 below) is still "not available"
    few = df[(df["model.parameterization"] == "ntk") & df["model.width"].isin([64, 2048])]
    f1 = fit_power_laws(few, BY, ["kernel_drift"], level=0.1).iloc[0]
    assert f1["status"] == "not available" and "1 width(s)" in f1["reason"]
    # only two usable widths: a fit, flagged
    two = df[df["model.width"].isin([512, 1024])]
    f2 = fit_power_laws(two, BY, ["kernel_drift"]).iloc[0]
    assert f2["status"] == "ok" and "only 2 widths" in f2["reason"]


def test_no_width_key_gives_no_fits():
    df = _synthetic()
    fits = fit_power_laws(df, ["model.parameterization"], ["kernel_drift"])
    assert fits.empty and "slope" in fits.columns
    assert verdict(fits)[0].startswith("no fit")


def test_default_group_keys_ignore_seed_and_duplicates():
    df = _synthetic()
    df["width"] = df["model.width"]  # top-level shortcut duplicate
    df["dataset.seed"] = df["seed"]  # follows the seed
    df["train.lr"] = df["model.parameterization"].map(
        {"ntk": 1.0, "standard": 0.1, "mean_field": 2}
    )
    df["lr"] = df["train.lr"]  # top-level duplicate of a swept key
    df["tracking.uri"] = "sqlite:///x"
    df["paths.output_dir"] = [f"/out/{i}" for i in range(len(df))]  # per run
    df["model.depth"] = 1
    params = [c for c in df.columns if "." in c or c in ("width", "seed", "lr")]
    assert default_group_keys(df, params) == ["model.parameterization", "model.width"]
    # a second swept key crossed with the first one is kept
    both = pd.concat([df.assign(**{"train.steps": 100}), df.assign(**{"train.steps": 200})])
    both["paths.output_dir"] = [f"/out/{i}" for i in range(len(both))]
    keys = default_group_keys(both, [*params, "train.steps"])
    assert keys == ["model.parameterization", "train.steps", "model.width"]


def test_slope_metric_names_and_markdown():
    """The sweep's run gets a few scalar claim metrics for one group, none for several (their
    fits are a table); no metric name has a '/'."""
    df = _synthetic()
    fits = fit_power_laws(df, BY, ["kernel_drift"])
    assert slope_metric_names(fits, BY) == {}
    ntk = df[df["model.parameterization"] == "ntk"]
    single = fit_power_laws(ntk, ["model.width"], ["kernel_drift", "lin_error_test", "loss"])
    names = slope_metric_names(single, ["model.width"])
    assert set(names) == {
        "kernel_drift_slope",
        "kernel_drift_slope_ci_low",
        "kernel_drift_slope_ci_high",
        "lin_error_test_slope",
    }
    assert names["kernel_drift_slope"] == single.iloc[0]["asym_slope"]
    md = markdown_table(["a", "b"], [["x|y", 0.5], [1, float("nan")]])
    assert md.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 0.5 |", "| 1 | - |"]


# --------------------------------------------------------------------------------------------
# (2) a real MLflow SQLite store following the contract
# --------------------------------------------------------------------------------------------

STORE_WIDTHS = [64, 256, 1024]
STORE_SEEDS = [0, 1, 2]
STEPS = [0, 10, 20, 50]
STORE_METRICS = {  # name -> relative scale of the final value
    "kernel_drift": 1.0,
    "kernel_distance": 0.1,
    "lin_error_test": 0.5,
    "kernel_pred_error_test": 0.4,
    "param_movement": 0.2,
}


def _log_run(client, exp_id, parent_id, params, finals, status, start, failure=""):
    from mlflow.entities import Metric, Param, RunTag

    name = ",".join(
        f"{k}={params[k]}" for k in ("model.parameterization", "model.width", "seed") if k in params
    )
    run = client.create_run(exp_id, start_time=start, run_name=name)
    rid = run.info.run_id
    tags = {
        "mlflow.parentRunId": parent_id,
        "ntk_sweep.role": "job",
        "ntk_sweep.sweep_id": parent_id,
        "ntk_sweep.overrides": name,
        "ntk_sweep.output_dir": f"/tmp/multirun/{name}",
    }
    if failure:
        tags["ntk_sweep.failure_reason"] = failure
    ts = int(time.time() * 1000)
    metrics = []
    for key, final in finals.items():
        for step in STEPS:
            value = final * step / STEPS[-1] if key != "loss" else final + 1.0 / (1 + step)
            metrics.append(Metric(key, value, ts + step, step))
    client.log_batch(
        rid,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(rid, status)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store per module: an old sweep, the latest sweep (ntk + mean_field x 3 widths
    x 3 seeds, plus a FAILED and a KILLED child)."""
    import mlflow

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp_id = client.create_experiment("ntk-sweep", artifact_location=str(root / "artifacts"))
    t0 = int(time.time() * 1000) - 3_600_000

    def base_params(par, w, s):
        return {
            "model.width": w,
            "width": w,
            "model.depth": 1,
            "model.activation": "relu",
            "model.parameterization": par,
            "model.sigma_b": 1.0,
            "train.lr": 1.0,
            "train.steps": STEPS[-1],
            "dataset.name": "paper_toy",
            "dataset.seed": s,
            "seed": s,
            "tracking.uri": uri,
            "paths.output_dir": f"/tmp/multirun/{par}/{w}/{s}",
        }

    old = client.create_run(
        exp_id, start_time=t0, run_name="sweep-old", tags={"ntk_sweep.role": "sweep"}
    )
    old_id = old.info.run_id
    for s in (0, 1):
        for w in (64, 128):
            _log_run(
                client, exp_id, old_id, base_params("standard", w, s),
                {"kernel_drift": 0.2 * (64 / w)}, "FINISHED", t0 + 1,
            )  # fmt: skip
    client.set_terminated(old_id, "FINISHED")

    parent = client.create_run(
        exp_id, start_time=t0 + 1000, run_name="sweep-new", tags={"ntk_sweep.role": "sweep"}
    )
    parent_id = parent.info.run_id
    rng = np.random.default_rng(0)
    finals: dict[tuple[str, int], dict[str, list[float]]] = {}
    child_ids = []
    for par, slope in (("ntk", -0.5), ("mean_field", 0.0)):
        for w in STORE_WIDTHS:
            for s in STORE_SEEDS:
                noise = np.exp(0.1 * rng.standard_normal())
                base = (1.2 * w**-0.5 if slope else 0.1) * noise
                vals = {k: scale * base for k, scale in STORE_METRICS.items()}
                vals["loss"] = 0.01 * noise
                vals["test_loss"] = 0.02 * noise
                for k, v in vals.items():
                    finals.setdefault((par, w), {}).setdefault(k, []).append(v)
                child_ids.append(
                    _log_run(
                        client,
                        exp_id,
                        parent_id,
                        base_params(par, w, s),
                        vals,
                        "FINISHED",
                        t0 + 2000,
                    )  # fmt: skip
                )
    failed = _log_run(
        client, exp_id, parent_id, base_params("ntk", 256, 3),
        {"kernel_drift": 50.0, "loss": 1e30}, "FAILED", t0 + 3000,
        failure="divergence: loss 1e30 at step 50",
    )  # fmt: skip
    killed = _log_run(
        client, exp_id, parent_id, base_params("mean_field", 1024, 3),
        {"kernel_drift": 0.3}, "KILLED", t0 + 3000,
    )  # fmt: skip
    client.set_terminated(parent_id, "FINISHED")  # as the app's on_multirun_end does
    return {
        "uri": uri,
        "root": root,
        "client": client,
        "exp_id": exp_id,
        "parent_id": parent_id,
        "old_id": old_id,
        "child_ids": child_ids,
        "failed_id": failed,
        "killed_id": killed,
        "finals": finals,
    }


@pytest.fixture(scope="module")
def cli_run(store, tmp_path_factory):
    """`ntk-aggregate` with defaults (latest sweep) on the store, run once for the module."""
    out = tmp_path_factory.mktemp("agg") / "out"
    rc = main(["--tracking-uri", store["uri"], "--out", str(out)])
    return rc, out


def test_cli_writes_outputs(store, cli_run, capsys):
    rc, out = cli_run
    assert rc == 0
    for name in (
        "summary.csv",
        "summary.md",
        "fits.csv",
        "drift_vs_width.png",
        "linearization_error_vs_width.png",
        "drift_vs_step.png",
    ):
        assert (out / name).stat().st_size > 0, name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = pd.read_csv(out / "summary.csv")
    # default grouping: the swept parameterization splits, duplicates / seed-derived /
    # per-run params do not
    assert list(summary.columns[:2]) == ["model.parameterization", "model.width"]
    assert len(summary) == 2 * len(STORE_WIDTHS)
    assert (summary["n_seeds"] == 3).all()
    for m in STORE_METRICS:
        assert (summary[f"{m}_ci_low"] <= summary[f"{m}_mean"]).all()
        assert (summary[f"{m}_mean"] <= summary[f"{m}_ci_high"]).all()
    failed = summary[(summary["model.parameterization"] == "ntk") & (summary["model.width"] == 256)]
    assert failed["n_failed"].item() == 1 and failed["n_runs"].item() == 4
    assert "model.parameterization=ntk,model.width=256,seed=3 [FAILED: divergence" in (
        failed["excluded_runs"].item()
    )
    killed = summary[
        (summary["model.parameterization"] == "mean_field") & (summary["model.width"] == 1024)
    ]
    assert killed["n_killed"].item() == 1
    md = (out / "summary.md").read_text()
    header = "| metric | param | width | n | mean | std | 95% CI |"
    assert header in md
    assert f"95% CI: {MEAN_CI_METHOD}" in md and "welch-t on per-width seed means" in md
    assert "claim supported" in md
    assert "warning: 3 seed(s) at some width (< 5)" in md


def test_cli_slope_equals_polyfit_on_group_means(store, cli_run):
    _, out = cli_run
    fits = pd.read_csv(out / "fits.csv", keep_default_na=False, na_values=[""])
    required = {"metric", "slope", "slope_ci_low", "slope_ci_high", "intercept", "r2", "n_widths"}
    assert required <= set(fits.columns)
    assert len(fits) == 2 * 7  # 2 parameterizations x 7 default metrics
    for par in ("ntk", "mean_field"):
        for metric in ("kernel_drift", "lin_error_test"):
            f = fits[(fits["metric"] == metric) & (fits["model.parameterization"] == par)].iloc[0]
            means = [np.mean(store["finals"][(par, w)][metric]) for w in STORE_WIDTHS]
            slope = np.polyfit(np.log(STORE_WIDTHS), np.log(means), 1)[0]
            assert f["slope"] == pytest.approx(slope, abs=1e-9)
            assert f["n_widths"] == 3 and f["slope_ci_low"] <= f["slope"] <= f["slope_ci_high"]


def test_cli_stdout_lists_failed_runs_and_verdict(store, tmp_path, capsys):
    rc = main(
        ["--tracking-uri", store["uri"], "--sweep", store["parent_id"], "--out",
         str(tmp_path / "o"), "--n-boot", "50", "--no-log", "--metrics", "kernel_drift"]
    )  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    out = captured.out
    # the deprecated flag is still accepted, with one warning line that it is ignored
    assert [ln for ln in captured.err.splitlines() if "warning" in ln] == [
        "warning: --n-boot ignored (no bootstrap); the flags will be removed"
    ]
    assert "model.parameterization=ntk,model.width=256,seed=3 [FAILED" in out
    assert "param=ntk:\n  kernel_drift: slope" in out
    assert "as expected for the mean_field negative control" in out
    assert "Runs per group" in out and "Verdict" in out
    assert not (tmp_path / "o" / "linearization_error_vs_width.png").exists()


def test_cli_logs_artifacts_and_slopes_on_parent(store, cli_run):
    client = store["client"]
    _, out = cli_run
    names = {Path(f.path).name for f in client.list_artifacts(store["parent_id"], "aggregate")}
    assert {"summary.csv", "summary.md", "fits.csv", "drift_vs_width.png"} <= names
    assert {"linearization_error_vs_width.png", "drift_vs_step.png"} <= names
    run = client.get_run(store["parent_id"])
    assert not run.data.metrics  # two groups: no scalar slopes, no '/' in metric names
    tables = json.loads(run.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "aggregate/fits.json", "type": "table"} in tables
    table = pd.read_json(
        client.download_artifacts(store["parent_id"], "aggregate/fits.json"), orient="split"
    )
    fits = pd.read_csv(out / "fits.csv")
    assert len(table) == len(fits) and list(table.columns) == list(fits.columns)
    ntk = fits[(fits["metric"] == "kernel_drift") & (fits["model.parameterization"] == "ntk")]
    ntk_row = table[(table["metric"] == "kernel_drift") & (table["group"] == "param=ntk")]
    assert ntk_row["slope"].item() == pytest.approx(ntk["slope"].item())
    headline = run.data.tags["ntk_sweep.verdict"].splitlines()
    assert [h.split("]")[0] for h in headline] == ["[param=mean_field", "[param=ntk"]
    assert headline[1] in run.data.tags["mlflow.note.content"]
    # nothing logged on the older sweep
    assert not client.get_run(store["old_id"]).data.metrics


def test_params_cast_and_older_sweep_by_id(store, tmp_path):
    res = aggregate_sweep(
        store["uri"], None, store["old_id"], tmp_path / "old", log_to_mlflow=False
    )
    assert res.sweep_id == store["old_id"] and res.experiment == "ntk-sweep"
    assert res.by == ["model.width"]
    assert res.metrics == ["kernel_drift"]  # the only default metric the old sweep logged
    assert any("default metrics not logged" in n for n in res.notes)
    assert res.runs["model.width"].dtype.kind == "i"
    assert res.runs["train.lr"].dtype.kind == "f"
    assert res.runs["seed"].dtype.kind == "i"
    assert pd.api.types.is_string_dtype(res.runs["model.parameterization"])
    assert list(res.summary["model.width"]) == [64, 128]
    f = res.fits.iloc[0]
    assert f["slope"] == pytest.approx(-1.0) and "only 2 widths" in f["reason"]


def test_filter_without_sweep_creates_aggregate_run(store, tmp_path):
    flt = "params.`model.parameterization` = 'ntk'"
    res = aggregate_sweep(store["uri"], "ntk-sweep", None, tmp_path / "f", filter_string=flt)
    assert res.sweep_id is None
    assert len(res.runs) == 3 * 3 + 1  # sweep parents never selected
    run = store["client"].get_run(res.logged_run_id)
    assert run.info.run_name == "aggregate" and run.data.tags["ntk_sweep.role"] == "aggregate"
    assert "kernel_drift_slope" in run.data.metrics  # one group: its claim metrics
    assert "summary.csv" in {
        Path(f.path).name for f in store["client"].list_artifacts(res.logged_run_id, "aggregate")
    }


def test_default_uri_from_env_and_default_out_dir(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.chdir(tmp_path)
    assert main(["--no-log", "--metrics", "kernel_drift,loss"]) == 0
    out = tmp_path / "outputs" / "aggregate" / store["parent_id"]
    assert (out / "summary.csv").exists() and (out / "fits.csv").exists()


# --------------------------------------------------------------------------------------------
# (3) bad input: one line on stderr, exit code 2, nothing written
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--experiment", "nope"],
            "--experiment: no experiment named 'nope'; available: Default, ntk-sweep",
        ),
        (["--sweep", "0" * 32], "--sweep: no run with id '00000000"),
        (["--by", "foo"], "--by: 'foo' is not a param of the selected runs; available: "),
        (["--by", "seed"], "--by: 'seed' is the replicate key"),
        (["--metrics", "kernel_drift,nope"], "--metrics: 'nope' is not a metric of the selected"),
        (["--filter", "params.`model.width` = '999'"], "empty selection: no run matches"),
        (["--filter", "this is not a filter"], "--filter: "),
        (["--sweep", "CHILD"], "--sweep: run CHILD is a job of sweep PARENT: use --sweep PARENT"),
        (["--level", "0"], "--level: must be > 0"),
    ],
)
def test_bad_input_exits_2(store, tmp_path, capsys, args, message):
    child, parent = store["child_ids"][0], store["parent_id"]
    args = [a.replace("CHILD", child) for a in args]
    message = message.replace("PARENT", parent)
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        main(["--tracking-uri", store["uri"], "--out", str(out), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("error: " + message.replace("CHILD", child)), errors[0]
    assert not out.exists()


def test_missing_store_is_an_error_and_is_not_created(tmp_path, capsys):
    db = tmp_path / "absent.db"
    with pytest.raises(SystemExit) as exc:
        main(["--tracking-uri", f"sqlite:///{db}"])
    assert exc.value.code == 2
    assert f"error: no MLflow store at {db}" in capsys.readouterr().err
    assert not db.exists()
    with pytest.raises(AggregateError):
        aggregate_sweep(f"sqlite:///{db}", "ntk-sweep")
    db.write_bytes(b"")  # truncated to 0 bytes: nothing to read, and no tables created in it
    with pytest.raises(AggregateError, match=r"no MLflow store at .* \(an empty file\)"):
        aggregate_sweep(f"sqlite:///{db}", "ntk-sweep")
    assert db.stat().st_size == 0


# --------------------------------------------------------------------------------------------
# (3) honest intervals, asymptotic fits, verdict consistency, deduplication
# --------------------------------------------------------------------------------------------

SIM_WIDTHS = np.array([64.0, 256.0, 1024.0])


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_nominal_95_intervals_cover_the_truth_in_simulated_sweeps(n_seeds):
    """2000 simulated 3-widths x n-seeds sweeps, lognormal seed noise: the group-mean t interval
    and the slope interval cover the true values in 90-98 % of them (the percentile bootstrap
    they replace covered 74 % at n = 3)."""
    rng = np.random.default_rng(20261203 + n_seeds)
    n_sim, slope, c, sigma = 2000, -0.5, 1.2, 0.2
    x = np.log(SIM_WIDTHS)
    values = np.exp(
        np.log(c * SIM_WIDTHS**slope)[None, :, None]
        + sigma * rng.standard_normal((n_sim, len(x), n_seeds))
    )
    true_means = c * SIM_WIDTHS**slope * np.exp(sigma**2 / 2)  # E of the lognormal
    means, var = values.mean(axis=-1), values.var(axis=-1, ddof=1)
    lo, hi = t_interval(means, var / n_seeds, n_seeds - 1)
    mean_cover = float(((lo <= true_means) & (true_means <= hi)).mean())
    # a positive metric's interval: t on the log of the mean (delta method), back-transformed
    counts = np.full_like(means, n_seeds)
    _, log_lo, log_hi, _ = log_contrast(
        np.ones(1), means[..., None], var[..., None], counts[..., None]
    )
    lo, hi = np.exp(log_lo), np.exp(log_hi)
    log_cover = float(((lo <= true_means) & (true_means <= hi)).mean())
    assert 0.90 <= log_cover <= 0.98, log_cover
    assert (lo > 0).all()
    est, s_lo, s_hi, dof = log_contrast(
        slope_coefficients(x), means, var, np.full_like(means, n_seeds)
    )
    slope_cover = float(((s_lo <= slope) & (slope <= s_hi)).mean())
    assert 0.90 <= mean_cover <= 0.98, mean_cover
    assert 0.90 <= slope_cover <= 0.98, slope_cover
    # the vectorised intervals are the pipeline's: one simulated sweep through the public API
    rows = [
        {"model.width": w, "seed": s, "status": "FINISHED", "kernel_drift": values[0, j, s]}
        for j, w in enumerate(SIM_WIDTHS)
        for s in range(n_seeds)
    ]
    df = pd.DataFrame(rows)
    summary = summarize(df, ["model.width"], ["kernel_drift"])
    np.testing.assert_allclose(summary["kernel_drift_ci_low"], lo[0], rtol=1e-12)
    np.testing.assert_allclose(summary["kernel_drift_ci_high"], hi[0], rtol=1e-12)
    assert (summary["ci_method"] == MEAN_CI_METHOD).all()
    scipy_stats = pytest.importorskip("scipy.stats")
    ref = scipy_stats.t.interval(
        0.95, n_seeds - 1, loc=means[0, 0], scale=np.sqrt(var[0, 0] / n_seeds)
    )
    linear = summarize(
        df.assign(kernel_drift=df["kernel_drift"] - 1.0), ["model.width"], ["kernel_drift"]
    )
    assert linear["kernel_drift_ci_low"].iloc[0] == pytest.approx(ref[0] - 1.0, rel=1e-12)
    fit = fit_power_laws(df, ["model.width"], ["kernel_drift"], level=10.0).iloc[0]
    assert fit["slope"] == pytest.approx(np.polyfit(x, np.log(means[0]), 1)[0], rel=1e-12)
    assert (fit["slope_ci_low"], fit["slope_ci_high"]) == pytest.approx((s_lo[0], s_hi[0]))
    assert fit["slope_dof"] == pytest.approx(dof[0])
    # Welch-Satterthwaite dof lie between one width's (n - 1) and all widths' pooled dof
    assert ((dof >= n_seeds - 1 - 1e-9) & (dof <= len(x) * (n_seeds - 1) + 1e-9)).all()


def test_asymptotic_fit_local_slopes_and_window_note():
    """drift = w^-1 (1 + 40/w): the local slope tends to -1 from below; the asymptotic fit is
    the widest half, local slopes are log ratios, and the window is flagged as not asymptotic."""
    widths = [32, 64, 128, 256, 512, 1024, 2048, 4096]
    rng = np.random.default_rng(3)
    rows = []
    for w in widths:
        for s in range(4):
            value = 2.0 / w * (1 + 40 / w) * np.exp(0.01 * rng.standard_normal())
            row = {"model.width": w, "model.activation": "erf", "seed": s, "status": "FINISHED"}
            rows.append({**row, "kernel_drift": value})
    df = pd.DataFrame(rows)
    fit = fit_power_laws(df, ["model.width"], ["kernel_drift"], level=1.0).iloc[0]
    means = df.groupby("model.width")["kernel_drift"].mean()
    top = widths[-4:]
    asym = np.polyfit(np.log(top), np.log(means.loc[top].to_numpy()), 1)[0]
    assert fit["asym_slope"] == pytest.approx(asym, rel=1e-10)
    assert fit["asym_widths"] == "512;1024;2048;4096"
    assert fit["asym_slope"] > fit["slope"]  # the all-widths fit is biased by small widths
    first = np.log(means.loc[64] / means.loc[32]) / np.log(2)
    assert fit["local_slopes"].startswith(f"32-64: {first:.2f} [")
    assert fit["local_slopes"].count(";") == len(widths) - 2
    assert fit["window"].startswith("not asymptotic: the all-widths slope")
    assert fit["expected_slope"] == -1.0
    lines = verdict(pd.DataFrame([fit]))
    assert any("kernel_drift: not asymptotic" in x for x in lines)
    assert any("widths 512-4096: " in x and "expected -1 (rate: smooth erf" in x for x in lines)
    # fewer than 4 widths: the asymptotic fit is the all-widths fit, said so
    few = fit_power_laws(df[df["model.width"] <= 128], ["model.width"], ["kernel_drift"], 1.0)
    few = few.iloc[0]
    assert few["asym_slope"] == few["slope"] and "only 3 widths" in few["window"]


@pytest.mark.parametrize(
    ("metric", "activation", "parameterization", "expected", "optimizer"),
    [
        ("kernel_drift", "relu", "ntk", -0.5, None),
        ("kernel_drift_test", "erf", "ntk", -1.0, None),
        ("kernel_drift", "tanh", None, -1.0, None),
        ("kernel_distance", "relu", "ntk", -1.0, None),
        ("kernel_distance", "linear", "ntk", -2.0, None),
        ("lin_error_test", "erf", "ntk", -1.0, None),
        ("param_movement", "erf", "ntk", -0.5, None),
        ("param_movement_layer1", "relu", "ntk", -0.5, None),
        ("kernel_drift", "relu", "mean_field", 0.0, None),
        ("kernel_drift", "relu", "standard", math.nan, None),
        ("loss", "relu", "ntk", math.nan, None),
        ("kernel_drift", "mystery", "ntk", math.nan, None),
        ("kernel_drift", "relu", "ntk", -0.5, "momentum"),
        ("lin_error_test", "erf", "ntk", -1.0, "sgd"),
        ("kernel_drift", "relu", "ntk", math.nan, "adam"),
        ("param_movement", "erf", "ntk", math.nan, "adam"),
    ],
)
def test_expected_rate_per_setting(metric, activation, parameterization, expected, optimizer):
    slope, source = expected_rate(metric, activation, parameterization, optimizer)
    if math.isnan(expected):
        assert math.isnan(slope) and source.startswith("no expected rate")
    else:
        assert slope == expected and source


def _fake_fit(metric, par, lo, hi, expected, act="relu"):
    mid = (lo + hi) / 2
    row = {c: math.nan for c in FIT_COLUMNS}
    row.update(
        metric=metric,
        group=f"model.parameterization={par}, case={lo},{hi}",
        **{"model.parameterization": par},
        status="ok",
        slope=mid,
        slope_ci_low=lo,
        slope_ci_high=hi,
        slope_dof=4.0,
        asym_slope=mid,
        asym_slope_ci_low=lo,
        asym_slope_ci_high=hi,
        n_widths=3,
        min_seeds=5,
        widths_used="64;256;1024",
        asym_widths="64;256;1024",
        expected_slope=expected,
        expected_source=f"test {act}",
        comparison=compare_with_expected(lo, hi, expected),
        outcome="consistent" if lo <= expected <= hi else "inconsistent",
        window="",
        reason="",
    )
    return row


CIS = [(-1.3, -0.8), (-0.7, -0.3), (-0.4, -0.05), (-0.3, 0.2), (0.1, 0.4)]


@pytest.mark.parametrize("par", ["ntk", "mean_field"])
def test_every_verdict_clause_follows_from_its_slope_ci(par):
    """Synthetic fits: for every drift CI x lin CI, each clause's direction and its comparison
    with the expected rate match the CI (the mean_field verdict once said "approaches its
    linearisation" at a flat lin-error slope)."""
    expected = 0.0 if par == "mean_field" else -0.5
    rows = []
    for d in CIS:
        for li in CIS:
            group = f"model.parameterization={par}, d={d}, l={li}"
            for m, ci in (("kernel_drift", d), ("lin_error_test", li)):
                rows.append({**_fake_fit(m, par, *ci, expected), "group": group})
    lines = verdict(pd.DataFrame(rows))
    words = {"consistent": "consistent with", "faster": "faster than", "slower": "slower than"}
    outcome = {"consistent": "consistent", "faster": "inconsistent", "slower": "inconsistent"}
    for d in CIS:
        for li in CIS:
            prefix = f"[model.parameterization={par}, d={d}, l={li}] "
            mine = [x[len(prefix) :] for x in lines if x.startswith(prefix)]
            v = next(x for x in mine if x.startswith("verdict:"))
            drift_clause, lin_clause = v.split("; the network ")
            d_trend, l_trend = slope_trend(*d), slope_trend(*li)
            assert ("tends to constant" in drift_clause) == (d_trend == "falls"), v
            assert ("no trend of the kernel drift" in drift_clause) == (d_trend == "flat"), v
            assert ("moves more with width" in drift_clause) == (d_trend == "grows"), v
            assert ("approaches its linearisation" in lin_clause) == (l_trend == "falls"), v
            assert ("not shown to approach" in lin_clause) == (l_trend == "flat"), v
            assert ("moves away" in lin_clause) == (l_trend == "grows"), v
            for clause, ci in ((drift_clause, d), (lin_clause, li)):
                assert f"[{ci[0]:.2f}, {ci[1]:.2f}]" in clause
                assert words[compare_with_expected(*ci, expected)] in clause, clause
            for m, ci in (("kernel_drift", d), ("lin_error_test", li)):
                line = next(x for x in mine if x.startswith(f"{m}:"))
                trend_text = {
                    "falls": "falls with width",
                    "flat": "does not fall with width",
                    "grows": "grows with width",
                }
                assert trend_text[slope_trend(*ci)] in line
                assert f": {outcome[compare_with_expected(*ci, expected)]} with" in line
            if par == "mean_field":
                assert ("UNEXPECTED" in v) == (d_trend == "falls")
            elif d_trend == "falls":
                assert v.startswith("verdict: claim supported" if l_trend == "falls" else
                                    "verdict: claim partly supported")  # fmt: skip
            else:
                assert "claim supported" not in v and "partly" not in v


def test_verdict_warns_below_five_seeds_and_comparison_words():
    rows = [_fake_fit("kernel_drift", "ntk", -0.7, -0.3, -0.5)]
    rows[0]["min_seeds"] = 3
    lines = verdict(pd.DataFrame(rows))
    assert any("warning: 3 seed(s) at some width (< 5)" in x for x in lines)
    assert compare_with_expected(-0.7, -0.3, -0.5) == "consistent"
    assert compare_with_expected(-1.2, -0.8, -0.5) == "faster"
    assert compare_with_expected(-0.4, -0.1, -0.5) == "slower"
    assert compare_with_expected(math.nan, -0.1, -0.5) == ""


def test_duplicate_config_hashes_count_once(tmp_path):
    """A single run and a sweep job with the same config hash (tag ntk_sweep.config_hash, as
    the app records it) count once: the latest FINISHED wins, a later FAILED copy does not."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp_id = client.create_experiment("ntk-sweep", artifact_location=str(tmp_path / "art"))
    t0 = int(time.time() * 1000) - 100_000

    def log(w, s, drift, start, status="FINISHED", chash=None):
        run = client.create_run(exp_id, start_time=start, run_name=f"w={w} s={s}")
        tags = {"ntk_sweep.role": "job", "ntk_sweep.config_hash": chash or f"h{w}-{s}"}
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("kernel_drift", drift, start, 0)],
            params=[Param("model.width", str(w)), Param("seed", str(s))],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.set_terminated(run.info.run_id, status)

    for w in (64, 256):
        for s in (0, 1, 2):
            log(w, s, 0.1 * (64 / w) ** 0.5 * (1 + 0.1 * s), t0 + 10)
    log(64, 0, 0.5, t0)  # an older single run with seed 0's config: replaced
    log(64, 0, 0.13, t0 + 20)  # the latest FINISHED copy wins
    log(64, 0, 9.0, t0 + 30, status="FAILED")  # a later failed copy is not counted
    result = aggregate_sweep(
        uri, "ntk-sweep", filter_string="tags.`ntk_sweep.role` = 'job'", write=False
    )
    summary = result.summary.set_index("model.width")
    assert list(summary["n_seeds"]) == [3, 3] and list(summary["n_runs"]) == [3, 3]
    assert summary.loc[64, "n_failed"] == 0
    assert summary.loc[64, "kernel_drift_mean"] == pytest.approx((0.13 + 0.11 + 0.12) / 3)
    assert result.n_duplicates == 3
    report = result.report()
    assert "Duplicate configs (same config hash; the latest FINISHED run kept): 3 dropped" in report
    assert any("deduplicated by config hash" in n for n in result.notes)


AXIS_VALUES = {"train.lr": [0.1, 0.5, 1.2, 2.4], "model.alpha": [0.1, 0.3, 1.0, 3.0]}


@pytest.fixture(scope="module")
def axis_store(tmp_path_factory) -> str:
    """One SQLite store, one experiment per swept axis (named after it), see _log_axis_sweep."""
    import mlflow

    root = tmp_path_factory.mktemp("axis")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    for axis in AXIS_VALUES:
        exp_id = client.create_experiment(axis, artifact_location=str(root / axis))
        _log_axis_sweep(client, exp_id, axis)
    return uri


def _log_axis_sweep(client, exp_id: str, axis: str) -> None:
    """A sweep along ``axis`` at fixed width 1024, 3 seeds, as lr_sweep logs it: the largest
    value diverges (FAILED, a long reason, loss stored as MLflow's 1.8e308), one finished run
    has an infinite lin error, the phase tags of the lr helper on the lazy runs."""
    from mlflow.entities import Metric, Param, RunTag

    t0 = int(time.time() * 1000) - 100_000
    parent = client.create_run(exp_id, start_time=t0, tags={"ntk_sweep.role": "sweep"}).info
    values = AXIS_VALUES[axis]
    for i, v in enumerate(values):
        for s in range(3):
            run = client.create_run(exp_id, start_time=t0 + 1, run_name=f"{axis}={v} s={s}")
            failed = i == len(values) - 1
            drift = 0.01 * (1 + i) ** 2 * (1 + 0.05 * s)
            finals = {"kernel_drift": drift, "loss": 1.8e308 if failed else 0.01 / (1 + s)}
            finals["lin_error_test"] = 1.8e308 if (i == 2 and s == 0) else 0.5 * drift
            finals["lr_max_stable"] = 0.91
            tags = {
                "mlflow.parentRunId": parent.run_id,
                "ntk_sweep.role": "job",
                "ntk_sweep.config_hash": f"{v}-{s}",
            }
            if failed:
                tags["ntk_sweep.failure_reason"] = "loss diverged at step 7: " + "x" * 300
            if i < 2:
                tags["ntk_sweep.phase_net"] = "lazy"
            params = {"model.width": "1024", axis: str(v), "seed": str(s)}
            client.log_batch(
                run.info.run_id,
                metrics=[Metric(k, x, t0, 0) for k, x in finals.items()],
                params=[Param(k, x) for k, x in params.items()],
                tags=[RunTag(k, x) for k, x in tags.items()],
            )
            client.set_terminated(run.info.run_id, "FAILED" if failed else "FINISHED")
    client.set_terminated(parent.run_id, "FINISHED")


@pytest.mark.parametrize("axis", list(AXIS_VALUES))
def test_axis_sweep_aggregates_along_the_swept_axis(axis_store, tmp_path, capfd, axis):
    """lr_sweep / an alpha sweep at fixed width: one line per value, the diverged runs in one
    line, no line over 200 characters, nothing on stderr, a drift-vs-axis PNG."""
    from matplotlib.image import imread

    out = tmp_path / "out"
    capfd.readouterr()  # the store's creation messages
    args = ["--tracking-uri", axis_store, "--experiment", axis, "--out", str(out), "--no-log"]
    args += ["--step-metric", ""]  # the per-step view is tested above
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0
    numeric = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not numeric, [str(w.message) for w in numeric]  # overflow etc. would print raw
    captured = capfd.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert max(len(x) for x in lines) <= 200
    text = captured.out
    assert "no fit" not in text and "inf" not in text.replace("info", "")
    assert "e+307" not in text and "e+308" not in text
    short = axis.rsplit(".", 1)[-1]
    png = out / f"drift_vs_{short}.png"
    image = imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 200
    assert not (out / "drift_vs_width.png").exists()
    assert f"- swept axis {axis} at fixed model.width=1024: 4 values (no width fits)" in lines
    diverged = [x for x in lines if x.startswith("- diverged:")]
    assert diverged == [
        f"- diverged: 3 run(s) FAILED at {axis} = {_v(AXIS_VALUES[axis][-1])} (x3); "
        "e.g. loss diverged at step 7: " + "x" * 52 + "..."
    ]
    first = next(x for x in lines if x.startswith(f"- {short}={_v(AXIS_VALUES[axis][0])}: "))
    assert "3/3 finished, lr phase: network lazy x3" in first
    mean = np.mean([0.01, 0.0105, 0.011])
    assert f"kernel_drift {mean:.3g} [" in first
    third = next(x for x in lines if x.startswith(f"- {short}={_v(AXIS_VALUES[axis][2])}: "))
    if axis == "train.lr":
        assert "- 2N/lambda_max of the initial NTK (lr_max_stable, median): 0.91" in lines
        assert "lr/lr_max 1.32 (above 2N/lambda_max)" in third
        assert f"- kernel_drift vs {axis}: kernel_drift ~ {axis}^" in text
        assert "over 3 values; no theory for the trend along train.lr" in text
    else:
        assert "lr/lr_max" not in text
        # lazy training: drift ~ 1/alpha (Chizat & Bach 2019); this store's drift grows instead
        trend = next(x for x in lines if x.startswith(f"- kernel_drift vs {axis}: "))
        assert "expected -1 (1/alpha (lazy training, Chizat & Bach 2019)): inconsistent" in trend
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary[axis]) == AXIS_VALUES[axis]
    lin = summary.loc[2, "lin_error_test_n"]
    assert lin == 2  # MLflow's 1.8e308 stand-in for inf is not a value


def _v(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def test_kink_note_only_for_paper_toy_without_bias():
    runs = pd.DataFrame(
        {"dataset.name": ["paper_toy", "paper_toy", "sine"], "model.sigma_b": [0.0, 1.0, 0.0]}
    )
    note = kink_note(runs, ["kernel_drift", "lin_error_test"])
    assert note.startswith("1 run(s) are paper_toy with sigma_b = 0") and "lin_error_test" in note
    assert kink_note(runs, ["kernel_drift"]) == ""  # no test metric: nothing to warn about
    assert kink_note(runs.iloc[1:], ["lin_error_test"]) == ""


# The package's layers: an import may only go down this list (no cycles), and importing the
# package pulls in neither MLflow nor matplotlib (loaded inside the functions that use them).
LAYERS = ["common", "rates", "statistics", "verdict", "loading", "plots", "report", "cli"]
ALLOWED = {
    "common": set(),
    "rates": set(),
    "statistics": {"common", "rates"},
    "verdict": {"common", "rates", "statistics"},
    "loading": {"common"},
    "plots": {"common"},
    "report": {"common", "rates", "statistics", "verdict", "loading", "plots"},
    "cli": {"common", "report"},
}


def test_aggregate_submodules_import_only_lower_layers_and_no_heavy_libraries():
    import ast
    import subprocess
    import sys

    import ntk_sweep.aggregate as pkg

    folder = Path(pkg.__file__).parent
    assert sorted(p.stem for p in folder.glob("*.py")) == sorted([*LAYERS, "__init__", "__main__"])
    for name in LAYERS:
        tree = ast.parse((folder / f"{name}.py").read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        mods = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
        siblings = {m.rsplit(".", 1)[-1] for m in mods if m.startswith("ntk_sweep.aggregate.")}
        assert siblings <= ALLOWED[name], (name, siblings - ALLOWED[name])
        heavy = {m.split(".")[0] for m in mods} & {"matplotlib", "mlflow", "hydra"}
        assert not heavy, (name, heavy)
    code = (
        "import sys, ntk_sweep.aggregate; "
        "print(sorted(m for m in ('matplotlib', 'mlflow', 'hydra') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lr_max_median_only_when_the_runs_agree():
    """2N/lambda_max values orders of magnitude apart (max/min > 10) have no median: the range."""
    from ntk_sweep.aggregate import axis_verdict

    runs = pd.DataFrame(
        {"train.lr": [0.1, 0.1, 1.0, 1.0], "seed": [0, 1, 0, 1], "status": "FINISHED",
         "kernel_drift": [0.01, 0.011, 0.1, 0.12], "lr_max_stable": [0.05, 0.06, 5.0, 6.0]}
    )  # fmt: skip
    assert math.isnan(lr_max_stable(runs))
    assert lr_max_stable(runs.iloc[:2]) == pytest.approx(0.055)
    summary = summarize(runs, ["train.lr"], ["kernel_drift"])
    lines = axis_verdict(runs, summary, "train.lr", ["train.lr"], ["kernel_drift"])
    assert any("ranges 0.05 to 6 over the runs" in x for x in lines)
    assert not any("median" in x and "2N/lambda_max" in x and "ranges" not in x for x in lines)
    assert any(x.startswith("lr=0.1: ") and "lr/lr_max 1.82 (above" in x for x in lines)


# --------------------------------------------------------------------------------------------
# the report: headline first, tables in 120 columns, equal metrics once, figures for 1-6 groups
# --------------------------------------------------------------------------------------------


def _groups_frame(n_groups: int, n_seeds: int = 3, seed: int = 0) -> pd.DataFrame:
    """A synthetic sweep of ``n_groups`` (activation x alpha) groups over 4 widths; a long
    alpha-less group label; lin_error_test == kernel_pred_error_test, as under GD + MSE."""
    rng = np.random.default_rng(seed)
    settings = [(a, al) for a in ("relu", "erf") for al in (math.nan, 0.1, 10.0)][:n_groups]
    rows = []
    for act, alpha in settings:
        for w in (64, 256, 1024, 4096):
            for s in range(n_seeds):
                drift = 0.5 * w**-0.5 * np.exp(0.1 * rng.standard_normal())
                lin = 0.3 * drift
                rows.append({"model.activation": act, "model.alpha": alpha,
                             "model.parameterization": "ntk", "model.width": w, "seed": s,
                             "status": "FINISHED", "run_name": f"w={w} s={s}",
                             "kernel_drift": drift, "kernel_distance": drift**2,
                             "lin_error_test": lin,
                             "kernel_pred_error_test": lin * (1 + 1e-9)})  # fmt: skip
    return pd.DataFrame(rows)


def _result(n_groups: int):
    from ntk_sweep.aggregate.report import AggregateResult, equal_metrics

    df = _groups_frame(n_groups)
    by = ["model.activation", "model.alpha", "model.width"][: 3 if n_groups > 1 else 0] or [
        "model.width"
    ]
    metrics = ["kernel_drift", "kernel_distance", "lin_error_test", "kernel_pred_error_test"]
    if n_groups == 1:
        df = df.drop(columns=["model.alpha"])
    summary = summarize(df, by, metrics)
    fits = fit_power_laws(df, by, metrics)
    return AggregateResult(
        tracking_uri="sqlite://", experiment="ntk-sweep", experiment_id="0", sweep_id="abc",
        filter_string=None, by=by, metrics=metrics, level=0.3, runs=df, summary=summary,
        fits=fits, verdict=verdict(fits), same_as=equal_metrics(df, metrics),
    )  # fmt: skip


def test_report_headline_first_short_labels_notes_once_tables_in_120_columns():
    res = _result(6)
    text = res.report()
    lines = text.splitlines()
    heads = res.headline()
    assert len(heads) == 6 and lines[:6] == heads  # one line per group, first
    erf = next(h for h in heads if h.startswith("[act=erf alpha=none] "))
    assert erf.startswith("[act=erf alpha=none] claim supported: kernel_drift slope -0.")
    assert "(expected -1), lin_error_test slope" in erf
    assert "model.activation=" not in text and "(missing)" not in text
    # each note once: the seed warning of every group is one line saying where it applies
    warning = [x for x in lines if "seed(s) at some width" in x]
    assert len(warning) == 1 and warning[0].endswith("(all groups)"), warning
    # kernel_pred_error_test equals lin_error_test: shown once, with a note
    assert res.same_as == {"kernel_pred_error_test": ("lin_error_test", pytest.approx(1e-9))}
    assert sum("kernel_pred_error_test" in x for x in lines) == 1
    assert "kernel_pred_error_test equals lin_error_test in every run" in text
    # every table line fits 120 columns (the fits table is split, not wrapped)
    tables = lines[lines.index("Runs per group:") : lines.index("Verdict:")]
    assert max(len(x) for x in tables if not x.startswith("- ")) <= 120
    assert text.count("metric           group") >= 2  # the fits table in two parts
    assert "Duplicate configs (same config hash; the latest FINISHED run kept): none" in text
    assert res.verdict_text().splitlines()[:6] == heads
    md = res.report(markdown=True)
    assert md.splitlines()[2:8] == [f"- {h}" for h in heads]
    assert "\n\n## Verdict\n\n" in md and "\n\n### Notes\n\n- " in md


def test_text_table_splits_wide_tables_repeating_key_columns():
    from ntk_sweep.aggregate.report import text_table

    header = ["key", *(f"column{i}" for i in range(20))]
    rows = [["a" * 30, *(1.23456789 * i for i in range(20))], ["b", *range(20)]]
    text = text_table(header, rows, keep=1)
    assert max(len(x) for x in text.splitlines()) <= 120
    parts = text.split("\n\n")
    assert len(parts) >= 2 and all(p.startswith("key") for p in parts)
    assert all(f"column{i}" in text for i in range(20))


@pytest.mark.parametrize("n_groups", [1, 3, 5, 6])  # 5: a grid of 3 a row with a spare panel
def test_aggregate_figures_fit_1600_px_and_clip_nothing(n_groups):
    """drift vs width (a panel per metric), drift vs step (a panel per group, log step axis):
    at most 1600 px wide, no text outside the figure (the run figures' check), lower error
    bars above 0 on the log axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ntk_sweep.aggregate.plots import plot_vs_step, plot_vs_width
    from ntk_sweep.figure_style import text_outside

    res = _result(n_groups)
    title = "experiment 'ntk-sweep', filter " + "params.`model.activation` = 'relu' " * 8
    widths_fig = plot_vs_width(
        res.summary, res.fits, ["kernel_drift", "kernel_distance"], res.by, 0.3, title
    )
    steps = np.array([0, 1, 10, 100, 300])
    hist = pd.DataFrame(
        {"run_id": f"r{i}", "step": s, "value": 0.01 * s**0.5}
        for i in range(len(res.runs))
        for s in steps
    )
    runs = res.runs.assign(run_id=[f"r{i}" for i in range(len(res.runs))])
    step_fig = plot_vs_step(hist, runs, res.by, "kernel_drift", title)
    for fig in (widths_fig, step_fig):
        FigureCanvasAgg(fig).draw()
        w, h = fig.canvas.get_width_height()
        assert 400 <= w <= 1600 and h <= 1600, (w, h)
        assert not text_outside(fig), text_outside(fig)
    for ax in widths_fig.axes:
        assert ax.get_yscale() == "log" and ax.get_legend() is not None
        assert ax.get_ylim()[0] > 0
    shown = [ax for ax in step_fig.axes if ax.get_visible()]
    assert all(ax.get_xscale() == "log" for ax in shown)
    assert len(shown) == n_groups and len(widths_fig.axes) == 2
