"""Scale out and hold up: parallel (joblib) and submitit sweeps, a real `mlflow server`, resume
after SIGKILL, force, heartbeats, and no state leaking between jobs of one worker process.

Real subprocesses and real stores (SQLite in tmp_path, an `mlflow server` on a loopback port);
tiny networks and few steps.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
from omegaconf import OmegaConf

from ntk_sweep import tracking
from ntk_sweep.aggregate import aggregate_sweep, load_runs
from ntk_sweep.experiment import run_experiment
from tests.conftest import compose_cfg
from tests.test_app import history, run_cli, runs_of

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = ROOT / "run.py"
TINY = ("train.steps=20", "tracking.figures=false")


def jobs(runs: list) -> list:
    return [r for r in runs if r.data.tags.get("ntk_sweep.role") == "job"]


def sweeps(runs: list) -> list:
    return [r for r in runs if r.data.tags.get("ntk_sweep.role") == "sweep"]


def all_histories(client, run) -> dict[str, list[tuple[int, float]]]:
    """Every metric history of a run except wall-clock times."""
    keys = [k for k in run.data.metrics if not k.endswith("time_s")]
    return {k: history(client, run.info.run_id, k) for k in keys}


def by_name(runs: list) -> dict:
    return {r.info.run_name: r for r in runs}


# --------------------------------------------------------------------------- joblib


@pytest.mark.slow
def test_joblib_sweep_on_a_new_database_equals_the_sequential_sweep(tmp_path, empty_db):
    """Two checks with one joblib start-up instead of two: an 8-job multirun with
    `hydra/launcher=joblib` and 2 workers, starting on a database that does not exist yet:
    1 parent, 8 FINISHED children, no lock errors, and metric histories equal, bit for bit, to
    the same sweep run sequentially (basic launcher)."""
    grid = ("-m", "width=16,24,32,48", "seed=0,1", *TINY)
    seq_dir, par_dir = tmp_path / "seq", tmp_path / "par"
    seq_dir.mkdir()
    par_dir.mkdir()
    shutil.copy(empty_db, seq_dir / "mlflow.db")  # a fresh store
    par_db = par_dir / "store" / "runs.db"  # neither the folder nor the database exist
    seq_uri, par_uri = f"sqlite:///{seq_dir / 'mlflow.db'}", f"sqlite:///{par_db}"
    t0 = time.perf_counter()
    seq = run_cli(*grid, f"hydra.sweep.dir={seq_dir / 'sweep'}", cwd=seq_dir)
    t_seq = time.perf_counter() - t0
    assert seq.returncode == 0, seq.stderr
    t0 = time.perf_counter()
    par = run_cli(
        *grid,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"tracking.uri={par_uri}",
        f"hydra.sweep.dir={par_dir / 'sweep'}",
        cwd=par_dir,
    )
    t_par = time.perf_counter() - t0
    assert par.returncode == 0, par.stderr
    print(f"8 tiny jobs: sequential {t_seq:.1f}s, joblib (2 workers) {t_par:.1f}s")
    out = par.stdout + par.stderr
    assert "database is locked" not in out and "Traceback" not in out

    par_runs = runs_of(par_uri)
    (parent,) = sweeps(par_runs)
    children = jobs(par_runs)
    assert len(children) == 8 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    exps = mlflow.MlflowClient(par_uri).search_experiments()
    assert sorted(e.name for e in exps) == ["Default", "ntk-sweep"]
    # 8 jobs in at most 2 worker processes: workers were reused, so the equality below also
    # shows that no state leaks from one job into the next
    pids = [r.data.tags["ntk_sweep.pid"] for r in children]
    assert len(set(pids)) <= 2

    seq_children = by_name(jobs(runs_of(seq_uri)))
    par_children = by_name(children)
    assert sorted(seq_children) == sorted(par_children)
    seq_client, par_client = mlflow.MlflowClient(seq_uri), mlflow.MlflowClient(par_uri)
    for name, a in seq_children.items():
        b = par_children[name]
        # the fingerprint is stable across processes, sweep folders and times
        assert a.data.tags["ntk_sweep.config_hash"] == b.data.tags["ntk_sweep.config_hash"]
        params_a, params_b = (
            {k: v for k, v in r.data.params.items() if k != "tracking.uri"} for r in (a, b)
        )
        assert params_a == params_b
        ha, hb = all_histories(seq_client, a), all_histories(par_client, b)
        assert ha.keys() == hb.keys() and "kernel_drift" in ha
        for key in ha:
            assert ha[key] == hb[key], (name, key)


def test_a_run_leaves_no_global_state_behind(tmp_path, empty_db, monkeypatch):
    """What a reused worker process would carry into its next job: signal handlers, logging
    handlers, the global RNG, MLflow's fluent state, threads, the environment, the cwd."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_cfg("width=16", *TINY, f"tracking.uri={uri}")
    first = run_experiment(cfg, output_dir=tmp_path / "job0")  # imports, caches, pools
    np.random.seed(123)
    before = {
        "sigterm": signal.getsignal(signal.SIGTERM),
        "sigint": signal.getsignal(signal.SIGINT),
        "root_handlers": list(logging.getLogger().handlers),
        "rng": np.random.get_state()[1].copy(),
        "tracking_uri": mlflow.get_tracking_uri(),
        "threads": threading.active_count(),
        "env": dict(os.environ),
        "cwd": os.getcwd(),
    }
    summaries = [first, run_experiment(cfg, output_dir=tmp_path / "job1")]
    assert [s["status"] for s in summaries] == ["FINISHED", "FINISHED"]
    assert signal.getsignal(signal.SIGTERM) is before["sigterm"]
    assert signal.getsignal(signal.SIGINT) is before["sigint"]
    assert logging.getLogger().handlers == before["root_handlers"]
    assert np.array_equal(np.random.get_state()[1], before["rng"])
    assert mlflow.active_run() is None and mlflow.get_tracking_uri() == before["tracking_uri"]
    assert threading.active_count() == before["threads"]  # the heartbeat thread is joined
    assert dict(os.environ) == before["env"] and os.getcwd() == before["cwd"]
    client = mlflow.MlflowClient(uri)
    a, b = (client.get_run(s["run_id"]) for s in summaries)
    assert all_histories(client, a) == all_histories(client, b)
    for run in (a, b):  # heartbeat and where the job ran
        assert float(run.data.tags["ntk_sweep.heartbeat"]) <= time.time()
        assert run.data.tags["ntk_sweep.pid"] == str(os.getpid())
        assert "force" not in run.data.params  # how to launch, not what ran


