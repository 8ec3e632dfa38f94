"""Reading the MLflow store: the selection (experiment, sweep, filter), runs as a DataFrame
(params cast to numbers), per-step histories, one run per config hash. The store is located,
checked and searched by the store layer (:mod:`ntk_sweep.tracking`: its URI rules, checks,
``search_all_runs`` and liveness rule), its errors turned into :class:`AggregateError`."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from ntk_sweep import tracking
from ntk_sweep.aggregate.common import (
    DEFAULT_EXPERIMENT,
    DEFAULT_STALE_AFTER_S,
    PHASE_TAGS,
    AggregateError,
    _is_finished,
)
from ntk_sweep.errors import ConfigError
from ntk_sweep.tracking import (
    CONFIG_HASH_TAG,
    FAILURE_TAG,
    PARENT_TAG,
    RESUMED_RUN_TAG,
    ROLE_TAG,
    RUN_NAME_TAG,
    TAG,
)


def deduplicate_runs(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One run per configuration: among runs with the same ``config_hash`` (the tag every run
    records; seed included), the latest FINISHED one (by ``start_time``) wins, else the latest
    run. Runs without a hash are all kept. Returns (frame, number of runs dropped)."""
    if "config_hash" not in df.columns or df.empty:
        return df, 0
    h = df["config_hash"].fillna("").astype(str)
    if not h.ne("").any():
        return df, 0
    order = pd.DataFrame(
        {
            "hash": h,
            "finished": _is_finished(df).astype(int),
            "start": pd.to_numeric(df.get("start_time"), errors="coerce").fillna(0),
        },
        index=df.index,
    ).sort_values(["finished", "start"], kind="stable")
    hashed = order[order["hash"] != ""]
    keep = set(hashed.groupby("hash").tail(1).index) | set(order.index[order["hash"] == ""])
    kept = df[df.index.isin(keep)]
    return kept, len(df) - len(kept)


def _cast_column(s: pd.Series) -> pd.Series:
    """MLflow param strings -> int / float / bool where every present value parses."""
    present = s.dropna()
    present = present[~present.astype(str).isin(["None", "null", ""])]
    if present.empty:
        return s
    text = present.astype(str)
    missing = len(present) < len(s)
    for conv in (int, float):
        try:
            vals = [conv(t) for t in text]
        except ValueError:
            continue
        if conv is int and missing:
            conv = float
        out = pd.Series(np.nan if missing else 0, index=s.index, dtype=conv)
        out.loc[present.index] = [conv(v) for v in vals]
        return out
    if set(text) <= {"True", "False", "true", "false"}:
        if missing:
            return s
        return text.str.lower().eq("true")
    return s


