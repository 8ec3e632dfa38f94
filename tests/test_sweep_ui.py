"""What the user sees: run names and preset tags read back from real
SQLite stores, the line that ends a multirun, Ctrl-C, `python run.py --help` and `--cfg job`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import mlflow
import pytest

from ntk_sweep import sweep_ui, tracking
from tests.test_app import RUN_PY, run_cli, runs_of

ROOT = Path(__file__).resolve().parent.parent
TIME_RE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


# --------------------------------------------------------------------------- names


def test_run_name_leads_with_width_and_seed_then_abbreviated_overrides():
    overrides = [
        "model.activation=erf",
        "train.lr=0.5",
        "seed=2",
        "width=100",
        "tracking.uri=sqlite:///x.db",
        "hydra.job.chdir=true",
        "experiment=width_sweep",
        "force=true",
    ]
    assert sweep_ui.run_name(overrides, 100, 2) == "w=100 s=2 lr=0.5 act=erf"
    # width and seed come from the resolved config (a preset may set them), always first
    assert sweep_ui.run_name(["lr=0.2", "seed=1"], 1024, 1) == "w=1024 s=1 lr=0.2"
    # other keys: their last component, alphabetically after the known ones; a preset leads
    name = sweep_ui.run_name(
        ["dataset.n_train=50", "+train.steps=7", "dataset=sine", "~model.foo"], 8, 0, lead="paper"
    )
    assert name == "paper w=8 s=0 steps=7 data=sine n_train=50 ~foo"
    # two keys with the same last component keep their full names (names stay unambiguous)
    name = sweep_ui.run_name(["dataset.noise=0.1", "train.noise=3"], 8, 0)
    assert name == "w=8 s=0 dataset.noise=0.1 train.noise=3"
    # only the swept keys of a sweep's child
    assert sweep_ui.run_name(["width=8", "train.steps=5", "lr=1"], 8, 0, swept=["lr"]) == (
        "w=8 s=0 lr=1"
    )


def test_job_names_follow_the_parent_tags_and_presets():
    tags = {sweep_ui.PRESET_TAG: "lr_sweep", sweep_ui.SWEPT_TAG: "lr,seed"}
    overrides = ["lr=0.4", "seed=2", "experiment=lr_sweep", "train.steps=9"]
    assert sweep_ui.job_run_name(overrides, 1024, 2, "lr_sweep", tags) == "w=1024 s=2 lr=0.4"
    # presets swept on the command line: each child leads with its own
    tags = {sweep_ui.PRESET_TAG: "paper,paper_fixed", sweep_ui.SWEPT_TAG: "experiment"}
    assert sweep_ui.job_run_name(["experiment=paper_fixed"], 10000, 0, "paper_fixed", tags) == (
        "paper_fixed w=10000 s=0"
    )
    # a single run: its preset, then every override
    assert sweep_ui.job_run_name(["experiment=paper", "lr=0.2"], 10000, 0, "paper") == (
        "paper w=10000 s=0 lr=0.2"
    )
    jobs = [["width=1", "seed=0", "train.steps=5"], ["width=2", "seed=0", "train.steps=5"]]
    assert sweep_ui.swept_keys(jobs) == ["width"]
    assert sweep_ui.swept_keys(None) is None
    assert sweep_ui.sweep_presets([["experiment=paper"], ["experiment=paper_fixed"]], "") == (
        "paper,paper_fixed"
    )
    assert sweep_ui.sweep_presets([["width=1"]], "width_sweep") == "width_sweep"
    when = datetime(2026, 12, 3, 9, 12, 1)
    assert sweep_ui.sweep_run_name("width_sweep", when) == "width_sweep 2026-12-03 09:12:01"
    assert sweep_ui.sweep_run_name("", when) == "sweep 2026-12-03 09:12:01"


@pytest.mark.slow  # an MLflow store (about 5 s to create)
def test_sweep_end_line_counts_the_children_and_reused_runs(tmp_path, db):
    client, exp = tracking.open_store(db, "ntk-sweep")
    parent = tracking.create_run(
        client, exp, "sweep 2026-12-03 09:12:01", {tracking.TAG + "n_jobs": "6"}
    )
    job = {tracking.ROLE_TAG: "job"}
    for status in ("FINISHED", "FAILED", "KILLED", "FINISHED"):
        tracking.end_run(client, tracking.create_run(client, exp, "c", job, parent), status)
    earlier = tracking.create_run(client, exp, "earlier", job)  # a run a resume reused
    tracking.end_run(client, earlier, "FINISHED")
    tracking.set_tag(client, parent, tracking.RESUMED_RUN_TAG + "4", earlier)
    # a requeued SLURM task: its first attempt (KILLED) is replaced by the second, one job
    for restart, status in (("0", "KILLED"), ("1", "FINISHED")):
        task = {tracking.SLURM_JOB_TAG: "7_0", tracking.SLURM_RESTART_TAG: restart}
        task[tracking.CONFIG_HASH_TAG] = "h0"
        run = tracking.create_run(client, exp, "c", {**job, **task}, parent)
        tracking.end_run(client, run, status)
    line = sweep_ui.sweep_end_line(client, parent, db, str(tmp_path))
    assert line == (
        "sweep 2026-12-03 09:12:01: 4/6 finished (1 reused from earlier runs), 1 failed, "
        f"1 killed; aggregate: ntk-aggregate --sweep {parent}; "
        f"MLflow UI search: tags.mlflow.parentRunId = '{parent}'"
    )
    # launched elsewhere, the aggregate command names the store
    other = sweep_ui.sweep_end_line(client, parent, db, str(tmp_path / "elsewhere"))
    assert f"--sweep {parent} --tracking-uri {db}; MLflow UI search: " in other
    # the experiment opens as a model-training one in the MLflow UI
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"


def test_swept_values_comment():
    assert sweep_ui.swept_values_comment({}, 1) == ""
    text = sweep_ui.swept_values_comment({"width": "64,256", "seed": "range(3)"}, 6)
    assert text.splitlines()[0].startswith("# This config is a sweep (6 jobs)")
    assert text.splitlines()[-2:] == ["#   width: 64,256", "#   seed: range(3)"]


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_preset_multirun_names_tags_and_end_line(tmp_path, db):
    """A real 2-job multirun of the width_sweep preset: parent named by preset and time, children
    by width and seed, the preset tagged on all, one end line naming the aggregate command."""
    res = run_cli(
        "-m",
        "experiment=width_sweep",
        'hydra.sweeper.params.width="16,32"',
        "hydra.sweeper.params.seed=0",
        "train.steps=5",
        "train.n_log_points=2",
        "tracking.figures=false",
        f"tracking.uri={db}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    runs = runs_of(db)
    (parent,) = [r for r in runs if r.data.tags.get("ntk_sweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("ntk_sweep.role") == "job"]
    assert re.fullmatch(f"width_sweep {TIME_RE}", parent.info.run_name), parent.info.run_name
    assert sorted(r.info.run_name for r in children) == ["w=16 s=0", "w=32 s=0"]
    assert {r.data.tags["ntk_sweep.preset"] for r in [parent, *children]} == {"width_sweep"}
    assert parent.data.tags["ntk_sweep.swept"] == "width"
    last = res.stdout.strip().splitlines()[-1]
    assert last == (
        f"sweep {parent.info.run_name}: 2/2 finished, 0 failed, 0 killed; "
        f"aggregate: ntk-aggregate --sweep {parent.info.run_id}; "
        f"MLflow UI search: tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert "Traceback" not in res.stderr


def _wait_for_line(proc: subprocess.Popen, text: str) -> str:
    """Read the job's stdout up to the first line containing `text` (the store is not polled:
    a second process reading the SQLite file while the job writes can hold its lock)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if text in line:
            return line
    raise AssertionError(f"no line with {text!r} (exit code {proc.wait()})")


