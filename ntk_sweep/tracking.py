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

import hashlib
import json
import logging
import math
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ntk_sweep.config import ConfigError, TrackingError

log = logging.getLogger(__name__)

PARENT_ID_FILE = "mlflow_parent_run_id"
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
DEAD_REASON = "no heartbeat: process died"
HEARTBEAT_EVERY_S = 30.0  # a running job refreshes its heartbeat at least this often
# Config keys that never change results: left out of the fingerprint (and `force` of the params).
NOT_HASHED = ("tracking", "hydra", "force")
LOCK_RETRIES = 8  # bounded retry of a write that met SQLite's "database is locked"
PARAM_VALUE_MAX = 6000  # MLflow's limit on a param value
PARAMS_PER_BATCH = 100  # MLflow's limit on params per log_batch request
METRICS_PER_BATCH = 1000
METRIC_FLUSH_S = 2.0  # MetricLog: at most one metrics request per this many seconds
HTTP_TIMEOUT_S = 5.0
DB_SCHEMES = ("postgresql", "mysql", "mssql")  # SQLAlchemy back ends MLflow supports
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_WHERE_TO = "point tracking.uri or MLFLOW_TRACKING_URI at a writable location"
_EXPECTED_URI = (
    "sqlite:///PATH, http(s)://HOST[:PORT], postgresql://..., mysql://... or mssql://..."
)


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


def resolve_tracking_uri(uri: str | None = None, base_dir: str | None = None) -> str:
    """`uri` (config) > $MLFLOW_TRACKING_URI > sqlite:///<base_dir>/mlflow.db, made absolute.

    Raises ConfigError for a malformed URI.
    """
    base = base_dir or launch_dir()
    source = "tracking.uri"
    if uri is None or str(uri).strip() == "":
        uri, source = os.environ.get("MLFLOW_TRACKING_URI", "").strip(), "MLFLOW_TRACKING_URI"
    if not uri:
        return "sqlite:///" + str(Path(base) / "mlflow.db")
    uri = str(uri).strip()
    m = _SCHEME_RE.match(uri)
    scheme = m.group(1).lower() if m and len(m.group(1)) > 1 else ""  # "C:" is a drive letter
    bad = ConfigError(f"{source}={uri} is invalid: expected {_EXPECTED_URI}")
    if not scheme or scheme == "file":  # MLflow's file store: refused by MLflow 3 unless allowed
        path = urlparse(uri).path if scheme else uri
        if not path or os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
            raise ConfigError(
                f"{source}={uri} is invalid: expected {_EXPECTED_URI} (MLflow's file "
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


def default_artifact_location(uri: str, configured: str | None = None) -> str | None:
    """Artifact root for a new experiment: configured, or `<db dir>/mlruns` for SQLite."""
    if configured:
        m = _SCHEME_RE.match(configured)
        if m and len(m.group(1)) > 1:
            return configured
        return Path(_absolute(configured, launch_dir())).as_uri()
    db = sqlite_path(uri)
    return (db.parent / "mlruns").as_uri() if db is not None else None


def check_tracking_uri(uri: str) -> None:
    """Fail fast (TrackingError, one line) if the store cannot be reached or written."""
    db = sqlite_path(uri)
    if db is not None:
        if db.exists() and db.is_dir():
            raise TrackingError(
                f"tracking store {uri} is unusable: {db} is a directory; {_WHERE_TO}"
            )
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(
                f"tracking store {uri} is not writable: cannot create {db.parent} "
                f"({exc.strerror}); {_WHERE_TO}"
            ) from None
        target = db if db.exists() else db.parent
        if not os.access(target, os.W_OK) or (db.exists() and not os.access(db, os.R_OK)):
            raise TrackingError(
                f"tracking store {uri} is not writable: no write access to {target}; {_WHERE_TO}"
            )
        return
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri + "/health", timeout=HTTP_TIMEOUT_S):
                pass
        except urllib.error.HTTPError:
            return  # something answers: reachable
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"tracking server {uri} is unreachable ({reason}): start it, or point "
                "tracking.uri / MLFLOW_TRACKING_URI at a running server"
            ) from None
    if uri.startswith("file:"):
        path = Path(urlparse(uri).path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"tracking store {uri} is not writable ({exc.strerror})") from None
        if not os.access(path, os.W_OK):
            raise TrackingError(f"tracking store {uri} is not writable: no write access")


# --------------------------------------------------------------------------- store


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


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


