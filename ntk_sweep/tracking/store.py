"""The tracking store, opened and written safely: the MLflow client and experiment (created
under a lock, retried while another process creates the same database), runs created, tagged,
ended and searched, every write retried while SQLite reports "database is locked", and a full
store turned into one line (`StoreFullError`) instead of a traceback.

Only the explicit client (`mlflow.MlflowClient(uri)`) is used, never the fluent API's global
active run or tracking URI, because joblib workers run several jobs in one process. Everything
written goes through `redact_uri`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ntk_sweep.errors import TrackingError
from ntk_sweep.tracking.names import EXPERIMENT_TAGS, PARENT_TAG
from ntk_sweep.tracking.uri import default_artifact_location, redact_uri, sqlite_path

log = logging.getLogger(__name__)

LOCK_RETRIES = 8  # bounded retry of a write that met SQLite's "database is locked"
PARAM_VALUE_MAX = 6000  # MLflow's limit on a param value
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
# A write that failed because the store's database or disk is full (SQLite's SQLITE_FULL, the
# artifact folder's ENOSPC / EDQUOT, a database server's full disk).
STORE_FULL = ("database or disk is full", "no space left on device", "disk quota exceeded")
STORE_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def one_line(exc: BaseException) -> str:
    """An error as one line of at most 300 characters (its type's name if it says nothing)."""
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


def retry(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
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
                one_line(exc)[:80],
                delay,
            )
            time.sleep(delay)
            delay = min(2 * delay, 4.0)
    raise AssertionError("unreachable")  # pragma: no cover


def connect(uri: str):
    """The client of the store at `uri`, creating nothing: for a reader (the aggregate) of a
    store `checks.check_tracking_uri(..., must_exist=True)` found; the app uses `open_store`."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


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
        raise TrackingError(f"tracking store {shown} failed: {redact_uri(one_line(exc))}") from None
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
    run = retry(client.create_run, experiment_id, run_name=run_name or None, tags=tags)
    return run.info.run_id


def end_run(client, run_id: str, status: str) -> None:
    """Mark a run FINISHED, FAILED or KILLED (never raises: the run's data is already logged)."""
    try:
        retry(client.set_terminated, run_id, status=status)
    except Exception as exc:  # pragma: no cover - store vanished mid-run
        log.error("could not mark run %s %s: %s", run_id, status, one_line(exc))


def set_tag(client, run_id: str, key: str, value: str) -> None:
    retry(client.set_tag, run_id, key, redact_uri(value)[:PARAM_VALUE_MAX])


def search_all_runs(client, experiment_id: str, filter_string: str) -> list:
    """Every (not deleted) run of the experiment that `filter_string` selects, all pages."""
    runs, token = [], None
    while True:
        page = retry(
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