@pytest.mark.slow
def test_ctrl_c_marks_the_run_killed_with_one_line_and_no_traceback(tmp_path, db):
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            str(RUN_PY),
            "train.steps=5000000",  # minutes of training: it is interrupted long before
            "width=16",
            "train.backend=numpy",
            "tracking.figures=false",
            f"tracking.uri={db}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the run exists (RUNNING) once it announces itself; the interrupt lands right after
        started = _wait_for_line(proc, "MLflow run ")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    run_id = started.split("MLflow run ")[1].split()[0]
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in out + err
    killed = [line for line in (out + err).splitlines() if "KILLED" in line]
    assert len(killed) == 1 and run_id in killed[0], killed
    run = mlflow.MlflowClient(db).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["ntk_sweep.failure_reason"] == "killed by KeyboardInterrupt (Ctrl-C)"


@pytest.mark.slow
def test_help_lists_groups_presets_and_shortcuts(tmp_path):
    res = run_cli("--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "_schema" not in text and "${" not in text and "Traceback" not in res.stderr
    groups = (
        "dataset",
        "model",
        "train",
        "tracking",
        "experiment",
        "showcase_arm",
        "hydra/launcher",
    )
    for group in groups:
        options = [p.stem for p in (ROOT / "conf" / group).glob("*.yaml")]
        assert options, group
        line = next(x for x in text.splitlines() if x.strip().startswith(f"{group}="))
        if group == "experiment":  # the presets have a section of their own, one line each
            assert all(re.search(rf"^  {o} ", text, re.M) for o in options), options
        else:
            assert all(o in line for o in options), (group, line)
    for shortcut in ("width=N", "depth=N", "lr=X", "seed=N", "force=true"):
        assert f"  {shortcut} " in text, shortcut
    assert "sets model.width (1000)" in text  # current values are interpolated from the config
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_cfg_job_of_a_sweeping_preset_shows_the_swept_values(tmp_path):
    res = run_cli("--cfg", "job", "experiment=lazy_vs_rich", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert "width: 10000" in lines  # one job's config, as Hydra prints it
    assert lines[-5].startswith("# This config is a sweep (30 jobs)")
    assert lines[-3:] == [
        "#   model.parameterization: ntk,mean_field",
        "#   width: 64,256,1024,4096,16384",
        "#   seed: range(3)",
    ]
    assert not (tmp_path / "outputs").exists()
