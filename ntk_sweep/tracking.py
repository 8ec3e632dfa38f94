"""MLflow tracking for the sweep app: store location, checks, runs, params, metrics, artifacts.

Only the explicit client (`mlflow.MlflowClient(uri)`) is used, never the fluent API's global
active run or tracking URI, because joblib workers run several jobs in one process.

Store location (first that is set): `tracking.uri`, `$MLFLOW_TRACKING_URI`, else
`sqlite:///<launch dir>/mlflow.db`. Relative SQLite/file paths are taken relative to the launch
directory (Hydra's `runtime.cwd`), so `hydra.job.chdir=true` never moves the store.
Before any training the URI is checked: malformed -> `ConfigError`; server down, path not
writable, not a database -> `TrackingError` (one line each).

The tags, params and metric names written here are the public MLflow contract of DESIGN.md.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ntk_sweep.config import ConfigError, TrackingError

log = logging.getLogger(__name__)

PARENT_ID_FILE = "mlflow_parent_run_id"
# Written into the sweep folder when the launching process stops before the sweep's end (a
# signal, a launcher error): jobs in other processes (joblib workers, submitit tasks) read it at
# their start and at every progress tick, and stop (KILLED) instead of running on unrecorded.
STOP_FILE = "sweep_stopped"
TAG = "ntk_sweep."
ROLE_TAG = TAG + "role"
FAILURE_TAG = TAG + "failure_reason"
CONFIG_HASH_TAG = TAG + "config_hash"
HEARTBEAT_TAG = TAG + "heartbeat"  # unix time (s) of the job's latest sign of life
# On a resumed sweep's parent run, one tag per job that reused an earlier run:
# `ntk_sweep.resumed_run.<job_num>` = that run's id (aggregate_sweep includes those runs).
RESUMED_RUN_TAG = TAG + "resumed_run."
PARENT_TAG = "mlflow.parentRunId"
# A new experiment is a model-training one for the MLflow UI (3.4+ asks for the type otherwise).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
# The SLURM task a run belongs to (`<array job>_<task>` or the job id) and its attempt
# (SLURM_RESTART_COUNT): a requeued task (preemption, submitit's timeout requeue) keeps the id
# and counts up, so it recognises its own earlier run and takes it over.
SLURM_JOB_TAG = TAG + "slurm_job"
SLURM_RESTART_TAG = TAG + "slurm_restart"
DEAD_REASON = "no heartbeat: process died"
# Where a job (or a sweep's launching process) runs: host name, pid and, on Linux, the process's
# identity `<boot id>:<start time in clock ticks>`, so that on the same host a dead process is
# known for certain (its pid is gone, or is another process now) instead of after a stale heartbeat.
HOST_TAG = TAG + "host"
PID_TAG = TAG + "pid"
PROCESS_TAG = TAG + "process"
STALE_PARAM = "tracking.stale_after_s"  # a run's own staleness threshold, as logged
TAKEOVER_REASON = "requeued: the same SLURM task started again and took the run over"
HEARTBEAT_EVERY_S = 30.0  # a running job refreshes its heartbeat at least this often
# Config keys that never change results: left out of the fingerprint (and `force` of the params).
NOT_HASHED = ("tracking", "hydra", "force")
LOCK_RETRIES = 8  # bounded retry of a write that met SQLite's "database is locked"
PARAM_VALUE_MAX = 6000  # MLflow's limit on a param value
PARAMS_PER_BATCH = 100  # MLflow's limit on params per log_batch request
METRICS_PER_BATCH = 1000
METRIC_FLUSH_S = 2.0  # MetricLog: at most one metrics request per this many seconds
HTTP_TIMEOUT_S = 5.0
DB_CONNECT_TIMEOUT_S = 5.0
DB_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
# Errors of two processes creating / migrating one new database at once (SQLite without the
# lock, PostgreSQL, MySQL): the loser retries once the winner's tables exist.
SETUP_RACE = (
    "already exists",
    "duplicate column",
    "uniqueviolation",
    "duplicate key",
    "alembic_version",
    "database is locked",
)
SETUP_RETRIES = 6
DB_SCHEMES = ("postgresql", "mysql", "mssql")  # SQLAlchemy back ends MLflow supports
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_WHERE_TO = "point {option} or MLFLOW_TRACKING_URI at a writable location"
# A write that failed because the store's database or disk is full (SQLite's SQLITE_FULL, the
# artifact folder's ENOSPC / EDQUOT, a database server's full disk).
STORE_FULL = ("database or disk is full", "no space left on device", "disk quota exceeded")
STORE_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_EXPECTED_URI = (
    "sqlite:///PATH, http(s)://HOST[:PORT], postgresql://..., mysql://... or mssql://..."
)


# --------------------------------------------------------------------------- secrets

# `scheme://user:password@host`: the password part, wherever it appears in a text
# (Hydra escapes colons as `\:` when it prints a sweep's overrides, repr() doubles that)
_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*\\*://[^\s/@:\\]*)(\\*:)([^\s@/]*)@")
# `?password=...` / `&passwd=...` in a URI's query (SQLAlchemy / libpq keyword form)
_QUERY_SECRET_RE = re.compile(r"([?&](?:password|passwd|pwd|token|secret)=)[^&\s]*", re.I)
REDACTED = "***"
# Artifacts that are text and may quote the config (Hydra's .hydra/*.yaml, the job's .log)
TEXT_ARTIFACT_SUFFIXES = (".yaml", ".yml", ".log", ".txt", ".json")


def redact_uri(text: str) -> str:
    """`text` with the password of every credentialed URI in it replaced by `***`
    (`postgresql://user:pw@host/db` -> `postgresql://user:***@host/db`, also `?password=pw`).

    Applied to everything ntk-sweep writes to the store or prints: params, tags, the saved
    config and Hydra files, log lines and error messages."""
    text = _USERINFO_RE.sub(rf"\1\2{REDACTED}@", str(text))
    return _QUERY_SECRET_RE.sub(rf"\1{REDACTED}", text)


def _redacting_factory(make: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        message = record.getMessage()
        clean = redact_uri(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            if redact_uri(text) != text:
                record.exc_text = redact_uri(text)
        return record

    factory.ntk_sweep_redacts = True  # type: ignore[attr-defined]
    return factory


def install_log_redaction() -> None:
    """Redact credentials from every log record of this process (message and traceback),
    whatever logs it (Hydra's launchers print each job's overrides) and wherever it goes
    (console, the job's .log file). A record factory, since Hydra re-creates its handlers for
    every job. Idempotent: installed once per process."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "ntk_sweep_redacts", False):
        logging.setLogRecordFactory(_redacting_factory(current))


# --------------------------------------------------------------------------- location


def launch_dir() -> str:
    """The directory the user launched from (Hydra's runtime.cwd when inside a Hydra app)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return str(HydraConfig.get().runtime.cwd)
    except Exception:  # pragma: no cover - hydra missing or not configured
        pass
    return os.getcwd()


def _absolute(path: str, base: str) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else Path(base) / p)


def resolve_tracking_uri(
    uri: str | None = None, base_dir: str | None = None, option: str = "tracking.uri"
) -> str:
    """`uri` (config, or the command-line `option`) > $MLFLOW_TRACKING_URI >
    sqlite:///<base_dir>/mlflow.db, made absolute.

    Raises ConfigError for a malformed URI (naming `option` or MLFLOW_TRACKING_URI).
    """
    base = base_dir or launch_dir()
    source = option
    if uri is None or str(uri).strip() == "":
        uri, source = os.environ.get("MLFLOW_TRACKING_URI", "").strip(), "MLFLOW_TRACKING_URI"
    if not uri:
        return "sqlite:///" + str(Path(base) / "mlflow.db")
    uri = str(uri).strip()
    m = _SCHEME_RE.match(uri)
    scheme = m.group(1).lower() if m and len(m.group(1)) > 1 else ""  # "C:" is a drive letter
    shown = redact_uri(uri)
    bad = ConfigError(f"{source}={shown} is invalid: expected {_EXPECTED_URI}")
    if not scheme or scheme == "file":  # MLflow's file store: refused by MLflow 3 unless allowed
        path = urlparse(uri).path if scheme else uri
        if not path or os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
            raise ConfigError(
                f"{source}={shown} is invalid: expected {_EXPECTED_URI} (MLflow's file "
                "store needs MLFLOW_ALLOW_FILE_STORE=true)"
            )
        return Path(_absolute(path, base)).as_uri()
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or len(uri) <= len("sqlite:///"):
            raise bad
        path, sep, query = uri[len("sqlite:///") :].partition("?")
        if path in ("", ":memory:"):
            raise bad
        return "sqlite:///" + _absolute(path, base) + sep + query
    if scheme in ("http", "https"):
        parsed = urlparse(uri)
        if not parsed.hostname:
            raise bad
        try:
            parsed.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError:
            raise bad from None
        return uri.rstrip("/")
    if scheme.split("+")[0] in DB_SCHEMES or scheme == "databricks":
        return uri
    raise bad


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].partition("?")[0])


def _sibling_mlruns(db: Path) -> Path:
    """The default artifact root of an SQLite store: `mlruns/` next to the database."""
    return db.parent / "mlruns"


def default_artifact_location(uri: str, configured: str | None = None) -> str | None:
    """Artifact root for a new experiment: configured, or `<db dir>/mlruns` for SQLite."""
    if configured:
        m = _SCHEME_RE.match(configured)
        if m and len(m.group(1)) > 1:
            return configured
        return Path(_absolute(configured, launch_dir())).as_uri()
    db = sqlite_path(uri)
    return _sibling_mlruns(db).as_uri() if db is not None else None


def check_tracking_uri(uri: str, option: str = "tracking.uri", writable: bool = True) -> None:
    """Fail fast (TrackingError, one line) if the store cannot be reached, is damaged or (with
    `writable`) cannot be written; the hints name `option` (the config key or CLI flag)."""
    where_to = _WHERE_TO.format(option=option)
    db = sqlite_path(uri)
    if db is not None:
        if db.exists() and db.is_dir():
            raise TrackingError(
                f"tracking store {uri} is unusable: {db} is a directory; {where_to}"
            )
        if writable:
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrackingError(
                    f"tracking store {uri} is not writable: cannot create {db.parent} "
                    f"({exc.strerror}); {where_to}"
                ) from None
            target = db if db.exists() else db.parent
            if not os.access(target, os.W_OK) or (db.exists() and not os.access(db, os.R_OK)):
                raise TrackingError(
                    f"tracking store {uri} is not writable: no write access to {target}; {where_to}"
                )
        check_sqlite_store(uri, option)
        return
    if uri.startswith(("http://", "https://")):
        _check_http(uri, option)
    elif (urlparse(uri).scheme or "").split("+")[0] in DB_SCHEMES:
        _check_database_server(uri, option)
    if uri.startswith("file:"):
        path = Path(urlparse(uri).path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"tracking store {uri} is not writable ({exc.strerror})") from None
        if not os.access(path, os.W_OK):
            raise TrackingError(f"tracking store {uri} is not writable: no write access")


def check_artifact_location(configured: str | None, base_dir: str | None = None) -> None:
    """Fail fast (TrackingError, one line) if a local `tracking.artifact_location` cannot hold
    artifacts: an existing file, a path under a file, or a folder without write access. Nothing
    is created; remote locations (s3://, ...) are left to MLflow."""
    if not configured:
        return
    m = _SCHEME_RE.match(configured)
    scheme = m.group(1).lower() if m and len(m.group(1)) > 1 else ""
    if scheme not in ("", "file"):
        return
    raw = urlparse(configured).path if scheme else configured
    path = Path(_absolute(raw, base_dir or launch_dir()))
    shown = f"tracking.artifact_location={configured}"
    if path.exists() and not path.is_dir():
        raise TrackingError(
            f"{shown} is invalid: {path} is a file, not a folder; choose a folder (or leave it "
            "unset: artifacts go next to the SQLite database)"
        )
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise TrackingError(
            f"{shown} is invalid: cannot create {path}, {ancestor} is a file; choose a folder"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise TrackingError(
            f"{shown} is not writable: no write access to {ancestor}; choose a writable folder"
        )


_INTACT: set[tuple[str, int]] = set()  # SQLite stores (path, inode) quick_check found intact


def check_sqlite_store(uri: str, option: str = "tracking.uri") -> None:
    """An SQLite store's file, before MLflow (SQLAlchemy) opens it: a damaged database (`PRAGMA
    quick_check` on a read-only connection finds a bad page) or a file that is not a database
    -> TrackingError; a database that is missing or empty while its `mlruns/` next to it holds
    runs' artifacts -> one warning (those runs are no longer in the store).

    A database another process holds locked is not checked (MLflow waits for the lock). One
    that passed is not checked again by the same process (each job of a sweep checks it): ~70 ms
    for a 60 MB store of 400 runs in the page cache, ~0.7 s from disk."""
    db = sqlite_path(uri)
    if db is None:
        return
    if not db.is_file() or db.stat().st_size == 0:
        _warn_lost_runs(uri, db)
        return
    key = (str(db), db.stat().st_ino)
    if key in _INTACT:
        return
    try:
        with contextlib.closing(
            sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=DB_CONNECT_TIMEOUT_S)
        ) as con:
            rows = con.execute("PRAGMA quick_check").fetchall()
    except sqlite3.OperationalError:  # locked, busy, cannot open: not a verdict on the file
        return
    except sqlite3.DatabaseError as exc:  # not a database, malformed header
        problem = str(exc)
    else:
        found = [str(r[0]).replace("*** in database main ***", "") for r in rows]
        problem = "; ".join(" ".join(f.split()) for f in found[:3] if f.strip())
        if problem == "ok":
            _INTACT.add(key)
            return
    raise TrackingError(
        f"tracking store {uri} is damaged (quick_check: {_one_line(problem)}): restore it from "
        f"a backup or choose another {option}"
    )


def _warn_lost_runs(uri: str, db: Path) -> None:
    """A store about to be created anew where `mlruns/` still holds runs' artifacts."""
    mlruns = _sibling_mlruns(db)
    # <run id>/artifacts (this app's experiments), <experiment id>/<run id>/artifacts (MLflow's)
    runs = {a.parent for g in ("*/artifacts", "*/*/artifacts") for a in mlruns.glob(g)}
    if runs:
        state = "empty (0 bytes)" if db.is_file() else "missing"
        log.warning(
            "tracking store %s is %s but %s holds the artifacts of %d run(s): the runs recorded "
            "there are no longer in the store (restore %s from a backup to keep them); a new, "
            "empty store is created",
            uri,
            state,
            mlruns,
            len(runs),
            db.name,
        )


def _check_http(uri: str, option: str = "tracking.uri") -> None:
    import urllib.error
    import urllib.request

    parsed = urlparse(uri)
    host = parsed.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parsed.port:
        netloc += f":{parsed.port}"
    health = parsed._replace(netloc=netloc).geturl() + "/health"  # no user:password
    try:
        with urllib.request.urlopen(health, timeout=HTTP_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # something answers (maybe 401 without credentials): reachable
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"tracking server {redact_uri(uri)} is unreachable ({reason}): start it, or point "
            f"{option} / MLFLOW_TRACKING_URI at a running server"
        ) from None


def _check_database_server(uri: str, option: str = "tracking.uri") -> None:
    """A TCP connection to the database server, `DB_CONNECT_TIMEOUT_S` at most: without it,
    an unreachable database fails only after SQLAlchemy's and MLflow's retries (~2 min)."""
    parsed = urlparse(uri)
    host = parsed.hostname
    if not host or host.startswith("/"):
        return  # a Unix socket (or the driver's default): left to the driver
    try:
        port = parsed.port or DB_DEFAULT_PORTS[parsed.scheme.split("+")[0]]
    except ValueError:
        raise ConfigError(
            f"{option}={redact_uri(uri)} is invalid: expected {_EXPECTED_URI}"
        ) from None
    try:
        with socket.create_connection((host, port), timeout=DB_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TrackingError(
            f"database server {host}:{port} of tracking store {redact_uri(uri)} is unreachable "
            f"({reason}, waited at most {DB_CONNECT_TIMEOUT_S:g}s): start it, or point "
            f"{option} / MLFLOW_TRACKING_URI at a running one"
        ) from None


# --------------------------------------------------------------------------- store


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


class StoreFullError(TrackingError):
    """A write to the tracking store failed because its database or disk is full (one line)."""


def store_full_reason(exc: BaseException | None) -> str:
    """What in `exc`, or an exception it chains, says the store's database or disk is full
    (SQLite's `database or disk is full`, ENOSPC / EDQUOT writing an artifact); '' if nothing."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in STORE_FULL_ERRNOS:
            target = exc.filename2 or exc.filename  # a copy's destination, else the file
            return f"{exc.strerror} writing {target}" if target else str(exc.strerror)
        text = str(exc).lower()
        for marker in STORE_FULL:
            if marker in text:
                return marker
        exc = exc.__cause__ or exc.__context__
    return ""


RUN_AGAIN = (
    "free space (or point tracking.uri at another store), then run the same command again: "
    "finished runs are kept, and a sweep skips them"
)


def store_full_error(uri: str, reason: str, advice: str = RUN_AGAIN) -> StoreFullError:
    return StoreFullError(
        f"tracking store {redact_uri(uri)} is full: {redact_uri(reason)}; {advice}"
    )


@contextlib.contextmanager
def full_store_is_fatal(uri: str, advice: str = RUN_AGAIN) -> Iterator[None]:
    """A write inside the block that fails because the store is full raises `StoreFullError`
    (one line ending with `advice`; run.py exits with code 2, a sweep stops there) instead, and
    MLflow does not log that failure with its traceback."""
    _quiet_full_store_logs()
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        reason = store_full_reason(exc)
        if not reason:
            raise
        raise store_full_error(uri, reason, advice) from None


class _DropFullStoreErrors(logging.Filter):
    """MLflow logs each failed SQL write with its traceback and statement before raising it:
    for a full store, the one line of `StoreFullError` says it instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not store_full_reason(exc)


def _quiet_full_store_logs() -> None:
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _DropFullStoreErrors) for f in logger.filters):
        logger.addFilter(_DropFullStoreErrors())


def _retry(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `fn`, retrying a few times (backing off up to ~10 s in all) while SQLite reports
    "database is locked" (many jobs writing at once; MLflow already waits 20 s per statement)."""
    delay = 0.1
    for attempt in range(LOCK_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt == LOCK_RETRIES - 1 or "database is locked" not in str(exc):
                raise
            log.warning("tracking store busy (database is locked): retrying in %.1fs", delay)
            time.sleep(delay)
            delay = min(2 * delay, 3.0)
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """For an SQLite store: an exclusive `fcntl.flock` on the database's folder, so processes
    starting at once (an `sbatch --array` of `run.py`, several sweeps) create and migrate a
    new database one at a time (the folder, not a lock file: nothing is left next to the
    database). Other stores: no lock (see `open_store`'s retry)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(db.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _setup_retry(fn: Callable[..., Any], *args: Any) -> Any:
    """Call `fn`, retrying (backing off, ~15 s in all) while another process is still creating
    or migrating the same new database (PostgreSQL `UniqueViolation alembic_version`, ...)."""
    delay = 0.5
    for attempt in range(SETUP_RETRIES):
        try:
            return fn(*args)
        except Exception as exc:
            text = str(exc).lower()
            if attempt == SETUP_RETRIES - 1 or not any(k in text for k in SETUP_RACE):
                raise
            log.warning(
                "tracking store being created by another process (%s): retrying in %.1fs",
                _one_line(exc)[:80],
                delay,
            )
            time.sleep(delay)
            delay = min(2 * delay, 4.0)
    raise AssertionError("unreachable")  # pragma: no cover


def open_store(uri: str, experiment: str, artifact_location: str | None = None):
    """Client and experiment id (created if needed; creates the SQLite database too, under
    `store_lock`). Any store failure becomes a one-line TrackingError (credentials redacted).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    shown = redact_uri(uri)
    _quiet_full_store_logs()
    try:
        with store_lock(uri):
            client = mlflow.MlflowClient(tracking_uri=uri)
            exp = _setup_retry(client.get_experiment_by_name, experiment)
            if exp is None:
                try:
                    location = default_artifact_location(uri, artifact_location)
                    exp_id = client.create_experiment(
                        experiment, artifact_location=location, tags=EXPERIMENT_TAGS
                    )
                except MlflowException:  # created concurrently by another process
                    exp = client.get_experiment_by_name(experiment)
                    if exp is None:
                        raise
                    exp_id = exp.experiment_id
            else:
                if exp.lifecycle_stage == "deleted":
                    raise TrackingError(
                        f"tracking.experiment={experiment} is deleted in {shown}: restore it "
                        "(mlflow experiments restore) or choose another name"
                    )
                _warn_ignored_artifact_location(exp, uri, artifact_location)
                exp_id = exp.experiment_id
    except TrackingError:
        raise
    except Exception as exc:
        if reason := store_full_reason(exc):
            raise store_full_error(uri, reason) from None
        raise TrackingError(
            f"tracking store {shown} failed: {redact_uri(_one_line(exc))}"
        ) from None
    return client, exp_id


def _warn_ignored_artifact_location(exp, uri: str, configured: str | None) -> None:
    """An experiment's artifact location is fixed when it is created: say so if the config
    asks for another one."""
    if not configured:
        return
    wanted = default_artifact_location(uri, configured)
    if wanted and wanted.rstrip("/") != str(exp.artifact_location).rstrip("/"):
        log.warning(
            "tracking.artifact_location=%s is ignored: experiment %s already exists with "
            "artifact location %s (fixed when an experiment is created; choose a new "
            "tracking.experiment to use another location)",
            configured,
            exp.name,
            exp.artifact_location,
        )


def create_run(
    client,
    experiment_id: str,
    run_name: str | None,
    tags: Mapping[str, str],
    parent_id: str | None = None,
) -> str:
    tags = {k: redact_uri(v)[:PARAM_VALUE_MAX] for k, v in tags.items()}
    if parent_id:
        tags[PARENT_TAG] = parent_id
    run = _retry(client.create_run, experiment_id, run_name=run_name or None, tags=tags)
    return run.info.run_id


def end_run(client, run_id: str, status: str) -> None:
    """Mark a run FINISHED, FAILED or KILLED (never raises: the run's data is already logged)."""
    try:
        _retry(client.set_terminated, run_id, status=status)
    except Exception as exc:  # pragma: no cover - store vanished mid-run
        log.error("could not mark run %s %s: %s", run_id, status, _one_line(exc))


def set_tag(client, run_id: str, key: str, value: str) -> None:
    _retry(client.set_tag, run_id, key, redact_uri(value)[:PARAM_VALUE_MAX])


# --------------------------------------------------------------------------- params / metrics


def _param_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        text = json.dumps(list(value))
    else:
        text = str(value)
    return text[:PARAM_VALUE_MAX]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> {'model.width': '100', ...}; lists become JSON text."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = _param_value(value)
    return out


def log_params(client, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, redact_uri(v)[:PARAM_VALUE_MAX]) for k, v in sorted(params.items())]
    for i in range(0, len(items), PARAMS_PER_BATCH):
        _retry(client.log_batch, run_id, params=items[i : i + PARAMS_PER_BATCH])


class MetricLog:
    """The per-step metrics of one run, sent in batches: one `log_batch` request when
    `every_s` seconds have passed since the last one, and on `flush()`.

    A run logs ~20 metrics at ~25 log steps; one SQLite request per step cost ~30 ms each (a
    third of a short run), batching makes it a handful while the UI still shows progress.
    The caller flushes before ending the run, whatever the outcome, so nothing is lost.
    """

    def __init__(self, client, run_id: str, every_s: float = METRIC_FLUSH_S) -> None:
        self.client, self.run_id, self.every_s = client, run_id, every_s
        self._pending: list = []
        self._last = time.monotonic()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._pending += [
            Metric(k, float(v), ts, int(step))
            for k, v in metrics.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        ]
        if time.monotonic() - self._last >= self.every_s:
            self.flush()

    def flush(self, tags: Mapping[str, str] | None = None) -> None:
        """Send what is pending (and `tags`, e.g. the heartbeat) now."""
        from mlflow.entities import RunTag

        pending, self._pending = self._pending, []
        self._last = time.monotonic()
        run_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, len(pending), METRICS_PER_BATCH):
            _retry(
                self.client.log_batch,
                self.run_id,
                metrics=pending[i : i + METRICS_PER_BATCH],
                tags=run_tags if i == 0 else [],
                synchronous=True,
            )
        if run_tags and not pending:
            _retry(self.client.log_batch, self.run_id, tags=run_tags, synchronous=True)


def _needs_redaction(path: Path) -> bool:
    if path.suffix.lower() not in TEXT_ARTIFACT_SUFFIXES:
        return False
    text = path.read_text(errors="replace")
    return redact_uri(text) != text


def _redacted_copy(src: Path, dst: Path) -> None:
    if _needs_redaction(src):
        dst.write_text(redact_uri(src.read_text(errors="replace")))
    else:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def _no_partial_copy() -> Iterator[None]:
    """A copy into the artifact store that runs out of space leaves its destination truncated:
    removed (the run never logged it), so the space is there to mark the run FAILED."""
    try:
        yield
    except OSError as exc:
        partial = exc.filename2
        if exc.errno in STORE_FULL_ERRNOS and isinstance(partial, str) and os.path.isfile(partial):
            with contextlib.suppress(OSError):
                os.remove(partial)
        raise


def log_artifacts(client, run_id: str, local_dir: str | Path, artifact_path: str) -> None:
    """Log a folder's files; text files quoting a credentialed URI (Hydra's `.hydra/*.yaml`)
    are logged as redacted copies, the local files are left as they are."""
    folder = Path(local_dir)
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    files = [f for f in folder.rglob("*") if f.is_file()]
    if not any(_needs_redaction(f) for f in files):
        with _no_partial_copy():
            client.log_artifacts(run_id, str(folder), artifact_path)
        return
    with tempfile.TemporaryDirectory(prefix="ntk-sweep-redacted-") as tmp:
        for f in files:
            dst = Path(tmp) / f.relative_to(folder)
            dst.parent.mkdir(parents=True, exist_ok=True)
            _redacted_copy(f, dst)
        with _no_partial_copy():
            client.log_artifacts(run_id, tmp, artifact_path)


def log_artifact(client, run_id: str, local_file: str | Path, artifact_path: str) -> None:
    """Log one file (a text file quoting a credentialed URI, e.g. the job's log: redacted)."""
    path = Path(local_file)
    if not _needs_redaction(path):
        client.log_artifact(run_id, str(path), artifact_path)
        return
    with tempfile.TemporaryDirectory(prefix="ntk-sweep-redacted-") as tmp:
        _redacted_copy(path, Path(tmp) / path.name)
        client.log_artifact(run_id, str(Path(tmp) / path.name), artifact_path)


def log_text(client, run_id: str, text: str, artifact_file: str) -> None:
    client.log_text(run_id, redact_uri(text), artifact_file)


LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # what MLflow's log_table records: the UI's tables


def log_table(client, run_id: str, table, artifact_file: str) -> None:
    """A DataFrame as a table artifact (``<dir>/<name>.json``, pandas' "split" JSON, as
    ``MlflowClient.log_table`` writes it, listed in the tag ``mlflow.loggedArtifacts`` so the
    UI shows it as a table). Unlike ``log_table``, a table logged again replaces the earlier
    one instead of being appended to it (an aggregate run twice has one set of rows)."""
    folder, _, name = artifact_file.rpartition("/")
    with tempfile.TemporaryDirectory(prefix="ntk-sweep-table-") as tmp:
        path = Path(tmp) / name
        table.to_json(path, orient="split", index=False, date_format="iso")
        log_artifact(client, run_id, path, folder)
    listed = json.loads(client.get_run(run_id).data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
    entry = {"path": artifact_file, "type": "table"}
    if entry not in listed:
        set_tag(client, run_id, LOGGED_ARTIFACTS_TAG, json.dumps([*listed, entry]))


# --------------------------------------------------------------------------- identity


# Fields added after runs were first recorded, with the value that reproduces the earlier
# behaviour bit for bit: left out of the fingerprint at that value, so a resume still recognises
# the runs recorded before the field existed.
HASH_NEUTRAL_DEFAULTS = {
    ("model", "alpha"): None,
    ("model", "outputs"): 1,
    ("train", "optimizer"): "gd",
    ("train", "batch_size"): None,
    ("train", "momentum"): 0.9,
    ("train", "loss"): "mse",
    ("train", "kernel_budget_mb"): 256.0,
}


def config_hash(container: Mapping[str, Any]) -> str:
    """sha256 of the resolved config without `tracking`, `hydra` and `force` (a stable
    fingerprint: the same for the same settings, whatever the process, output dir or time);
    fields of `HASH_NEUTRAL_DEFAULTS` at their neutral value are left out too."""
    data = {k: v for k, v in container.items() if k not in NOT_HASHED}
    for (group, key), neutral in HASH_NEUTRAL_DEFAULTS.items():
        section = data.get(group)
        if isinstance(section, Mapping) and key in section and section[key] == neutral:
            data[group] = {k: v for k, v in section.items() if k != key}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_GIT_CACHE: dict[str, str] = {}


def git_commit(path: str | Path | None = None) -> str:
    """The project's git commit (with '-dirty' if it has uncommitted changes), '' if none."""
    where = str(Path(path) if path else Path(__file__).resolve().parent.parent)
    if where in _GIT_CACHE:
        return _GIT_CACHE[where]
    commit = ""
    try:
        out = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        commit = ""
    _GIT_CACHE[where] = commit
    return commit


def write_parent_id(sweep_dir: str | Path, run_id: str) -> Path:
    path = Path(sweep_dir) / PARENT_ID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return path


def read_parent_id(sweep_dir: str | Path | None) -> str:
    if not sweep_dir:
        return ""
    path = Path(sweep_dir) / PARENT_ID_FILE
    return path.read_text().strip() if path.is_file() else ""


def request_stop(sweep_dir: str | Path, reason: str) -> None:
    """Ask every job of the sweep in `sweep_dir` to stop (see STOP_FILE)."""
    with contextlib.suppress(OSError):
        (Path(sweep_dir) / STOP_FILE).write_text(reason + "\n")


def stop_requested(sweep_dir: str | Path | None) -> str:
    """Why the sweep in `sweep_dir` was stopped, '' if it was not."""
    if not sweep_dir:
        return ""
    try:
        return (Path(sweep_dir) / STOP_FILE).read_text().strip() or "the sweep was stopped"
    except OSError:
        return ""


# --------------------------------------------------------------------------- heartbeat / resume


def heartbeat_tags() -> dict[str, str]:
    return {HEARTBEAT_TAG: f"{time.time():.3f}"}


def heartbeat_interval(stale_after_s: float) -> float:
    """How often a job refreshes its heartbeat: every 30 s, more often for a tiny threshold."""
    return max(0.2, min(HEARTBEAT_EVERY_S, float(stale_after_s) / 4))


class Heartbeat:
    """Context manager: a daemon thread sets the heartbeat tag of `run_id` every `every_s`
    seconds while the block runs (so slow steps such as a huge kernel still show life). The
    thread is stopped and joined on exit: nothing outlives the job in a reused worker."""

    def __init__(
        self, client, run_id: str, every_s: float, also: Callable[[], object] | None = None
    ) -> None:
        """`also`: called at each beat too (a sweep's parent closes its dead jobs)."""
        self.client, self.run_id, self.every_s, self.also = client, run_id, every_s, also
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, heartbeat_tags()[HEARTBEAT_TAG])
                if self.also is not None:
                    self.also()
            except Exception as exc:  # noqa: BLE001 - a missed beat is not an error
                log.debug("heartbeat of run %s failed: %s", self.run_id, _one_line(exc))

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-{self.run_id[:8]}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def last_heartbeat(run) -> float:
    """Unix time of a run's latest heartbeat (its start time if it never sent one)."""
    try:
        return float(run.data.tags[HEARTBEAT_TAG])
    except (KeyError, TypeError, ValueError):
        return (run.info.start_time or 0) / 1000.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_identity(pid: int | None = None) -> str:
    """`<boot id>:<start time>` of process `pid` (this one by default) on this machine, '' where
    /proc cannot tell (not Linux, or no such process). A pid reused by a later process has
    another start time; a reboot gives another boot id."""
    boot = _boot_id()
    try:
        stat = Path(f"/proc/{os.getpid() if pid is None else pid}/stat").read_text()
    except OSError:
        return ""
    # field 22 (starttime); the command name in field 2 may hold spaces and ')' itself
    return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}" if boot else ""


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def process_gone(tags: Mapping[str, str]) -> str:
    """Why the process recorded in a run's tags is certainly dead, or '' where it may be alive
    or this machine cannot tell: it ran on this host (same host name and boot) and its pid no
    longer exists, or belongs to another process (another start time)."""
    if tags.get(HOST_TAG) != socket.gethostname():
        return ""
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return ""
    recorded = tags.get(PROCESS_TAG, "")
    if recorded and recorded.split(":")[0] != _boot_id():
        return ""  # rebooted since, or another machine with this host name: the heartbeat tells
    where = f"pid {pid} on host {tags[HOST_TAG]}"
    if not _pid_exists(pid):
        return f"process died: {where} no longer exists"
    now = process_identity(pid)
    if recorded and now and now != recorded:
        return f"process died: {where} is another process now"
    return ""


def stale_after_of(run, default: float) -> float:
    """The run's own `tracking.stale_after_s` param, else `default`."""
    try:
        return float(run.data.params.get(STALE_PARAM, default))
    except ValueError:
        return default


def death_reason(run, now: float, stale_after_s: float, task: tuple[str, int] = ("", 0)) -> str:
    """Why a RUNNING run's process is over ('' if it is not RUNNING or may still be alive): an
    earlier attempt of this SLURM `task` (see `slurm_task`), a process of this host that is gone
    (`process_gone`), or, from any host, no heartbeat for `stale_after_s`."""
    if run.info.status != "RUNNING":
        return ""
    if is_earlier_attempt(run, task):
        return TAKEOVER_REASON
    gone = process_gone(run.data.tags)
    if gone:
        return gone
    return DEAD_REASON if now - last_heartbeat(run) > stale_after_s else ""


def search_all_runs(client, experiment_id: str, filter_string: str) -> list:
    """Every (not deleted) run of the experiment that `filter_string` selects, all pages."""
    runs, token = [], None
    while True:
        page = _retry(
            client.search_runs,
            [experiment_id],
            filter_string=filter_string,
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def runs_with_hash(client, experiment_id: str, chash: str) -> list:
    """Every (not deleted) run of the experiment whose config fingerprint is `chash`."""
    return search_all_runs(client, experiment_id, f"tags.`{CONFIG_HASH_TAG}` = '{chash}'")


@dataclass(frozen=True)
class ResumePlan:
    """What a sweep job does about earlier runs with its config fingerprint.

    action: "run" (a new run), "finished" (skip: `run_id` FINISHED with this config) or
    "running" (skip: `run_id` is RUNNING and may be alive, maybe elsewhere). `dead`: RUNNING runs
    whose process is over (`death_reason`), to be marked KILLED before running anew; `reasons`,
    one per dead run.
    """

    action: str
    run_id: str = ""
    dead: tuple = ()
    reasons: tuple = ()

    @property
    def taken_over(self) -> tuple:
        """Ids of the `dead` runs left RUNNING by an earlier attempt of this SLURM task."""
        pairs = zip(self.dead, self.reasons, strict=True)
        return tuple(r.info.run_id for r, why in pairs if why == TAKEOVER_REASON)


def slurm_task(env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """(`<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>` for a task of a job array, else
    `SLURM_JOB_ID`, or '' outside SLURM; the attempt, SLURM_RESTART_COUNT or 0)."""
    env = os.environ if env is None else env
    array, task = env.get("SLURM_ARRAY_JOB_ID", ""), env.get("SLURM_ARRAY_TASK_ID", "")
    job = f"{array}_{task}" if array and task else env.get("SLURM_JOB_ID", "")
    try:
        restart = int(env.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        restart = 0
    return job, restart


def is_earlier_attempt(run, task: tuple[str, int]) -> bool:
    """A RUNNING run started by an earlier attempt of this very SLURM task (the task can only
    run once at a time, so that attempt is over: preempted or requeued)."""
    job, restart = task
    tags = run.data.tags
    if run.info.status != "RUNNING" or not job or tags.get(SLURM_JOB_TAG) != job:
        return False
    try:
        return int(tags.get(SLURM_RESTART_TAG, "0")) < restart
    except ValueError:
        return False


def plan_resume(
    runs: list, now: float, stale_after_s: float, task: tuple[str, int] = ("", 0)
) -> ResumePlan:
    """Decision (see ResumePlan): FINISHED wins (the newest), then a RUNNING run that may be
    alive; FAILED / KILLED runs and dead RUNNING ones (`death_reason`: an earlier attempt of
    this SLURM `task`, a gone process of this host, a stale heartbeat) are re-run as new runs."""
    newest = sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)
    why = {r.info.run_id: death_reason(r, now, stale_after_s, task) for r in newest}
    dead = tuple(r for r in newest if why[r.info.run_id])
    reasons = tuple(why[r.info.run_id] for r in dead)
    for r in newest:
        if r.info.status == "FINISHED":
            return ResumePlan("finished", r.info.run_id, dead, reasons)
    for r in newest:
        if r.info.status == "RUNNING" and not why[r.info.run_id]:
            return ResumePlan("running", r.info.run_id, dead, reasons)
    return ResumePlan("run", "", dead, reasons)


def mark_dead(client, run, reason: str = DEAD_REASON) -> None:
    """Mark a RUNNING run whose process died KILLED (end time = its last heartbeat), tagging why.
    Nothing it logged is changed."""
    set_tag(client, run.info.run_id, FAILURE_TAG, reason)
    _retry(
        client.set_terminated,
        run.info.run_id,
        status="KILLED",
        end_time=int(last_heartbeat(run) * 1000),
    )


def running_runs(client, experiment_id: str, parent_id: str = "") -> list:
    """The RUNNING runs of the experiment (only the children of `parent_id` if given)."""
    clauses = ["attributes.status = 'RUNNING'"]
    if parent_id:
        clauses.append(f"tags.`{PARENT_TAG}` = '{parent_id}'")
    return search_all_runs(client, experiment_id, " and ".join(clauses))


def close_dead_runs(client, experiment_id: str, stale_after_s: float) -> list[tuple[str, str]]:
    """Mark KILLED every RUNNING run of the experiment, sweep parents included, whose process is
    over (`death_reason`; a job's own `tracking.stale_after_s` param wins over
    `stale_after_s`). Returns (run id, reason) of each."""
    closed, now = [], time.time()
    for run in running_runs(client, experiment_id):
        reason = death_reason(run, now, stale_after_of(run, stale_after_s))
        if reason:
            mark_dead(client, run, reason)
            closed.append((run.info.run_id, reason))
    return closed


def close_gone_children(client, parent_id: str, note: str = "") -> list:
    """Mark KILLED the RUNNING jobs of sweep `parent_id` whose process is certainly gone
    (`process_gone`: this host only), the reason followed by `note`; returns the jobs still
    RUNNING. A job killed without a chance to mark itself (SIGKILL after SLURM's KillWait, the
    OOM killer) is closed by its sweep's launcher, not left RUNNING until the next sweep."""
    experiment_id = client.get_run(parent_id).info.experiment_id
    left = []
    for run in running_runs(client, experiment_id, parent_id):
        reason = process_gone(run.data.tags)
        if reason:
            mark_dead(client, run, reason + note)
            log.warning(
                "run %s stopped without a word (%s): marked KILLED", run.info.run_id, reason
            )
        else:
            left.append(run)
    return left


def settle_children(client, parent_id: str, wait_s: float) -> list[str]:
    """After a sweep stopped early: wait up to `wait_s` for its RUNNING jobs on this host to end
    (they mark themselves KILLED, see STOP_FILE), marking KILLED those whose process is gone.
    Returns the ids of the runs still RUNNING then (alive, or on other hosts)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = close_gone_children(client, parent_id, " (the sweep stopped)")
        local = [r for r in left if r.data.tags.get(HOST_TAG) == socket.gethostname()]
        if not local or time.monotonic() > deadline:
            return [r.info.run_id for r in left]
        time.sleep(0.25)


def host_tags() -> dict[str, str]:
    """Where the job runs (shown when a resume finds it still RUNNING; on this host, a gone
    process is known for certain, see `process_gone`)."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    identity = process_identity()
    if identity:
        tags[PROCESS_TAG] = identity
    job, restart = slurm_task()
    if job:
        tags.update({SLURM_JOB_TAG: job, SLURM_RESTART_TAG: str(restart)})
    return tags
