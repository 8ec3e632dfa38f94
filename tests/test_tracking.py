"""MetricLog: per-step metrics batched into few requests, nothing lost (real SQLite store);
damaged, vanished and full stores."""

import contextlib
import hashlib
import logging
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from ntk_sweep import tracking
from ntk_sweep.config import TrackingError
from ntk_sweep.tracking import MetricLog
from tests.test_app import RUN_PY, runs_of


def test_metric_log_batches_and_flushes_everything(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    batched = MetricLog(client, run_id, every_s=3600)
    for step in range(5):
        batched.log({"loss": 1.0 / (step + 1), "undefined": math.nan}, step)
    assert client.get_metric_history(run_id, "loss") == []  # nothing sent yet
    batched.flush(tags={"ntk_sweep.heartbeat": "123"})
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert history == [(s, 1.0 / (s + 1)) for s in range(5)]
    run = client.get_run(run_id)
    assert "undefined" not in run.data.metrics  # NaN means undefined: not logged
    assert run.data.tags["ntk_sweep.heartbeat"] == "123"

    every_step = MetricLog(client, run_id, every_s=0)
    every_step.log({"drift": 0.5}, 7)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "drift")] == [(7, 0.5)]


# --------------------------------------------------------------------------- damaged / full stores
# (real SQLite stores, real processes; the full disk is a real 6 MB tmpfs)

# MLflow's own log lines (`2026/01/31 12:00:00 INFO mlflow...`) and Hydra's (`[2026-01-31 ...`)
LOG_LINE = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d [A-Z]+ |\[\d{4}-\d\d-\d\d )")