# --------------------------------------------------------------------------- submitit / SLURM


def test_slurm_preset_composes_with_its_fields():
    cfg = compose_cfg("hydra/launcher=slurm", "hydra.launcher.partition=cpu", hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "cpu"
    for key in ("timeout_min", "mem_gb", "cpus_per_task", "array_parallelism"):
        assert isinstance(launcher[key], int) and launcher[key] > 0, key
    assert OmegaConf.select(cfg, "hydra.launcher.max_num_timeout") == 0


@pytest.mark.slow
def test_submitit_local_sweep_is_tracked(tmp_path, empty_db):
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = run_cli(
        "-m",
        "width=16,32",
        "train.steps=5",
        "train.n_log_points=3",
        "tracking.figures=false",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr
    runs = runs_of(uri)
    (parent,) = sweeps(runs)
    children = jobs(runs)
    assert parent.info.status == "FINISHED"
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    # the jobs ran in submitit's processes, not the launching one
    assert len({r.data.tags["ntk_sweep.pid"] for r in children}) == 2
    assert list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))


# --------------------------------------------------------------------------- shared server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on a free loopback port: SQLite backend and artifacts in a folder."""

    START_TIMEOUT_S = 180.0  # `mlflow server` takes ~15 s to answer on 2 cores

    def __init__(self, folder: Path, template_db: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = folder / "artifacts"
        self.db = folder / "server.db"
        shutil.copy(template_db, self.db)  # tables made: no migration at start
        self.log = folder / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner: faster start
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{self.db}",
                    "--artifacts-destination",
                    str(self.artifacts),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                cwd=self.folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends all of it
            )
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"mlflow server not up after {self.START_TIMEOUT_S}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)


@pytest.fixture
def mlflow_server(tmp_path, empty_db):
    folder = tmp_path / "server"
    folder.mkdir()
    server = MlflowServer(folder, empty_db)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_sweep_against_a_shared_tracking_server(tmp_path, mlflow_server):
    launch = tmp_path / "launch"
    launch.mkdir()
    args = (
        "-m",
        "width=16,32",
        "train.steps=5",
        "train.n_log_points=3",
        "tracking.figures=false",
        f"tracking.uri={mlflow_server.uri}",
    )
    res = run_cli(*args, f"hydra.sweep.dir={launch / 'sweep1'}", cwd=launch)
    assert res.returncode == 0, res.stderr
    client = mlflow.MlflowClient(mlflow_server.uri)  # read back through the server
    exp = client.get_experiment_by_name("ntk-sweep")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = sweeps(runs)
    children = jobs(runs)
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    for run in children:
        loss = history(client, run.info.run_id, "loss")
        assert [s for s, _ in loss] == [0, 1, 2, 5] and np.all(np.isfinite([v for _, v in loss]))
        assert "arrays" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # artifacts went through the server into its artifact folder; nothing local but Hydra's
    assert len(list(mlflow_server.artifacts.rglob("ntk.npz"))) == 2
    assert sorted(p.name for p in launch.iterdir()) == ["sweep1"]

    mlflow_server.stop()
    res = run_cli(*args, f"hydra.sweep.dir={launch / 'sweep2'}", cwd=launch, timeout=60)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: tracking server {mlflow_server.uri} is unreachable"), line
    assert "ntk-sweep run" not in res.stdout
    assert not (launch / "sweep2" / "0").exists()


