"""Where the tracking store is and what may be shown of it: the URI rules (which URI, made
absolute against the launch directory), the artifact root of a new experiment, and the
redaction of credentials from everything written or printed.

Store location (first that is set): `tracking.uri`, `$MLFLOW_TRACKING_URI`, else
`sqlite:///<launch dir>/mlflow.db`. Relative SQLite/file paths are taken relative to the launch
directory (Hydra's `runtime.cwd`), so `hydra.job.chdir=true` never moves the store. A malformed
URI is a `ConfigError` (one line).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ntk_sweep.errors import ConfigError

DB_SCHEMES = ("postgresql", "mysql", "mssql")  # SQLAlchemy back ends MLflow supports
SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
EXPECTED_URI = "sqlite:///PATH, http(s)://HOST[:PORT], postgresql://..., mysql://... or mssql://..."

# --------------------------------------------------------------------------- secrets

# `scheme://user:password@host`: the password part, wherever it appears in a text
# (Hydra escapes colons as `\:` when it prints a sweep's overrides, repr() doubles that)
_USERINFO_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*\\*://[^\s/@:\\]*)(\\*:)([^\s@/]*)@")
# `?password=...` / `&passwd=...` in a URI's query (SQLAlchemy / libpq keyword form)
_QUERY_SECRET_RE = re.compile(r"([?&](?:password|passwd|pwd|token|secret)=)[^&\s]*", re.I)
REDACTED = "***"


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


def absolute_path(path: str, base: str) -> str:
    """`path` (`~` expanded), taken relative to `base` unless it is absolute."""
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
    m = SCHEME_RE.match(uri)
    scheme = m.group(1).lower() if m and len(m.group(1)) > 1 else ""  # "C:" is a drive letter
    shown = redact_uri(uri)
    bad = ConfigError(f"{source}={shown} is invalid: expected {EXPECTED_URI}")
    if not scheme or scheme == "file":  # MLflow's file store: refused by MLflow 3 unless allowed
        path = urlparse(uri).path if scheme else uri
        if not path or os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
            raise ConfigError(
                f"{source}={shown} is invalid: expected {EXPECTED_URI} (MLflow's file "
                "store needs MLFLOW_ALLOW_FILE_STORE=true)"
            )
        return Path(absolute_path(path, base)).as_uri()
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or len(uri) <= len("sqlite:///"):
            raise bad
        path, sep, query = uri[len("sqlite:///") :].partition("?")
        if path in ("", ":memory:"):
            raise bad
        return "sqlite:///" + absolute_path(path, base) + sep + query
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


def sibling_mlruns(db: Path) -> Path:
    """The default artifact root of an SQLite store: `mlruns/` next to the database."""
    return db.parent / "mlruns"


def default_artifact_location(uri: str, configured: str | None = None) -> str | None:
    """Artifact root for a new experiment: configured, or `<db dir>/mlruns` for SQLite."""
    if configured:
        m = SCHEME_RE.match(configured)
        if m and len(m.group(1)) > 1:
            return configured
        return Path(absolute_path(configured, launch_dir())).as_uri()
    db = sqlite_path(uri)
    return sibling_mlruns(db).as_uri() if db is not None else None
