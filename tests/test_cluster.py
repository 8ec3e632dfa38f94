"""Real clusters: secrets never logged, simultaneous starts on a fresh store, unique
sweep folders, a requeued SLURM task taking over its own run, stop signals during the marking,
a fast message for an unreachable database, a sweep straight into a real PostgreSQL and one
through `mlflow server` on it, and sweeps on a real SLURM (preemption, a killed and requeued
task, the time limit, cancelling the array).

Real stores (SQLite in tmp_path, a PostgreSQL server started from the machine's binaries),
real `python run.py` subprocesses; a real SLURM where `sbatch` and an idle node exist
(`.ci/slurm_single_node.sh` starts a one-node one), else SLURM is simulated by its environment
variables (what a requeued task sees); tests needing a real SLURM or PostgreSQL skip with the
reason.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import mlflow
import pytest

from ntk_sweep import tracking
from ntk_sweep.config import TrackingError
from ntk_sweep.experiment import run_experiment
from tests.conftest import compose_cfg
from tests.test_app import runs_of

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = ROOT / "run.py"
# tiny and without numba: 8 processes compiling the fused kernel at once take minutes
TINY = ("width=8", "train.steps=3", "train.n_log_points=3", "train.backend=numpy")
SECRET = "s3cr3t-Pw"


def env_without(*names: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("SLURM_")}
    env.pop("HYDRA_FULL_ERROR", None)
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 180):
    return subprocess.run(
        [sys.executable, str(RUN_PY), *args],
        cwd=cwd,
        env=env or env_without("MLFLOW_TRACKING_URI"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def everything_logged(client, run) -> list[str]:
    """Every param, tag and text artifact of a run, as text."""
    texts = [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()]
    if not client.list_artifacts(run.info.run_id):
        return texts
    folder = tempfile.mkdtemp(prefix="ntk-sweep-artifacts-")
    for f in Path(client.download_artifacts(run.info.run_id, "", dst_path=folder)).rglob("*"):
        if f.is_file() and f.suffix in (".yaml", ".log", ".txt", ".json"):
            texts.append(f"{f.name}: {f.read_text(errors='replace')}")
    return texts


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://mlflow:pw@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
        ("postgresql+psycopg://u:p%40ss@h/d", "postgresql+psycopg://u:***@h/d"),
        (
            "tracking.uri=mysql://root:x@127.0.0.1/m width=3",
            "tracking.uri=mysql://root:***@127.0.0.1/m width=3",
        ),
        ("http://alice:tok@mlflow.lab:5000", "http://alice:***@mlflow.lab:5000"),
        (
            "postgresql://u@h/d?password=pw&sslmode=require",
            "postgresql://u@h/d?password=***&sslmode=require",
        ),
        ("a s3://K:S@b and mssql://u:v@h/d", "a s3://K:***@b and mssql://u:***@h/d"),
        ("sqlite:////tmp/x/mlflow.db", "sqlite:////tmp/x/mlflow.db"),  # nothing to hide
        ("http://host:5000/path", "http://host:5000/path"),
        ("user:pw@host without a scheme", "user:pw@host without a scheme"),
        ("#0 : x=s3\\://K\\:S@b/m", "#0 : x=s3\\://K\\:***@b/m"),  # Hydra's launcher line
        ("['x=s3\\\\://K\\\\:S@b']", "['x=s3\\\\://K\\\\:***@b']"),  # and its repr
    ],
)
def test_redact_uri(text, expected):
    assert tracking.redact_uri(text) == expected


def test_log_lines_and_tracebacks_are_redacted(caplog):
    tracking.install_log_redaction()
    tracking.install_log_redaction()  # idempotent: one wrapper
    factory = logging.getLogRecordFactory()
    assert getattr(factory, "ntk_sweep_redacts", False)
    logger = logging.getLogger("ntk_sweep.test_cluster")
    uri = f"postgresql://mlflow:{SECRET}@db/mlflow"
    with caplog.at_level(logging.INFO):
        logger.info("connecting to %s", uri)
        try:
            raise RuntimeError(f"cannot connect {uri}")
        except RuntimeError:
            logger.exception("failed")
    text = caplog.text
    assert "connecting to postgresql://mlflow:***@db/mlflow" in text
    assert "RuntimeError: cannot connect postgresql://mlflow:***@db/mlflow" in text
    assert SECRET not in text


@pytest.mark.slow
def test_no_param_tag_artifact_or_log_line_holds_a_password(tmp_path, empty_db):
    """A credentialed URI in the config of a sweep on a real SQLite store (SQLite URIs carry no
    password, so the credential rides on `tracking.artifact_location`, which is logged the same
    way as `tracking.uri`: a param, the overrides tags, config/config.yaml, hydra/*.yaml, the
    job's log; it is ignored, with a warning, since the experiment already exists). Proves
    redaction of every path ntk-sweep logs through; the PostgreSQL test below does it with the
    password in `tracking.uri` itself."""
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    client.create_experiment("ntk-sweep", artifact_location=(tmp_path / "art").as_uri())
    secret_location = f"s3://AKIAUSER:{SECRET}@bucket/mlflow"
    res = cli(
        "-m",
        *TINY,
        "seed=0,1",
        f"tracking.uri={uri}",
        f"tracking.artifact_location={secret_location}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert SECRET not in out
    assert "tracking.artifact_location=s3://AKIAUSER:***@bucket/mlflow is ignored" in out
    assert "#0 : " in out  # Hydra's launcher line with the job's overrides: redacted too
    runs = runs_of(uri)
    assert len(runs) == 3  # the parent and 2 jobs
    for run in runs:
        logged = everything_logged(client, run)
        assert not [t for t in logged if SECRET in t]
    job = next(r for r in runs if r.data.tags["ntk_sweep.role"] == "job")
    assert job.data.params["tracking.artifact_location"] == "s3://AKIAUSER:***@bucket/mlflow"
    names = {t.split(":")[0] for t in everything_logged(client, job)}
    assert {"config.yaml", "overrides.yaml", "hydra.yaml", "run.log"} <= names
    # what Hydra wrote locally is the user's own (not sent anywhere): left as typed
    assert SECRET in (tmp_path / "sweep" / "0" / ".hydra" / "overrides.yaml").read_text()


# --------------------------------------------------------------------------- unreachable DB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_database_fails_at_once_naming_it_without_the_password():
    port = _free_port()  # nothing listens there
    uri = f"postgresql+psycopg://mlflow:{SECRET}@127.0.0.1:{port}/mlflow"
    with pytest.raises(TrackingError) as err:
        tracking.check_tracking_uri(uri)
    message = str(err.value)
    assert message.startswith(f"database server 127.0.0.1:{port} of tracking store ")
    assert "unreachable" in message and f"at most {tracking.DB_CONNECT_TIMEOUT_S:g}s" in message
    assert SECRET not in message and "mlflow:***@" in message


def test_an_unreachable_database_via_the_cli_is_one_line_exit_2(tmp_path):
    uri = f"postgresql://mlflow:{SECRET}@127.0.0.1:{_free_port()}/mlflow"
    res = cli(*TINY, f"tracking.uri={uri}", cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: database server 127.0.0.1:") and SECRET not in line


# --------------------------------------------------------------------------- simultaneous starts


@pytest.mark.slow
def test_eight_simultaneous_single_runs_on_a_fresh_sqlite_store_all_finish(tmp_path):
    """An `sbatch --array` of plain `run.py` on one machine: 8 processes start at once on a
    database that does not exist; without the store lock 8 of 8 exited 2 here
    (`table _alembic_tmp_model_versions already exists`)."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = env_without("MLFLOW_TRACKING_URI")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(RUN_PY),
                *TINY,
                f"seed={i}",
                "tracking.figures=false",
                f"tracking.uri={uri}",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(8)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, "\n".join(o[-1500:] for o in outputs)
    runs = runs_of(uri)
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["seed"] for r in runs) == [str(i) for i in range(8)]
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["mlflow.db", "mlruns"]


# --------------------------------------------------------------------------- sweep folders


def test_the_default_sweep_dir_is_unique_per_launch():
    """Two sweeps composed in the same second get different folders (`${launch_id:}`: pid and
    random digits), each resolved once per launch."""
    a, b = (compose_cfg(hydra=True).hydra.sweep.dir for _ in range(2))
    assert a != b
    assert f"-{os.getpid()}-" in a and f"-{os.getpid()}-" in b


@pytest.mark.slow
def test_two_sweeps_launched_together_each_parent_has_exactly_its_children(tmp_path):
    """Two multiruns started at the same moment from one folder with the default sweep dir,
    on one fresh SQLite store: two folders, two parents, each with its own two jobs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = env_without("MLFLOW_TRACKING_URI")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(RUN_PY),
                "-m",
                *TINY,
                "width=8,16",
                f"seed={seed}",
                "tracking.figures=false",
                f"tracking.uri={uri}",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in (0, 1)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-1500:] for o in outputs)
    runs = runs_of(uri)
    parents = [r for r in runs if r.data.tags["ntk_sweep.role"] == "sweep"]
    children = [r for r in runs if r.data.tags["ntk_sweep.role"] == "job"]
    assert len(parents) == 2 and len(children) == 4
    dirs = {p.data.tags["ntk_sweep.sweep_dir"] for p in parents}
    assert len(dirs) == 2
    for parent in parents:
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(mine) == 2
        launched = parent.data.tags["ntk_sweep.overrides"].split()
        assert {f"seed={c.data.params['seed']}" for c in mine} == {
            o for o in launched if o.startswith("seed=")
        }
        folder = parent.data.tags["ntk_sweep.sweep_dir"]
        assert all(c.data.tags["ntk_sweep.output_dir"].startswith(folder + "/") for c in mine)
        assert all(c.data.tags["ntk_sweep.sweep_id"] == parent.info.run_id for c in mine)
        assert tracking.read_parent_id(folder) == parent.info.run_id


def test_a_sweep_dir_of_a_running_sweep_is_refused(tmp_path, empty_db):
    """An explicit `hydra.sweep.dir` whose sweep is still RUNNING is never taken over: its
    parent id file stays, the second sweep stops with one line and exit 2."""
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("ntk-sweep")
    running = client.create_run(exp, tags={"ntk_sweep.role": "sweep"}).info.run_id
    sweep = tmp_path / "sweep"
    tracking.write_parent_id(sweep, running)
    res = cli("-m", *TINY, f"tracking.uri={uri}", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert line == (
        f"error: hydra.sweep.dir={sweep} is in use by sweep {running}, still RUNNING: choose "
        "another hydra.sweep.dir (the default is unique per launch)"
    )
    assert tracking.read_parent_id(sweep) == running
    assert len(runs_of(uri)) == 1


# --------------------------------------------------------------------------- SLURM requeue


def test_a_requeued_slurm_task_recognises_only_its_own_earlier_run():
    from tests.test_scale import fake_run

    now, stale = 10_000.0, 120.0
    own = fake_run("own", "RUNNING", now - 50, heartbeat=now - 5)  # fresh heartbeat
    own.data.tags.update({tracking.SLURM_JOB_TAG: "77_3", tracking.SLURM_RESTART_TAG: "0"})
    other = fake_run("other", "RUNNING", now - 40, heartbeat=now - 5)
    other.data.tags.update({tracking.SLURM_JOB_TAG: "77_4", tracking.SLURM_RESTART_TAG: "0"})
    task = tracking.slurm_task(
        {
            "SLURM_ARRAY_JOB_ID": "77",
            "SLURM_ARRAY_TASK_ID": "3",
            "SLURM_JOB_ID": "80",
            "SLURM_RESTART_COUNT": "1",
        }
    )
    assert task == ("77_3", 1)
    assert tracking.slurm_task({"SLURM_JOB_ID": "81"}) == ("81", 0)
    assert tracking.slurm_task({}) == ("", 0)
    plan = tracking.plan_resume([own], now, stale, task)
    assert (plan.action, plan.taken_over) == ("run", ("own",))
    assert [r.info.run_id for r in plan.dead] == ["own"]
    # another task's live run, or the same attempt (a duplicate config in one joblib job)
    assert tracking.plan_resume([other], now, stale, task).action == "running"
    assert tracking.plan_resume([own], now, stale, ("77_3", 0)).action == "running"
    assert tracking.plan_resume([own], now, stale).action == "running"  # outside SLURM


@pytest.mark.slow
def test_a_requeued_task_takes_its_run_over_and_finishes_it(tmp_path, empty_db):
    """A preempted SLURM task whose run stayed RUNNING (heartbeat fresh: the requeue came
    quickly) starts again with the same array id and SLURM_RESTART_COUNT=1: it marks that run
    KILLED (what it logged kept) and finishes the config; nothing is left RUNNING."""
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("ntk-sweep")
    overrides = (*TINY, "tracking.figures=false")
    cfg = compose_cfg(*overrides)
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True)
    chash = tracking.config_hash(container)
    earlier = client.create_run(
        exp,
        tags={
            "ntk_sweep.role": "job",
            tracking.CONFIG_HASH_TAG: chash,
            tracking.SLURM_JOB_TAG: "4242_0",
            tracking.SLURM_RESTART_TAG: "0",
            **tracking.heartbeat_tags(),
        },
    ).info.run_id
    client.log_metric(earlier, "loss", 0.5, step=1)
    env = env_without(
        "MLFLOW_TRACKING_URI",
        SLURM_JOB_ID="4243",
        SLURM_ARRAY_JOB_ID="4242",
        SLURM_ARRAY_TASK_ID="0",
        SLURM_RESTART_COUNT="1",
    )
    res = cli(
        "-m",
        *overrides,
        f"tracking.uri={uri}",
        f"hydra.sweep.dir={tmp_path / 's'}",
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert "left RUNNING by an earlier attempt of SLURM task 4242_0" in res.stdout + res.stderr
    runs = [r for r in runs_of(uri) if r.data.tags.get("ntk_sweep.role") == "job"]
    status = {r.info.run_id: r.info.status for r in runs}
    assert status.pop(earlier) == "KILLED" and list(status.values()) == ["FINISHED"]
    old = client.get_run(earlier)
    assert old.data.tags[tracking.FAILURE_TAG] == tracking.TAKEOVER_REASON
    assert old.data.metrics["loss"] == 0.5  # nothing it logged is lost
    (new_id,) = status
    new = client.get_run(new_id)
    assert new.data.tags[tracking.SLURM_JOB_TAG] == "4242_0"
    assert new.data.tags[tracking.SLURM_RESTART_TAG] == "1"
    assert new.data.tags[tracking.CONFIG_HASH_TAG] == chash


# --------------------------------------------------------------------------- stop signals


def _signal_soon(signum: int, delay_s: float) -> threading.Timer:
    timer = threading.Timer(delay_s, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


def _signal_once_training(uri: str, signum: int) -> threading.Thread:
    """Send `signum` to this process once the run has logged its first step (not on a timer:
    on a loaded machine the run may not even exist after a second)."""

    def wait_then_signal():
        client = mlflow.MlflowClient(uri)
        for _ in range(1200):
            runs = runs_of(uri)
            if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
                break
            time.sleep(0.1)
        # signal even if no step was seen within 2 minutes: the test then fails on its
        # assertions instead of training for ever
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=wait_then_signal, daemon=True)
    thread.start()
    return thread


def _long_cfg(uri: str):
    return compose_cfg(
        "width=16",
        "train.steps=100000000",
        "train.backend=numpy",
        "tracking.figures=false",
        "tracking.progress=false",
        f"tracking.uri={uri}",
    )


def _only_run(uri: str):
    (run,) = runs_of(uri)
    return run


def test_preemption_exit_then_sigterm_while_marking_leaves_the_run_killed(tmp_path, db_uri):
    """submitit on preemption: its SIGUSR2 handler requeues and calls sys.exit; SLURM's
    SIGTERM of the requeue follows while the run is being marked (here: the store is busy,
    another connection holds its write lock for 1.5 s). The run must end KILLED; it stayed
    RUNNING when the SIGTERM interrupted the marking."""
    import sqlite3

    locked = threading.Event()

    def hold_the_store_lock():
        conn = sqlite3.connect(str(tracking.sqlite_path(db_uri)), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(1.5)
        conn.execute("ROLLBACK")
        conn.close()

    def submitit_like_requeue(signum, frame):  # noqa: ARG001
        threading.Thread(target=hold_the_store_lock, daemon=True).start()
        locked.wait(10)
        _signal_soon(signal.SIGTERM, 0.3)  # the requeue's SIGTERM, during the marking
        sys.exit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_like_requeue)
    _signal_once_training(db_uri, signal.SIGUSR2)
    try:
        with pytest.raises(SystemExit) as exit_:
            run_experiment(_long_cfg(db_uri), output_dir=tmp_path / "job")
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert exit_.value.code == 128 + signal.SIGTERM  # the SIGTERM, delivered after the marking
    run = _only_run(db_uri)
    assert run.info.status == "KILLED"
    assert run.data.tags[tracking.FAILURE_TAG] == "killed by SystemExit(-1): preempted or requeued"


def test_time_limit_marks_the_run_killed_and_returns(tmp_path, db_uri):
    """submitit at the time limit with no requeue left raises UncompletedJobError from its
    SIGUSR2 handler: KILLED (not FAILED with the divergences), and the job returns normally,
    so the launcher's sweep ends cleanly."""
    from submitit.core.utils import UncompletedJobError

    def submitit_like_timeout(signum, frame):  # noqa: ARG001
        raise UncompletedJobError("Job not requeued because: timed-out and not checkpointable.")

    previous = signal.signal(signal.SIGUSR2, submitit_like_timeout)
    _signal_once_training(db_uri, signal.SIGUSR2)
    try:
        summary = run_experiment(_long_cfg(db_uri), output_dir=tmp_path / "job")
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert summary["status"] == "KILLED"
    run = _only_run(db_uri)
    assert run.info.status == "KILLED"
    assert run.data.tags[tracking.FAILURE_TAG].startswith("killed by time limit (Job not requeued")


@pytest.fixture
def db_uri(tmp_path, empty_db) -> str:
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


# --------------------------------------------------------------------------- real SLURM
# A real SLURM (`.ci/slurm_single_node.sh` starts a one-node cluster as root; .ci/run does), a
# sweep through Hydra's submitit launcher, and the cluster's own signals, requeues and cancels.
# Where that cluster has no accounting database `sacct` fails: submitit then sees a task end
# only by its result file, so a cancelled task's launcher waits (the cancel test stops it).

SLURM_JOB = (
    "width=8",
    "train.n_log_points=3",
    "train.backend=numpy",
    "tracking.figures=false",
    "tracking.progress=false",
    "tracking.metrics_every_s=0",
)


@functools.cache
def _no_real_slurm() -> str:
    """Why the real-SLURM tests cannot run here ('' if they can)."""
    if shutil.which("sbatch") is None:
        return (
            "needs a real SLURM (sbatch absent; as root, .ci/slurm_single_node.sh --install "
            "sets up a one-node cluster)"
        )
    try:
        nodes = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "needs a real SLURM: sinfo did not answer within 30 s (slurmctld down?)"
    if not any(s.startswith(("idle", "mix", "alloc")) for s in nodes.stdout.split()):
        got = " ".join((nodes.stdout + nodes.stderr).split())
        return f"needs a real SLURM with a node up (sinfo: {got or 'no nodes'})"
    return ""


needs_real_slurm = pytest.mark.skipif(bool(_no_real_slurm()), reason=_no_real_slurm())


@pytest.fixture
def slurm_sweep(tmp_path, db_uri):
    """Start `python run.py -m hydra/launcher=slurm ...` on the real SLURM (1 CPU, 1 GB per
    task) into an SQLite store; the launcher is killed afterwards and its array cancelled."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs .[launchers]")
    started: list[subprocess.Popen] = []

    def launch(*overrides: str, steps: int = 10**9) -> subprocess.Popen:
        """`steps`: for a run that must finish, a few seconds of GD, so that a signal sent at
        its first logged step still finds it training; else (the default) endless."""
        log = (tmp_path / "launcher.log").open("w")
        proc = subprocess.Popen(
            [
                sys.executable,
                str(RUN_PY),
                "-m",
                "hydra/launcher=slurm",
                "hydra.launcher.cpus_per_task=1",
                "hydra.launcher.mem_gb=1",
                *SLURM_JOB,
                f"train.steps={steps}",
                f"tracking.uri={db_uri}",
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
                *overrides,
            ],
            cwd=tmp_path,
            env=env_without("MLFLOW_TRACKING_URI"),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc.log = tmp_path / "launcher.log"  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield launch
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    for job in {
        r.data.tags.get(tracking.SLURM_JOB_TAG, "_").split("_")[0] for r in runs_of(db_uri)
    }:
        if job:
            subprocess.run(["scancel", job], capture_output=True, timeout=30)


def _job_runs(uri: str) -> list:
    return [r for r in runs_of(uri) if r.data.tags.get("ntk_sweep.role") == "job"]


def _wait_until(what: str, condition, launcher: subprocess.Popen, ends: bool = False):
    """Poll `condition()` until it is truthy and return it; fail naming `what` if the launcher
    ended first (unless it may: `ends`) or it takes over 4 minutes (a stuck cluster, not a
    slow one)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        if not ends and launcher.poll() is not None:
            pytest.fail(
                f"the launcher ended (exit {launcher.returncode}) before {what}:\n"
                + launcher.log.read_text()[-3000:]
            )
        time.sleep(0.2)
    pytest.fail(f"no {what} within 240 s:\n" + launcher.log.read_text()[-3000:])


def _training(uri: str, n: int, besides: str = ""):
    """The RUNNING job runs by SLURM task (but task `besides`) that have logged a step, if
    there are at least n; else None."""
    client = mlflow.MlflowClient(uri)
    running = {
        r.data.tags[tracking.SLURM_JOB_TAG]: r
        for r in _job_runs(uri)
        if r.info.status == "RUNNING"
        and r.data.tags.get(tracking.SLURM_JOB_TAG, besides) != besides
        and client.get_metric_history(r.info.run_id, "loss")
    }
    return running if len(running) >= n else None


def _ended(launcher: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        rc = launcher.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("the launcher did not end:\n" + launcher.log.read_text()[-3000:])
    return rc, launcher.log.read_text()


def _by_task(uri: str) -> dict[str, list]:
    """Job runs per SLURM task, oldest attempt first."""
    tasks: dict[str, list] = {}
    for r in sorted(_job_runs(uri), key=lambda r: int(r.data.tags[tracking.SLURM_RESTART_TAG])):
        tasks.setdefault(r.data.tags[tracking.SLURM_JOB_TAG], []).append(r)
    return tasks


@pytest.mark.slow
@needs_real_slurm
def test_real_slurm_preempted_and_killed_tasks_are_requeued_and_finish(slurm_sweep, db_uri):
    """A 2-task array on a real SLURM: task 0 is preempted (`scancel --signal=USR2`: submitit
    checkpoints, `scontrol requeue`s and exits), task 1's process is SIGKILLed (a dead node: its
    run stays RUNNING) and the task requeued by hand. Both requeued tasks (SLURM_RESTART_COUNT
    1) run their config to the end: the earlier attempts KILLED with what they logged kept,
    one FINISHED run per config, none left RUNNING, the launcher ends cleanly."""
    launcher = slurm_sweep("seed=0,1", steps=10000)
    # each task as soon as it trains: one may start seconds after the other
    preempted = min(_wait_until("a task training", lambda: _training(db_uri, 1), launcher))
    subprocess.run(["scancel", "--signal=USR2", preempted], check=True, timeout=30)
    running = _wait_until(
        "another task training", lambda: _training(db_uri, 1, preempted), launcher
    )
    (killed,) = running
    os.kill(int(running[killed].data.tags[tracking.TAG + "pid"]), signal.SIGKILL)
    _wait_until(  # the batch step may still be ending: requeue once SLURM accepts it
        f"a requeue of {killed}",
        lambda: (
            subprocess.run(["scontrol", "requeue", killed], capture_output=True).returncode == 0
        ),
        launcher,
    )
    rc, out = _ended(launcher)
    assert rc == 0, out[-3000:]
    assert "Traceback" not in out
    assert "2/2 finished, 0 failed, 0 killed" in out
    tasks = _by_task(db_uri)
    assert sorted(tasks) == sorted([preempted, killed])
    client = mlflow.MlflowClient(db_uri)
    for task, (first, again) in tasks.items():
        assert (first.info.status, again.info.status) == ("KILLED", "FINISHED"), task
        assert again.data.tags[tracking.SLURM_RESTART_TAG] == "1"
        assert (
            again.data.tags[tracking.CONFIG_HASH_TAG] == first.data.tags[tracking.CONFIG_HASH_TAG]
        )
        assert client.get_metric_history(first.info.run_id, "loss")  # nothing logged is lost
    # the preempted attempt marks itself (`killed by SystemExit(-1): preempted or requeued`,
    # checked exactly in-process above) unless SLURM's requeue SIGKILLs it first (KillWait, 5 s
    # on the CI cluster; seen under load): then the requeued attempt takes its run over
    reason = tasks[preempted][0].data.tags[tracking.FAILURE_TAG]
    assert reason.startswith("killed by") or reason == tracking.TAKEOVER_REASON, reason
    assert tasks[killed][0].data.tags[tracking.FAILURE_TAG] == tracking.TAKEOVER_REASON
    (parent,) = [r for r in runs_of(db_uri) if r.data.tags.get("ntk_sweep.role") != "job"]
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
@needs_real_slurm
def test_real_slurm_time_limit_marks_the_run_killed_and_the_sweep_ends_cleanly(slurm_sweep, db_uri):
    """The time-limit signal on a real SLURM (USR2 in a job with a 10-minute limit: submitit
    counts it as timed out once the job ran min(0.8 limit, limit - 10 min), here at once) with
    no requeue left (`max_num_timeout=0`): the run is KILLED (not FAILED), the job returns, the
    launcher exits 0 without a traceback."""
    launcher = slurm_sweep("hydra.launcher.timeout_min=10", "hydra.launcher.max_num_timeout=0")
    (task,) = _wait_until("the task training", lambda: _training(db_uri, 1), launcher)
    subprocess.run(["scancel", "--signal=USR2", task], check=True, timeout=30)
    rc, out = _ended(launcher)
    assert rc == 0, out[-3000:]
    assert "Traceback" not in out
    assert "0/1 finished, 0 failed, 1 killed" in out
    (run,) = _job_runs(db_uri)
    assert run.info.status == "KILLED"
    assert run.data.tags[tracking.FAILURE_TAG].startswith("killed by time limit (Job not requeued")


@pytest.mark.slow
@needs_real_slurm
def test_real_slurm_timed_out_task_with_a_requeue_left_finishes_on_requeue(slurm_sweep, db_uri):
    """The time-limit signal with a requeue left (`max_num_timeout=1`): submitit requeues the
    timed-out task, whose next attempt (SLURM_RESTART_COUNT 1) takes the config over and
    finishes it; the first attempt is KILLED with what it logged kept."""
    launcher = slurm_sweep(
        "hydra.launcher.timeout_min=10", "hydra.launcher.max_num_timeout=1", steps=10000
    )
    (task,) = _wait_until("the task training", lambda: _training(db_uri, 1), launcher)
    subprocess.run(["scancel", "--signal=USR2", task], check=True, timeout=30)
    rc, out = _ended(launcher)
    assert rc == 0, out[-3000:]
    assert "Traceback" not in out
    assert "1/1 finished, 0 failed, 0 killed" in out
    (first, again) = _by_task(db_uri)[task]
    assert (first.info.status, again.info.status) == ("KILLED", "FINISHED")
    assert again.data.tags[tracking.SLURM_RESTART_TAG] == "1"
    assert mlflow.MlflowClient(db_uri).get_metric_history(first.info.run_id, "loss")


@pytest.mark.slow
@needs_real_slurm
def test_real_slurm_cancelling_the_array_kills_every_run_and_sigterm_kills_the_parent(
    slurm_sweep, db_uri
):
    """`scancel <array job>` while both tasks train: SLURM's SIGTERM marks each run KILLED with
    what it logged kept; SIGTERM of the launcher (still waiting for results that will not come)
    marks the sweep's parent KILLED. Nothing is left RUNNING.

    A task SLURM SIGKILLs after KillWait without its SIGTERM having reached the Python process
    (seen on this one-node cluster under load: the task trained on until SIGKILL) is closed by
    the launcher's heartbeat instead, as `process died: ...`."""
    launcher = slurm_sweep("seed=0,1")
    running = _wait_until("2 tasks training", lambda: _training(db_uri, 2), launcher)
    (array,) = {task.split("_")[0] for task in running}
    subprocess.run(["scancel", array], check=True, timeout=30)
    _wait_until(
        "both runs KILLED",
        lambda: [r.info.status for r in _job_runs(db_uri)] == ["KILLED", "KILLED"],
        launcher,
        ends=True,  # with accounting (sacct) it stops at the first cancelled task
    )
    if launcher.poll() is None:  # no accounting: the launcher cannot see the tasks end
        launcher.send_signal(signal.SIGTERM)
    rc, out = _ended(launcher, timeout=120)
    assert rc != 0
    client = mlflow.MlflowClient(db_uri)
    for run in _job_runs(db_uri):
        reason = run.data.tags[tracking.FAILURE_TAG]
        assert reason == "killed by SIGTERM" or reason.startswith("process died: pid "), reason
        assert client.get_metric_history(run.info.run_id, "loss")
    (parent,) = [r for r in runs_of(db_uri) if r.data.tags.get("ntk_sweep.role") != "job"]
    assert parent.info.status == "KILLED"


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    """The folder of PostgreSQL's server binaries (Debian: /usr/lib/postgresql/<v>/bin)."""
    found = shutil.which("initdb") or shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


def _as_server_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` system user."""
    if os.geteuid() != 0:
        return []
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root without a `postgres` user: PostgreSQL refuses root")
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as `postgres`")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="module")
def postgres_server():
    """A throwaway PostgreSQL server (initdb + pg_ctl) on a free loopback port, user `mlflow`
    with a password, shared by this module's tests; stopped and removed afterwards. Yields
    its port."""
    pytest.importorskip("psycopg", reason="needs the postgres extra: pip install -e '.[postgres]'")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("needs a PostgreSQL server (initdb, pg_ctl): apt-get install postgresql")
    prefix = _as_server_user()
    home = Path(tempfile.mkdtemp(prefix="ntk-sweep-pg-"))  # not pytest's root-only tmp
    data, port = home / "data", _free_port()
    (home / "pw").write_text(SECRET + "\n")
    if prefix:
        shutil.chown(home, "postgres")
        shutil.chown(home / "pw", "postgres")
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "mlflow",
            "--pwfile",
            str(home / "pw"),
            "-A",
            "scram-sha-256",
            "--no-sync",
        ],
        **run,
    )
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {home} -c fsync=off"
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run([*pg_ctl, "-o", opts, "-l", str(home / "pg.log"), "-w", "start"], **run)
    try:
        yield port
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def postgres(postgres_server, request) -> str:
    """A new, empty database on the shared server, named after the test; its URI."""
    import psycopg

    name = "db_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:40].lower()
    with psycopg.connect(
        host="127.0.0.1",
        port=postgres_server,
        user="mlflow",
        password=SECRET,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://mlflow:{SECRET}@127.0.0.1:{postgres_server}/{name}"


@pytest.mark.slow
def test_sweep_straight_into_postgresql_with_a_password_never_logged(tmp_path, postgres):
    """The README's direct recipe: `tracking.uri=postgresql+psycopg://user:pw@host/db` on a
    new database (MLflow creates its tables), a 2-job sweep; every run FINISHED, and the
    password in no param, tag, artifact, stdout or stderr line."""
    res = cli(
        "-m",
        *TINY,
        "seed=0,1",
        "tracking.figures=false",
        f"tracking.uri={postgres}",
        f"tracking.artifact_location={tmp_path / 'artifacts'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert SECRET not in res.stdout + res.stderr
    client = mlflow.MlflowClient(postgres)
    runs = runs_of(postgres)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    job = next(r for r in runs if r.data.tags["ntk_sweep.role"] == "job")
    assert job.data.params["tracking.uri"] == postgres.replace(SECRET, "***")
    for run in runs:
        assert not [t for t in everything_logged(client, run) if SECRET in t]


@pytest.fixture
def mlflow_server(postgres, tmp_path):
    """`mlflow server` on that PostgreSQL, serving artifacts from tmp_path/served, on a free
    loopback port (1 worker); yields its http:// URI, and stops its process group after."""
    import urllib.request

    port, served = _free_port(), tmp_path / "served"
    log = tmp_path / "mlflow-server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlflow", "server"),
                *("--backend-store-uri", postgres, "--artifacts-destination", str(served)),
                *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            ],
            env=env_without("MLFLOW_TRACKING_URI"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers in one process group, stopped together
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("mlflow server did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)


@pytest.mark.slow
def test_sweep_through_an_mlflow_server_on_postgresql(tmp_path, mlflow_server):
    """The README's server recipe: `mlflow server --backend-store-uri postgresql+psycopg://...`
    and a 2-job sweep with tracking.uri=http://...: read back from the server, every run is
    FINISHED under its parent, and each job's logged loss history is the loss
    (1/2N) sum (f - y)^2 (MATH.md s.1) of the outputs in its served arrays/ntk.npz artifact."""
    import numpy as np
    import yaml

    res = cli(
        "-m",
        *TINY,
        "seed=0,1",
        "tracking.figures=false",
        f"tracking.uri={mlflow_server}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2/2 finished, 0 failed, 0 killed" in res.stdout + res.stderr
    client = mlflow.MlflowClient(mlflow_server)
    runs = runs_of(mlflow_server)
    (parent,) = [r for r in runs if r.data.tags.get("ntk_sweep.role") != "job"]
    jobs = [r for r in runs if r.data.tags.get("ntk_sweep.role") == "job"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["seed"] for r in jobs) == ["0", "1"]
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    for job in jobs:
        assert job.info.artifact_uri.startswith("mlflow-artifacts:")  # served, not a local path
        (dst := tmp_path / f"read-{job.info.run_id}").mkdir()
        folder = Path(client.download_artifacts(job.info.run_id, "", dst_path=str(dst)))
        config = yaml.safe_load((folder / "config" / "config.yaml").read_text())
        assert str(config["seed"]) == job.data.params["seed"]
        arrays = np.load(folder / "arrays" / "ntk.npz")
        f, y = arrays["f_train"], arrays["y_train"]
        expected = 0.5 * np.mean((f - y.reshape(f.shape[1:])) ** 2, axis=tuple(range(1, f.ndim)))
        history = sorted(
            (m.step, m.value) for m in client.get_metric_history(job.info.run_id, "loss")
        )
        assert [s for s, _ in history] == arrays["steps"].tolist()
        np.testing.assert_allclose([v for _, v in history], expected, rtol=1e-12, atol=0)
    assert list((tmp_path / "served").rglob("ntk.npz"))  # stored by the server
