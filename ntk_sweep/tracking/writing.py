"""What a run records: params (flattened config, batched), per-step metrics (`MetricLog`,
batched), artifacts (text files quoting a credentialed URI logged as redacted copies, a copy
that ran out of space removed), text and tables. Every request is retried while SQLite reports
"database is locked" (`store.retry`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ntk_sweep.tracking.names import LOGGED_ARTIFACTS_TAG
from ntk_sweep.tracking.store import (
    PARAM_VALUE_MAX,
    STORE_FULL_ERRNOS,
    retry,
    set_tag,
)
from ntk_sweep.tracking.uri import redact_uri

PARAMS_PER_BATCH = 100  # MLflow's limit on params per log_batch request
METRICS_PER_BATCH = 1000
METRIC_FLUSH_S = 2.0  # MetricLog: at most one metrics request per this many seconds
# Artifacts that are text and may quote the config (Hydra's .hydra/*.yaml, the job's .log)
TEXT_ARTIFACT_SUFFIXES = (".yaml", ".yml", ".log", ".txt", ".json")


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
        retry(client.log_batch, run_id, params=items[i : i + PARAMS_PER_BATCH])


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
            retry(
                self.client.log_batch,
                self.run_id,
                metrics=pending[i : i + METRICS_PER_BATCH],
                tags=run_tags if i == 0 else [],
                synchronous=True,
            )
        if run_tags and not pending:
            retry(self.client.log_batch, self.run_id, tags=run_tags, synchronous=True)


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