def error_lines(stderr: str) -> list[str]:
    """What a command printed on stderr, log lines aside."""
    return [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


def damage(path: Path) -> None:
    """Overwrite 4 KiB of an SQLite database, as a disk or file-system fault would: the page
    where table `runs` starts (a page in use; a page on the free list holds nothing)."""
    with contextlib.closing(sqlite3.connect(path)) as con:
        (page,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()
        (size,) = con.execute("PRAGMA page_size").fetchone()
    with open(path, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xa5" * 4096)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory) -> Path:
    """A real MLflow SQLite store (the app's experiment) holding one FINISHED run."""
    path = tmp_path_factory.mktemp("finished") / "mlflow.db"
    client = mlflow.MlflowClient(f"sqlite:///{path}")
    run_id = client.create_run(client.create_experiment("ntk-sweep"), run_name="done").info.run_id
    client.log_metric(run_id, "kernel_drift", 0.25)
    client.set_terminated(run_id, "FINISHED")
    return path


def test_a_damaged_store_or_a_file_that_is_no_database_is_refused_read_only(
    finished_store, tmp_path
):
    tracking.check_tracking_uri(f"sqlite:///{finished_store}")  # intact
    db = tmp_path / "mlflow.db"
    shutil.copy(finished_store, db)
    damage(db)
    before = digest(db)
    with pytest.raises(TrackingError) as err:
        tracking.check_tracking_uri(f"sqlite:///{db}")
    message = str(err.value)
    assert message.startswith(f"tracking store sqlite:///{db} is damaged (quick_check: ")
    assert message.endswith("): restore it from a backup or choose another tracking.uri")
    assert "\n" not in message and "***" not in message
    assert digest(db) == before  # read only
    other = tmp_path / "notes.db"
    other.write_text("not a database\n" * 300)
    with pytest.raises(TrackingError) as err:
        tracking.check_tracking_uri(f"sqlite:///{other}", option="--tracking-uri")
    assert str(err.value) == (
        f"tracking store sqlite:///{other} is damaged (quick_check: file is not a database): "
        "restore it from a backup or choose another --tracking-uri"
    )


def test_a_store_gone_while_its_artifacts_stay_is_one_warning(tmp_path, caplog):
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    with caplog.at_level(logging.WARNING, logger="ntk_sweep.tracking"):
        tracking.check_tracking_uri(uri)  # a new store, no artifacts: nothing to say
        assert caplog.records == []
        (tmp_path / "mlruns" / "0123abcd" / "artifacts" / "config").mkdir(parents=True)
        tracking.check_tracking_uri(uri)  # deleted
        db.write_bytes(b"")
        tracking.check_tracking_uri(uri)  # truncated to 0 bytes
    deleted, truncated = (r.getMessage() for r in caplog.records)
    assert deleted == (
        f"tracking store {uri} is missing but {tmp_path / 'mlruns'} holds the artifacts of 1 "
        "run(s): the runs recorded there are no longer in the store (restore mlflow.db from a "
        "backup to keep them); a new, empty store is created"
    )
    assert truncated.startswith(f"tracking store {uri} is empty (0 bytes) but ")


def test_a_full_database_or_disk_is_recognised_and_becomes_one_line(tmp_path):
    con = sqlite3.connect(tmp_path / "small.db")
    con.execute("PRAGMA max_page_count = 2")  # SQLite's own limit: SQLITE_FULL, for real
    con.execute("CREATE TABLE t (x)")
    with pytest.raises(sqlite3.OperationalError) as full:
        con.executemany("INSERT INTO t VALUES (?)", [(b"x" * 1000,)] * 50)
    con.close()
    assert tracking.store_full_reason(full.value) == "database or disk is full"
    wrapped = RuntimeError("the store failed")
    wrapped.__cause__ = full.value  # as MLflow raises it (MlflowException from ...)
    assert tracking.store_full_reason(wrapped) == "database or disk is full"
    assert tracking.store_full_reason(ValueError("database is locked")) == ""
    if Path("/dev/full").exists():  # a write that meets ENOSPC, for real
        with pytest.raises(OSError) as nospace, open("/dev/full", "w") as f:
            f.write("x")
            f.flush()
        assert tracking.store_full_reason(nospace.value).startswith("No space left on device")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(tracking.StoreFullError) as err, tracking.full_store_is_fatal(uri):
        raise wrapped
    assert str(err.value) == (
        f"tracking store {uri} is full: database or disk is full; free space (or point "
        "tracking.uri at another store), then run the same command again: finished runs are "
        "kept, and a sweep skips them"
    )
    with pytest.raises(ValueError), tracking.full_store_is_fatal(uri):
        raise ValueError("any other error goes through")


@pytest.mark.slow
def test_a_damaged_store_stops_a_run_a_sweep_and_aggregate_with_one_line(finished_store, tmp_path):
    db = tmp_path / "mlflow.db"
    shutil.copy(finished_store, db)
    damage(db)
    before = digest(db)
    uri = f"sqlite:///{db}"
    tiny = ("width=8", "train.steps=3", "tracking.figures=none", f"tracking.uri={uri}")
    commands = {
        "run": [sys.executable, str(RUN_PY), *tiny, f"hydra.run.dir={tmp_path / 'run'}"],
        "sweep": [
            sys.executable,
            str(RUN_PY),
            "-m",
            *tiny,
            "seed=0,1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        "aggregate": [sys.executable, "-m", "ntk_sweep.aggregate", "--tracking-uri", uri],
    }
    for name, command in commands.items():
        res = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env()
        )
        assert res.returncode == 2, (name, res.stderr[-2000:])
        (line,) = error_lines(res.stderr)
        option = "--tracking-uri" if name == "aggregate" else "tracking.uri"
        assert line.startswith(f"error: tracking store {uri} is damaged (quick_check: "), line
        assert line.endswith(f"restore it from a backup or choose another {option}"), line
        assert "Traceback" not in res.stdout + res.stderr and "ntk-sweep run" not in res.stdout
        assert digest(db) == before, name  # nothing written into it
    assert not (tmp_path / "run" / "arrays").exists() and not (tmp_path / "sweep" / "0").exists()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


@pytest.fixture
def small_disk(tmp_path):
    """A real 6 MB file system (tmpfs; needs root, as in CI), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        why = mount.stderr.strip() if mount.returncode != 0 else ""
    except (OSError, subprocess.SubprocessError) as exc:  # no mount command
        why = str(exc)
    if why:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {why}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_stops_the_sweep_with_one_line_and_the_rerun_completes_it(small_disk, tmp_path):
    """A sweep into a store on a nearly full disk: the job whose write meets `database or disk
    is full` (or ENOSPC for an artifact) is marked FAILED, the sweep stops with one line and
    exit code 2, its parent is marked KILLED; once space is freed, the same command skips the
    finished jobs (unchanged) and runs the others."""
    db = small_disk / "mlflow.db"
    pad = small_disk / "pad"
    free = os.statvfs(small_disk)
    pad.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 2_000_000))  # ~2 MB left
    command = [
        sys.executable,
        str(RUN_PY),
        "-m",
        "width=8,16",
        "seed=0,1,2,3",
        "train.steps=5",
        "tracking.figures=none",
        f"tracking.uri=sqlite:///{db}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]

    def sweep() -> subprocess.CompletedProcess:
        return subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env()
        )

    res = sweep()
    assert res.returncode == 2, res.stderr[-3000:]
    (line,) = error_lines(res.stderr)
    assert line.startswith(f"error: tracking store sqlite:///{db} is full: "), line
    assert line.endswith(
        "then run the same command again: finished runs are kept, and a sweep skips them"
    )
    assert "Traceback" not in res.stdout + res.stderr
    runs = runs_of(f"sqlite:///{db}")
    (parent,) = [r for r in runs if r.data.tags.get("ntk_sweep.role") == "sweep"]
    assert parent.info.status == "KILLED"
    jobs = [r for r in runs if r.data.tags.get("ntk_sweep.role") == "job"]
    finished = {r.info.run_id: r.data.metrics for r in jobs if r.info.status == "FINISHED"}
    (failed,) = [r for r in jobs if r.info.status != "FINISHED"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["ntk_sweep.failure_reason"].startswith("tracking store full: ")
    assert 1 <= len(finished) < 8

    # ntk-aggregate reads the sweep, writes --out, then cannot log to the (now quite) full store
    with contextlib.suppress(OSError), open(small_disk / "rest", "wb") as rest:
        while True:
            rest.write(b"\0" * 65536)
            rest.flush()
    out = tmp_path / "aggregate"
    res = subprocess.run(
        [sys.executable, "-m", "ntk_sweep.aggregate", "--tracking-uri", f"sqlite:///{db}"]
        + ["--sweep", parent.info.run_id, "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert res.returncode == 2, res.stderr[-3000:]
    (line,) = error_lines(res.stderr)
    assert line.startswith(f"error: tracking store sqlite:///{db} is full: "), line
    assert line.endswith(
        f"free space, then run the same command again (or pass --no-log; the outputs are in {out})"
    ), line
    assert (out / "summary.csv").is_file() and "Traceback" not in res.stdout + res.stderr
    (small_disk / "rest").unlink()

    pad.unlink()  # space freed: the same command again
    res = sweep()
    assert res.returncode == 0, res.stderr[-3000:]
    assert "8/8 finished" in res.stdout and "Traceback" not in res.stdout + res.stderr
    runs = runs_of(f"sqlite:///{db}")
    jobs = [r for r in runs if r.data.tags.get("ntk_sweep.role") == "job"]
    done = [r for r in jobs if r.info.status == "FINISHED"]
    assert len({r.data.tags["ntk_sweep.config_hash"] for r in done}) == len(done) == 8
    assert {r.info.run_id: r.data.metrics for r in done if r.info.run_id in finished} == finished
    parents = [r for r in runs if r.data.tags.get("ntk_sweep.role") == "sweep"]
    assert sorted(p.info.status for p in parents) == ["FINISHED", "KILLED"]