# --------------------------------------------------------------------------- resume


def fake_run(run_id: str, status: str, start_s: float, heartbeat: float | None = None) -> Run:
    tags = [RunTag(tracking.HEARTBEAT_TAG, str(heartbeat))] if heartbeat is not None else []
    info = RunInfo(
        run_id=run_id,
        experiment_id="1",
        user_id="",
        status=status,
        start_time=int(start_s * 1000),
        end_time=None,
        lifecycle_stage="active",
    )
    return Run(info, RunData(tags=tags))


def test_resume_plan():
    now, stale = 10_000.0, 120.0
    finished = fake_run("fin", "FINISHED", now - 500)
    failed = fake_run("fail", "FAILED", now - 400)
    killed = fake_run("kill", "KILLED", now - 300)
    dead = fake_run("dead", "RUNNING", now - 1000, heartbeat=now - 121)
    live = fake_run("live", "RUNNING", now - 1000, heartbeat=now - 5)
    no_beat = fake_run("old", "RUNNING", now - 200)  # never sent a heartbeat: its start counts
    assert tracking.plan_resume([], now, stale) == tracking.ResumePlan("run")
    assert tracking.plan_resume([failed, killed], now, stale) == tracking.ResumePlan("run")
    plan = tracking.plan_resume([failed, finished, dead], now, stale)
    assert (plan.action, plan.run_id) == ("finished", "fin")
    assert [r.info.run_id for r in plan.dead] == ["dead"]
    plan = tracking.plan_resume([killed, dead, live], now, stale)
    assert (plan.action, plan.run_id) == ("running", "live")
    plan = tracking.plan_resume([dead, no_beat, failed], now, stale)
    assert plan.action == "run" and {r.info.run_id for r in plan.dead} == {"dead", "old"}
    assert tracking.heartbeat_interval(120) == 30 and tracking.heartbeat_interval(1) == 0.25


def test_aggregate_counts_a_stale_running_run_as_killed_and_includes_resumed_runs(
    tmp_path,
    empty_db,
):
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("ntk-sweep")
    now = time.time()

    def job(parent: str | None, status: str, heartbeat: float, width: int, stale: str = "120"):
        tags = {"ntk_sweep.role": "job", tracking.HEARTBEAT_TAG: str(heartbeat)}
        if parent:
            tags["mlflow.parentRunId"] = parent
        run_id = client.create_run(exp, tags=tags).info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("kernel_drift", 0.1, 0, 5)],
            params=[
                Param("model.width", str(width)),
                Param("seed", "0"),
                Param("tracking.stale_after_s", stale),
            ],
        )
        if status != "RUNNING":
            client.set_terminated(run_id, status)
        return run_id

    old = client.create_run(exp, tags={"ntk_sweep.role": "sweep"}).info.run_id
    reused = job(old, "FINISHED", now - 50, 32)
    dead = job(old, "RUNNING", now - 200, 64)  # SIGKILLed: heartbeat stopped 200 s ago
    live = job(old, "RUNNING", now - 200, 128, stale="1000")  # slow beat allowed: alive
    new = client.create_run(exp, tags={"ntk_sweep.role": "sweep"}).info.run_id
    client.set_tag(new, tracking.RESUMED_RUN_TAG + "0", reused)
    rerun = job(new, "FINISHED", now, 64)

    df = load_runs(client, exp, old)[0].set_index("run_id")
    assert df.loc[dead, "status"] == "KILLED"
    assert df.loc[dead, "failure_reason"] == tracking.DEAD_REASON
    assert df.loc[live, "status"] == "RUNNING" and df.loc[reused, "status"] == "FINISHED"
    result = aggregate_sweep(uri, "ntk-sweep", old, write=False)
    assert result.summary["n_killed"].sum() == 1 and result.summary["n_running"].sum() == 1
    result = aggregate_sweep(uri, "ntk-sweep", new, write=False)
    assert sorted(result.runs["run_id"]) == sorted([reused, rerun])
    assert set(result.runs["status"]) == {"FINISHED"}
    # a filter applies to the reused runs too
    filtered = aggregate_sweep(
        uri, "ntk-sweep", new, filter_string="params.`model.width` = '64'", write=False
    )
    assert list(filtered.runs["run_id"]) == [rerun]


RESUME_STEPS = 20000  # ~1-2 s of training per job: long enough to kill one mid-training