def load_runs(
    client, experiment_id: str, parent_id: str | None = None, filter_string: str | None = None
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Runs of a sweep (children of ``parent_id``) and/or matching an MLflow filter string.

    Returns (frame, param names, metric names). One row per run, columns: ``run_id``,
    ``run_name``, ``status``, ``start_time``, ``failure_reason``, ``role``, ``config_hash``
    (tag ``ntk_sweep.config_hash``), ``phase_net`` / ``phase_lin`` (tags, "" when not
    logged), the params (dotted
    names, cast to int / float / bool where they parse) and the final metric values. Sweep
    parents and aggregate runs (tag ``ntk_sweep.role``) are never selected. A sweep includes
    the earlier runs its resumed jobs reused; a RUNNING run with a stale heartbeat counts as
    ``KILLED`` (its process died).
    """
    clauses = []
    if parent_id:
        clauses.append(f"tags.`{PARENT_TAG}` = '{parent_id}'")
    if filter_string and filter_string.strip():
        clauses.append(filter_string.strip())
    runs = tracking.search_all_runs(client, experiment_id, " and ".join(clauses))
    if parent_id:
        runs += _resumed_runs(client, experiment_id, parent_id, filter_string, runs)
    now = time.time()
    records, params, metrics = [], {}, {}
    for run in runs:
        tags = run.data.tags
        if tags.get(ROLE_TAG) in ("sweep", "aggregate"):
            continue
        status, reason = run.info.status, tags.get(FAILURE_TAG, "")
        dead = _death_reason(run, now) if status == "RUNNING" else ""
        if dead:
            status, reason = "KILLED", dead
        rec = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name or tags.get(RUN_NAME_TAG, ""),
            "status": status,
            "start_time": run.info.start_time,
            "failure_reason": reason,
            "role": tags.get(ROLE_TAG, ""),
            "config_hash": tags.get(CONFIG_HASH_TAG, ""),
        }
        for name in PHASE_TAGS:  # the run's learning-rate phase, where the run logged it
            rec[name] = tags.get(TAG + name, tags.get(name, ""))
        rec.update({("p", k): v for k, v in run.data.params.items()})
        rec.update({("m", k): v for k, v in run.data.metrics.items()})
        params.update(dict.fromkeys(run.data.params))
        metrics.update(dict.fromkeys(run.data.metrics))
        records.append(rec)
    base = ["run_id", "run_name", "status", "start_time", "failure_reason", "role"]
    base += ["config_hash", *PHASE_TAGS]
    param_names = sorted(params)
    metric_names = sorted(metrics)

    def col(kind: str, name: str) -> str:
        clash = name in base or (kind == "m" and name in params)
        return f"{'params' if kind == 'p' else 'metrics'}.{name}" if clash else name

    data = {c: [r.get(c) for r in records] for c in base}
    for kind, names in (("p", param_names), ("m", metric_names)):
        for n in names:
            values = [r.get((kind, n)) for r in records]
            data[col(kind, n)] = values if kind == "p" else pd.to_numeric(values, errors="coerce")
    df = pd.DataFrame(data)
    params_out = [col("p", n) for n in param_names]
    for p in params_out:
        df[p] = _cast_column(df[p])
    return df, params_out, [col("m", n) for n in metric_names]


def _resumed_runs(client, experiment_id: str, parent_id: str, filter_string, have: list) -> list:
    """The earlier runs a resumed sweep reused (parent tags ``ntk_sweep.resumed_run.*``)."""
    tags = client.get_run(parent_id).data.tags
    seen = {r.info.run_id for r in have}
    ids = sorted({v for k, v in tags.items() if k.startswith(RESUMED_RUN_TAG)} - seen)
    out = []
    for i in range(0, len(ids), 100):
        chunk = ", ".join(f"'{r}'" for r in ids[i : i + 100])
        clause = f"attributes.run_id IN ({chunk})"
        if filter_string and filter_string.strip():
            clause += f" and {filter_string.strip()}"
        out += tracking.search_all_runs(client, experiment_id, clause)
    return out


def _death_reason(run, now: float) -> str:
    """Why a RUNNING run is over ('' if it may be alive): its process on this host is gone, or
    no heartbeat (else since its start) for longer than its stale_after_s (the app's rule)."""
    return tracking.death_reason(run, now, tracking.stale_after_of(run, DEFAULT_STALE_AFTER_S))


def load_histories(client, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per-step values of ``metric`` for the finished runs: columns ``run_id``, ``step``,
    ``value`` (last value logged at each step)."""
    rows = []
    for run_id in runs.loc[_is_finished(runs), "run_id"]:
        for m in client.get_metric_history(run_id, metric):
            rows.append((run_id, int(m.step), float(m.value), int(m.timestamp)))
    h = pd.DataFrame(rows, columns=["run_id", "step", "value", "timestamp"])
    h = h.sort_values(["run_id", "step", "timestamp"]).drop_duplicates(
        ["run_id", "step"], keep="last"
    )
    return h.drop(columns="timestamp").reset_index(drop=True)


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """``tracking_uri``, else env ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``
    (relative SQLite paths made absolute); a malformed URI is an :class:`AggregateError`.
    The app's rules (:func:`ntk_sweep.tracking.resolve_tracking_uri`), relative to the working
    directory (the aggregate runs outside Hydra) and naming the ``--tracking-uri`` option."""
    try:
        return tracking.resolve_tracking_uri(tracking_uri, os.getcwd(), option="--tracking-uri")
    except ConfigError as exc:
        raise AggregateError(str(exc)) from None


def _check_store(uri: str, writable: bool = True) -> None:
    """Before reading: the store's checks (:func:`ntk_sweep.tracking.check_tracking_uri`) with
    ``must_exist``, since reading must not create an empty database; with ``writable`` (the
    outputs are logged to MLflow), an SQLite store must be writable."""
    try:
        tracking.check_tracking_uri(
            uri, option="--tracking-uri", writable=writable, must_exist=True
        )
    except ConfigError as exc:
        raise AggregateError(str(exc)) from None


def _resolve_selection(client, experiment, sweep_id, filter_string):
    """-> (experiment name, experiment id, parent run id or None)."""
    from mlflow.exceptions import MlflowException

    if sweep_id and sweep_id != "latest":
        try:
            run = client.get_run(sweep_id)
        except MlflowException:
            run = None
        if run is None or run.info.lifecycle_stage == "deleted":
            raise AggregateError(f"--sweep: no run with id {sweep_id!r} in the tracking store")
        sweep_of_job = run.data.tags.get(PARENT_TAG)
        if sweep_of_job and run.data.tags.get(ROLE_TAG) != "sweep":
            raise AggregateError(
                f"--sweep: run {sweep_id} is a job of sweep {sweep_of_job}: "
                f"use --sweep {sweep_of_job}"
            )
        exp = client.get_experiment(run.info.experiment_id)
        if experiment and exp.name != experiment:
            raise AggregateError(
                f"--sweep: run {sweep_id} belongs to experiment {exp.name!r}, not {experiment!r}"
            )
        return exp.name, exp.experiment_id, sweep_id
    name = experiment or DEFAULT_EXPERIMENT
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise AggregateError(
            f"--experiment: no experiment named {name!r}; available: {', '.join(names) or 'none'}"
        )
    if filter_string and sweep_id is None:
        return exp.name, exp.experiment_id, None
    sweeps = tracking.retry(
        client.search_runs,
        [exp.experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not sweeps:
        raise AggregateError(
            f"--sweep latest: experiment {name!r} has no sweep run (tag {ROLE_TAG}=sweep); "
            "pass --sweep RUN_ID or --filter"
        )
    return exp.name, exp.experiment_id, sweeps[0].info.run_id