def open_store(uri: str, experiment: str, artifact_location: str | None = None):
    """Client and experiment id (created if needed; creates the SQLite database too).

    Any store failure becomes a one-line TrackingError.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                exp_id = client.create_experiment(
                    experiment,
                    artifact_location=default_artifact_location(uri, artifact_location),
                    tags=EXPERIMENT_TAGS,
                )
            except MlflowException:  # created concurrently by another process
                exp = client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"tracking.experiment={experiment} is deleted in {uri}: restore it "
                    "(mlflow experiments restore) or choose another name"
                )
            exp_id = exp.experiment_id
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(f"tracking store {uri} failed: {_one_line(exc)}") from None
    return client, exp_id


def create_run(
    client,
    experiment_id: str,
    run_name: str | None,
    tags: Mapping[str, str],
    parent_id: str | None = None,
) -> str:
    tags = {k: str(v) for k, v in tags.items()}
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
    _retry(client.set_tag, run_id, key, str(value)[:PARAM_VALUE_MAX])


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

    items = [Param(k, v) for k, v in sorted(params.items())]
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


def log_artifacts(client, run_id: str, local_dir: str | Path, artifact_path: str) -> None:
    if Path(local_dir).is_dir() and any(Path(local_dir).iterdir()):
        client.log_artifacts(run_id, str(local_dir), artifact_path)


def log_artifact(client, run_id: str, local_file: str | Path, artifact_path: str) -> None:
    client.log_artifact(run_id, str(local_file), artifact_path)


# --------------------------------------------------------------------------- identity


def config_hash(container: Mapping[str, Any]) -> str:
    """sha256 of the resolved config without `tracking`, `hydra` and `force` (a stable
    fingerprint: the same for the same settings, whatever the process, output dir or time)."""
    data = {k: v for k, v in container.items() if k not in NOT_HASHED}
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

    def __init__(self, client, run_id: str, every_s: float) -> None:
        self.client, self.run_id, self.every_s = client, run_id, every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, heartbeat_tags()[HEARTBEAT_TAG])
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


def is_dead(run, now: float, stale_after_s: float) -> bool:
    """A RUNNING run whose heartbeat is older than `stale_after_s`: its process died."""
    return run.info.status == "RUNNING" and now - last_heartbeat(run) > stale_after_s


def runs_with_hash(client, experiment_id: str, chash: str) -> list:
    """Every (not deleted) run of the experiment whose config fingerprint is `chash`."""
    runs, token = [], None
    while True:
        page = _retry(
            client.search_runs,
            [experiment_id],
            filter_string=f"tags.`{CONFIG_HASH_TAG}` = '{chash}'",
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


@dataclass(frozen=True)
class ResumePlan:
    """What a sweep job does about earlier runs with its config fingerprint.

    action: "run" (a new run), "finished" (skip: `run_id` FINISHED with this config) or
    "running" (skip: `run_id` is RUNNING with a fresh heartbeat, maybe elsewhere). `dead`: RUNNING
    runs without a heartbeat for `stale_after_s`, to be marked KILLED before running anew.
    """

    action: str
    run_id: str = ""
    dead: tuple = ()


def plan_resume(runs: list, now: float, stale_after_s: float) -> ResumePlan:
    """Pure decision (see ResumePlan): FINISHED wins (the newest), then a live RUNNING run;
    FAILED / KILLED runs and dead RUNNING ones are re-run as new runs."""
    newest = sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)
    dead = tuple(r for r in newest if is_dead(r, now, stale_after_s))
    dead_ids = {r.info.run_id for r in dead}
    for r in newest:
        if r.info.status == "FINISHED":
            return ResumePlan("finished", r.info.run_id, dead)
    for r in newest:
        if r.info.status == "RUNNING" and r.info.run_id not in dead_ids:
            return ResumePlan("running", r.info.run_id, dead)
    return ResumePlan("run", "", dead)


def mark_dead(client, run) -> None:
    """Mark a RUNNING run whose process died KILLED (end time = its last heartbeat), tagging why.
    Nothing it logged is changed."""
    set_tag(client, run.info.run_id, FAILURE_TAG, DEAD_REASON)
    _retry(
        client.set_terminated,
        run.info.run_id,
        status="KILLED",
        end_time=int(last_heartbeat(run) * 1000),
    )


def host_tags() -> dict[str, str]:
    """Where the job runs (shown when a resume finds it still RUNNING)."""
    return {TAG + "host": socket.gethostname(), TAG + "pid": str(os.getpid())}