@pytest.mark.slow
def test_resume_after_sigkill_skips_finished_reruns_the_dead_and_force_reruns(
    tmp_path,
    empty_db,
):
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    grid = (
        "-m",
        "width=32,64",
        "seed=0,1",
        f"train.steps={RESUME_STEPS}",
        "tracking.figures=false",
        "tracking.metrics_every_s=0",  # every log step reaches the store: see it mid-training
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(RUN_PY), *grid, f"hydra.sweep.dir={tmp_path / 'sweep1'}"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:  # job 1 (the second of four) is training: SIGKILL the process
            deadline = time.monotonic() + 120
            target = None
            while time.monotonic() < deadline and proc.poll() is None:
                running = [
                    r
                    for r in jobs(runs_of(uri))
                    if r.data.tags.get("ntk_sweep.job_num") == "1" and r.info.status == "RUNNING"
                ]
                if running and len(history(client, running[0].info.run_id, "loss")) >= 2:
                    target = running[0]
                    break
                time.sleep(0.05)
            assert target is not None, (tmp_path / "first.log").read_text()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)  # the basic launcher: the whole sweep dies
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    first = {r.data.tags["ntk_sweep.job_num"]: r for r in jobs(runs_of(uri))}
    assert sorted(first) == ["0", "1"]
    assert first["0"].info.status == "FINISHED" and first["1"].info.status == "RUNNING"
    killed_loss = history(client, first["1"].info.run_id, "loss")
    assert killed_loss[-1][0] < RESUME_STEPS  # killed mid-training

    # at once: the dead process is known from its pid (same host), not after a stale heartbeat
    res = run_cli(*grid, f"hydra.sweep.dir={tmp_path / 'sweep2'}", cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert f"skipped: finished run {first['0'].info.run_id} has this config" in out
    runs = runs_of(uri)
    new_parent = next(
        r for r in sweeps(runs) if r.data.tags["ntk_sweep.sweep_dir"] == str(tmp_path / "sweep2")
    )
    assert new_parent.info.status == "FINISHED"
    by_hash: dict[str, list] = {}
    for r in jobs(runs):
        by_hash.setdefault(r.data.tags["ntk_sweep.config_hash"], []).append(r)
    assert len(by_hash) == 4
    done_hash = first["0"].data.tags["ntk_sweep.config_hash"]
    dead_hash = first["1"].data.tags["ntk_sweep.config_hash"]
    assert [r.info.run_id for r in by_hash[done_hash]] == [first["0"].info.run_id]  # no new run
    dead_runs = {r.info.status: r for r in by_hash[dead_hash]}
    assert sorted(dead_runs) == ["FINISHED", "KILLED"]
    old = dead_runs["KILLED"]
    assert old.info.run_id == first["1"].info.run_id
    pid, host = first["1"].data.tags["ntk_sweep.pid"], first["1"].data.tags["ntk_sweep.host"]
    reason = f"process died: pid {pid} on host {host} no longer exists"
    assert old.data.tags["ntk_sweep.failure_reason"] == reason
    # the first sweep's launching process died with it: its parent is closed too
    first_parent = next(
        r for r in sweeps(runs) if r.data.tags["ntk_sweep.sweep_dir"] == str(tmp_path / "sweep1")
    )
    assert first_parent.info.status == "KILLED"
    assert first_parent.data.tags["ntk_sweep.failure_reason"].startswith("process died: pid")
    assert history(client, old.info.run_id, "loss") == killed_loss  # nothing overwritten
    for h, rs in by_hash.items():
        if h not in (done_hash, dead_hash):  # never started before: one new finished run
            assert [r.info.status for r in rs] == ["FINISHED"]
            assert rs[0].data.tags["mlflow.parentRunId"] == new_parent.info.run_id
    assert new_parent.data.tags[tracking.RESUMED_RUN_TAG + "0"] == first["0"].info.run_id

    result = aggregate_sweep(uri, "ntk-sweep", new_parent.info.run_id, write=False)
    assert len(result.runs) == 4 and set(result.runs["status"]) == {"FINISHED"}
    assert first["0"].info.run_id in set(result.runs["run_id"])
    assert int(result.summary["n_seeds"].sum()) == 4

    # force=true runs a finished config again, as a new run; the old one is untouched
    res = run_cli(
        "-m",
        "width=32",
        "seed=0",
        f"train.steps={RESUME_STEPS}",
        "tracking.figures=false",
        "force=true",
        f"hydra.sweep.dir={tmp_path / 'sweep3'}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    again = [r for r in jobs(runs_of(uri)) if r.data.tags["ntk_sweep.config_hash"] == done_hash]
    assert sorted(r.info.status for r in again) == ["FINISHED", "FINISHED"]
    original = client.get_run(first["0"].info.run_id)
    assert original.info.end_time == first["0"].info.end_time
    assert original.data.metrics == first["0"].data.metrics
