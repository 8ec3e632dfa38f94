"""Every way a sweep's processes can die ends in a correct record: real processes, real signals,
a real SQLite store. After each: no run or sweep parent RUNNING once its process is gone, no
traceback on the terminal (stderr holds log lines and at most one `error:` line), and no
configuration finished twice."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlflow
import pytest

from ntk_sweep import tracking
from tests.test_app import RUN_PY, runs_of

# Long enough to be caught training, short enough for the re-runs (~5 s a job at width 8).
GRID = ("width=8,16", "seed=0,1", "train.steps=150000", "train.n_log_points=5")
QUIET = ("tracking.figures=none", "tracking.progress=false", "tracking.metrics_every_s=0")


# --------------------------------------------------------------------------- process identity


def test_a_gone_process_of_this_host_is_dead_at_once_and_other_hosts_keep_the_heartbeat():
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    host = socket.gethostname()
    gone = {tracking.HOST_TAG: host, tracking.PID_TAG: str(done.pid)}
    assert (
        tracking.process_gone(gone)
        == f"process died: pid {done.pid} on host {host} no longer exists"
    )
    me = tracking.host_tags()
    assert me[tracking.PROCESS_TAG] == tracking.process_identity(os.getpid())
    assert tracking.process_gone(me) == ""  # alive
    reused = {**me, tracking.PROCESS_TAG: tracking.process_identity().split(":")[0] + ":1"}
    assert tracking.process_gone(reused).endswith("is another process now")  # pid reused
    assert tracking.process_gone({**gone, tracking.HOST_TAG: host + "-elsewhere"}) == ""
    rebooted = {**gone, tracking.PROCESS_TAG: "another-boot:123"}
    assert tracking.process_gone(rebooted) == ""  # a reboot or another machine: heartbeat rule


def test_a_sweeps_heartbeat_closes_its_jobs_that_died_without_a_word(db):
    """A job SIGKILLed before it could mark itself (SLURM's KillWait, the OOM killer) is closed
    by its sweep's launcher at the next beat; a live job and another sweep's job are not."""
    client = mlflow.MlflowClient(db)
    experiment = client.create_experiment("e")
    parent = tracking.create_run(client, experiment, "sweep", {tracking.ROLE_TAG: "sweep"})
    other = tracking.create_run(client, experiment, "other", {tracking.ROLE_TAG: "sweep"})
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    dead = {**tracking.host_tags(), tracking.PID_TAG: str(done.pid)}
    dead.pop(tracking.PROCESS_TAG)
    killed = tracking.create_run(client, experiment, "dead", dead, parent_id=parent)
    alive = tracking.create_run(client, experiment, "alive", tracking.host_tags(), parent)
    elsewhere = tracking.create_run(client, experiment, "x", dead, parent_id=other)
    with tracking.Heartbeat(
        client, parent, 0.1, also=lambda: tracking.close_gone_children(client, parent)
    ):
        deadline = time.monotonic() + 30
        while client.get_run(killed).info.status == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.1)
    run = client.get_run(killed)
    assert run.info.status == "KILLED"
    assert run.data.tags[tracking.FAILURE_TAG] == (
        f"process died: pid {done.pid} on host {socket.gethostname()} no longer exists"
    )
    assert client.get_run(alive).info.status == "RUNNING"
    assert client.get_run(elsewhere).info.status == "RUNNING"


# --------------------------------------------------------------------------- real sweeps


def start_sweep(tmp_path: Path, *args: str, name: str = "sweep") -> subprocess.Popen:
    """`run.py -m GRID ...` in its own process group with Ctrl-C at its default (a background
    process of a shell ignores SIGINT), stdout/stderr into files."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, str(RUN_PY), "-m", *GRID, *QUIET, *args]
    command.append(f"hydra.sweep.dir={tmp_path / name}")
    return subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=open(tmp_path / f"{name}.out", "w"),  # noqa: SIM115 - closed with the process
        stderr=open(tmp_path / f"{name}.err", "w"),  # noqa: SIM115
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def training_run(uri: str, proc: subprocess.Popen, sweep_dir: Path, timeout: float = 120):
    """The first job run that is RUNNING and has logged a training step. The store is opened
    only once the sweep has created it (its parent id is in the sweep folder): a client opening
    a store that is being created would race the sweep's own table creation."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if not (sweep_dir / tracking.PARENT_ID_FILE).is_file():
            time.sleep(0.1)
            continue
        client = mlflow.MlflowClient(uri)
        for run in runs_of(uri):
            if run.data.tags.get(tracking.ROLE_TAG) == "job" and run.info.status == "RUNNING":
                if len(client.get_metric_history(run.info.run_id, "loss")) >= 2:
                    return run
        time.sleep(0.1)
    raise AssertionError(f"no job was caught training (exit {proc.poll()})")


def error_lines(tmp_path: Path, name: str = "sweep") -> list[str]:
    """What stderr shows a person besides log lines (`[date][logger][LEVEL] - ...`, MLflow's)."""
    lines = (tmp_path / f"{name}.err").read_text().splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith("[20") and " INFO " not in ln]


def settled(uri: str, timeout: float = 30) -> list:
    """The runs, once none is RUNNING (jobs of other processes mark themselves)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = runs_of(uri)
        running = [r for r in runs if r.info.status == "RUNNING"]
        if not running or time.monotonic() > deadline:
            assert not running, [
                (r.data.tags.get(tracking.ROLE_TAG), r.info.run_id) for r in running
            ]
            return runs
        time.sleep(0.2)


def finished_per_config(runs: list) -> Counter:
    jobs = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "job"]
    return Counter(
        r.data.tags[tracking.CONFIG_HASH_TAG] for r in jobs if r.info.status == "FINISHED"
    )


def parents(runs: list) -> list:
    return [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "sweep"]


def sigkill_one_job(tmp_path: Path, uri: str, launcher: tuple[str, ...], error: str, wait_s=0.0):
    """Start a sweep, SIGKILL one job's process while it trains: the sweep exits 1 with one
    line starting with `error`; within `wait_s` of its exit no run is RUNNING, the parent and
    the killed job are KILLED. Returns (runs, the killed job's run)."""
    proc = start_sweep(tmp_path, *launcher, f"tracking.uri={uri}")
    victim = training_run(uri, proc, tmp_path / "sweep")
    os.kill(int(victim.data.tags[tracking.PID_TAG]), signal.SIGKILL)
    assert proc.wait(timeout=240) == 1
    errors = error_lines(tmp_path)
    assert len(errors) == 1 and errors[0].startswith(error), errors
    runs = settled(uri, timeout=wait_s)
    assert [p.info.status for p in parents(runs)] == ["KILLED"]
    killed = next(r for r in runs if r.info.run_id == victim.info.run_id)
    assert killed.info.status == "KILLED"
    return runs, killed


@pytest.mark.slow
def test_joblib_worker_sigkilled_one_line_and_the_immediate_rerun_completes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    joblib = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    error = "error: the sweep stopped: TerminatedWorkerError: A worker process"
    # wait_s 0: the launching process settled its jobs before exiting
    _, killed = sigkill_one_job(tmp_path, uri, joblib, error)
    assert killed.data.tags[tracking.FAILURE_TAG].startswith("process died: pid")
    end_line = (tmp_path / "sweep.out").read_text().splitlines()[-1]
    assert "run the same command again to finish it" in end_line

    # at once: no heartbeat has gone stale
    again = start_sweep(tmp_path, *joblib, f"tracking.uri={uri}", name="rerun")
    assert again.wait(timeout=240) == 0, error_lines(tmp_path, "rerun")
    assert error_lines(tmp_path, "rerun") == []
    runs = settled(uri, timeout=0)
    per_config = finished_per_config(runs)
    assert len(per_config) == 4 and set(per_config.values()) == {1}  # 4/4, none twice
    assert sorted(p.info.status for p in parents(runs)) == ["FINISHED", "KILLED"]
    assert "4/4 finished" in (tmp_path / "rerun.out").read_text().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher, signum, target, code",
    [
        ("joblib", signal.SIGTERM, "sweep", 143),
        ("joblib", signal.SIGINT, "group", 130),
        ("submitit_local", signal.SIGTERM, "sweep", 143),
    ],
)
def test_a_stopped_sweep_leaves_no_run_running_and_nothing_finishing_after_it(
    tmp_path, launcher, signum, target, code
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    proc = start_sweep(tmp_path, f"hydra/launcher={launcher}", *extra, f"tracking.uri={uri}")
    training_run(uri, proc, tmp_path / "sweep")
    if target == "group":  # Ctrl-C in a terminal: the whole foreground process group
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    assert proc.wait(timeout=120) == code
    runs = settled(uri)
    (parent,) = parents(runs)
    assert parent.info.status == "KILLED"
    jobs = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "job"]
    assert jobs and all(r.info.status in ("KILLED", "FINISHED") for r in jobs)
    # no job went on to finish under its stopped sweep
    assert all(r.info.end_time <= parent.info.end_time for r in jobs if r.info.status == "FINISHED")
    time.sleep(2)  # a submitit task launched late starts, reads the stop and runs nothing
    assert len(runs_of(uri)) == len(runs)
    if launcher == "joblib":  # submitit's own controller processes print Ctrl-C tracebacks
        assert error_lines(tmp_path) == []


@pytest.mark.slow
def test_submitit_task_sigkilled_ends_the_sweep_in_one_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    error = "error: the sweep stopped: UncompletedJobError: Job"
    runs, _ = sigkill_one_job(tmp_path, uri, ("hydra/launcher=submitit_local",), error, 30)
    assert set(finished_per_config(runs).values()) <= {1}
