"""Checks of a tracking store before anything is written to it: reachable (an HTTP server, a
database server), writable, not damaged (an SQLite file's `quick_check`), existing where the
caller must not create it, and a usable artifact location. Each failure is one line:
`TrackingError` (or `ConfigError` for a malformed URI)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

from ntk_sweep.errors import ConfigError, TrackingError
from ntk_sweep.tracking.store import one_line
from ntk_sweep.tracking.uri import (
    DB_SCHEMES,
    EXPECTED_URI,
    SCHEME_RE,
    absolute_path,
    launch_dir,
    redact_uri,
    sibling_mlruns,
    sqlite_path,
)

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 5.0
DB_CONNECT_TIMEOUT_S = 5.0
DB_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
_WHERE_TO = "point {option} or MLFLOW_TRACKING_URI at a writable location"


def missing_store(uri: str) -> str:
    """Where a local store should be, with why it is not there (`/p/mlflow.db (an empty file)`),
    if it does not exist or is an empty file; '' if it exists, or is not local."""
    parsed = urlparse(uri)
    db = sqlite_path(uri)
    if db is not None:
        path, missing = str(db), not db.exists() or (db.is_file() and db.stat().st_size == 0)
    elif parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else uri
        missing = not Path(path).exists()
    else:
        path, missing = "", False
    if not missing:
        return ""
    return path + (" (an empty file)" if Path(path).is_file() else "")


def check_tracking_uri(
    uri: str, option: str = "tracking.uri", writable: bool = True, must_exist: bool = False
) -> None:
    """Fail fast (TrackingError, one line) if the store cannot be reached, is damaged or (with
    `writable`) cannot be written; the hints name `option` (the config key or CLI flag).

    `must_exist`: a local store that does not exist (or is an empty file) is an error too, for
    a reader such as the aggregate, which must not create an empty database; the app creates
    the store it writes to."""
    if must_exist and (where := missing_store(uri)):
        raise TrackingError(
            f"no MLflow store at {where} (pass {option} or set MLFLOW_TRACKING_URI)"
        )
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
    m = SCHEME_RE.match(configured)
    scheme = m.group(1).lower() if m and len(m.group(1)) > 1 else ""
    if scheme not in ("", "file"):
        return
    raw = urlparse(configured).path if scheme else configured
    path = Path(absolute_path(raw, base_dir or launch_dir()))
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
        f"tracking store {uri} is damaged (quick_check: {one_line(problem)}): restore it from "
        f"a backup or choose another {option}"
    )


def _warn_lost_runs(uri: str, db: Path) -> None:
    """A store about to be created anew where `mlruns/` still holds runs' artifacts."""
    mlruns = sibling_mlruns(db)
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
            f"{option}={redact_uri(uri)} is invalid: expected {EXPECTED_URI}"
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
