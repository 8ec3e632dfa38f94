"""The aggregate pipeline: :func:`aggregate_sweep` (read, summarise, fit, judge, write, log),
:class:`AggregateResult` and its text / markdown report, the slope metrics logged to MLflow."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ntk_sweep import tracking
from ntk_sweep.aggregate.common import (
    DEFAULT_METRICS,
    DEFAULT_STEP_METRIC,
    DRIFT_METRICS,
    FINISHED,
    LIN_METRICS,
    MAX_TABLE_WIDTH,
    MEAN_CI_METHOD,
    SEED_KEY,
    SLOPE_CI_METHOD,
    AggregateError,
    _cut,
    _fixed,
    _fmt,
    _fmt_value,
    _is_finished,
    _width_key,
)
from ntk_sweep.aggregate.loading import (
    _check_store,
    _resolve_selection,
    deduplicate_runs,
    load_histories,
    load_runs,
    resolve_tracking_uri,
)
from ntk_sweep.aggregate.plots import (
    plot_vs_axis,
    plot_vs_step,
    plot_vs_width,
)
from ntk_sweep.aggregate.statistics import (
    default_group_keys,
    fit_power_laws,
    lr_max_stable,
    summarize,
    swept_axis,
)
from ntk_sweep.aggregate.verdict import (
    axis_verdict,
    kink_note,
    verdict,
)
from ntk_sweep.figure_style import save_png
from ntk_sweep.names import short_names
from ntk_sweep.tracking import (
    AGGREGATE_FILTER_TAG,
    CONFIG_HASH_TAG,
    NOTE_TAG,
    ROLE_TAG,
    VERDICT_TAG,
)


def text_table(
    header: Sequence[str], rows: Sequence[Sequence], max_width: int = MAX_TABLE_WIDTH, keep: int = 1
) -> str:
    """Aligned plain-text table no wider than ``max_width`` characters: a wider one is split
    into several tables, one under the other, each repeating the first ``keep`` columns (cells
    still too wide are cut)."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    keep = min(keep, len(header))
    chunks: list[list[int]] = [[]]
    for i in range(keep, len(header)):
        used = sum(widths[j] + 2 for j in [*range(keep), *chunks[-1]])
        if chunks[-1] and used + widths[i] > max_width:
            chunks.append([])
        chunks[-1].append(i)
    tables = []
    for chunk in chunks:
        cols = [*range(keep), *chunk]
        room = max_width - 2 * (len(cols) - 1)
        w = [min(widths[i], max(3, room - sum(widths[j] for j in cols if j != i))) for i in cols]
        lines = [
            "  ".join(_cut(r[i], n).ljust(n) for i, n in zip(cols, w, strict=True)).rstrip()
            for r in cells
        ]
        lines.insert(1, "  ".join("-" * n for n in w))
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], keep: int = 1) -> str:
    """GitHub-flavoured markdown table (``|`` in cells escaped; ``keep`` is unused: rendered
    tables are not split)."""

    def esc(c) -> str:
        return _fmt(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _key_headers(by: Sequence[str]) -> list[str]:
    """Column headers of the group keys: their short names (``act``, ``param``, ``width``)."""
    short = short_names(by, reserved=())
    return ["width" if k == _width_key(by) else short[k] for k in by]


def _summary_rows(summary: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]):
    header = ["metric", *_key_headers(by), "n", "mean", "std", "95% CI"]
    rows = []
    for m in metrics:
        for _, r in summary.iterrows():
            ci = f"[{_fmt(r[f'{m}_ci_low'])}, {_fmt(r[f'{m}_ci_high'])}]"
            n = r[f"{m}_n"]
            n_text = str(n) if n == r["n_seeds"] else f"{n}/{r['n_seeds']}"
            rows.append(
                [
                    m,
                    *(_fmt_value(r[k]) for k in by),
                    n_text,
                    r[f"{m}_mean"],
                    r[f"{m}_std"],
                    ci if n > 1 else "-",
                ]
            )
    return header, rows


def _runs_rows(summary: pd.DataFrame, by: Sequence[str]):
    header = [*_key_headers(by), "runs", "finished", "failed", "killed", "running", "not used"]
    rows = [
        [
            *(_fmt_value(r[k]) for k in by),
            r["n_runs"],
            r["n_seeds"],
            r["n_failed"],
            r["n_killed"],
            r["n_running"],
            _cut(r["excluded_runs"]) or "-",
        ]
        for _, r in summary.iterrows()
    ]
    return header, rows


def _fits_rows(fits: pd.DataFrame):
    header = [
        "metric",
        "group",
        "n",
        "slope",
        "95% CI",
        "asymptotic",
        "95% CI",
        "asym. widths",
        "expected",
        "vs expected",
        "R^2",
    ]
    rows = []
    for _, f in fits.iterrows():
        ok = f["status"] == "ok"
        ci = f"[{_fixed(f['slope_ci_low'])}, {_fixed(f['slope_ci_high'])}]"
        aci = f"[{_fixed(f['asym_slope_ci_low'])}, {_fixed(f['asym_slope_ci_high'])}]"
        rows.append(
            [
                f["metric"],
                f["group"] or "all runs",
                _fmt(f["min_seeds"]) if ok else "-",
                _fixed(f["slope"]) if ok else "n/a",
                ci if ok else "-",
                _fixed(f["asym_slope"]) if ok else "n/a",
                aci if ok else "-",
                f["asym_widths"] or "-",
                _fmt(f["expected_slope"]),
                f["comparison"] or "-",
                f["r2"] if ok else "-",
            ]
        )
    return header, rows


def _local_rows(fits: pd.DataFrame):
    """Local slopes of the verdict's metrics (drift, linearisation error), one row per step;
    ``fits.csv`` has them for every metric."""
    header = ["metric", "group", "widths", "local slope", "95% CI"]
    rows = []
    for _, f in fits.iterrows():
        shown = f["metric"] in (*DRIFT_METRICS, *LIN_METRICS)
        if f["status"] != "ok" or not f["local_slopes"] or not shown:
            continue
        for item in str(f["local_slopes"]).split("; "):
            widths, rest = item.split(": ", 1)
            slope, ci = rest.split(" ", 1)
            rows.append([f["metric"], f["group"] or "all runs", widths, slope, ci])
    return header, rows


def _where(items: Sequence[tuple[str, str]], all_groups: Sequence[str]) -> str:
    """Where a note applies, from (group, metric) pairs: ``kernel_drift in act=relu param=ntk``,
    ``all groups``, or the metrics and groups listed once each."""
    groups = list(dict.fromkeys(g for g, _ in items))
    metrics = list(dict.fromkeys(m for _, m in items if m))
    where = "all groups" if len(all_groups) > 1 and set(groups) >= set(all_groups) else ""
    where = where or "; ".join(g for g in groups if g)
    what = ", ".join(metrics)
    return " in ".join(x for x in (what, where) if x)


def _fit_notes(fits: pd.DataFrame, hidden: Sequence[str]) -> list[str]:
    """Each distinct reason of the fits table once, with the metrics and groups it applies to."""
    if fits is None or fits.empty:
        return []
    by_reason: dict[str, list[tuple[str, str]]] = {}
    for _, f in fits.iterrows():
        if f["reason"] and f["metric"] not in hidden:
            by_reason.setdefault(str(f["reason"]), []).append((f["group"], f["metric"]))
    groups = list(dict.fromkeys(fits["group"]))
    return [f"{reason}: {_where(items, groups)}" for reason, items in by_reason.items()]


def _split_verdict(lines: Sequence[str]) -> list[tuple[str, str, str]]:
    """Verdict lines as (group, head, body): ``[g] kernel_drift: slope ...`` -> (g,
    "kernel_drift", "slope ..."); a line without a group has group ""."""
    out = []
    for line in lines:
        group, rest = "", line
        if line.startswith("[") and "] " in line:
            group, rest = line[1:].split("] ", 1)
        head, sep, body = rest.partition(": ")
        out.append((group, head, body) if sep else (group, "", rest))
    return out


def _is_claim(head: str) -> bool:
    return head == "verdict"


def headline(lines: Sequence[str], fits: pd.DataFrame) -> list[str]:
    """One line per group: the claim's status (from the group's ``verdict:`` line) and its key
    numbers, the asymptotic slope of the kernel drift with its 95 % CI (and the expected rate)
    and that of the linearisation error. Empty without verdict lines (a sweep along lr)."""
    out = []
    for group, head, body in _split_verdict(lines):
        if not _is_claim(head):
            continue
        status, sep, rest = body.partition(": ")
        gf = fits[fits["group"] == group] if fits is not None and not fits.empty else fits
        numbers = [_key_number(gf, ms) for ms in (DRIFT_METRICS, LIN_METRICS)]
        numbers = [n for n in numbers if n]
        text = f"{status}: {', '.join(numbers)}" if numbers else body if sep else status
        out.append(f"[{group}] {text}" if group else text)
    return out


def _key_number(gf: pd.DataFrame | None, candidates: Sequence[str]) -> str:
    """The first of ``candidates`` fitted in the group: ``kernel_drift slope -0.68 [-1.02,
    -0.34] (expected -0.5)``, ``kernel_drift O(1) at every width``, or ``... no fit``."""
    if gf is None or gf.empty:
        return ""
    rows = gf[gf["metric"].isin(candidates)]
    if rows.empty:
        return ""
    f = rows.set_index("metric").loc[next(m for m in candidates if m in set(rows["metric"]))]
    m = f.name
    if f["status"] == "above level":
        return f"{m} O(1) at every width"
    if f["status"] != "ok":
        return f"{m} no fit"
    text = (
        f"{m} slope {_fixed(f['asym_slope'], 2)} "
        f"[{_fixed(f['asym_slope_ci_low'], 2)}, {_fixed(f['asym_slope_ci_high'], 2)}]"
    )
    e = f["expected_slope"]
    return text + (f" (expected {e:g})" if m in DRIFT_METRICS and np.isfinite(e) else "")


def verdict_details(lines: Sequence[str], hidden: Sequence[str] = ()) -> tuple[dict, list[str]]:
    """The verdict lines grouped: ({group: [line without the group prefix, ...]}, notes), where
    a line whose text repeats (the same note for several metrics or groups) becomes one note
    saying where it applies, and the lines of the ``hidden`` metrics (equal to another one)
    are left out."""
    parts = [p for p in _split_verdict(lines) if p[1] not in hidden]

    def note(head: str, body: str) -> str:  # what repeats: a warning's text, a metric's note
        return f"{head}: {body}" if head == "warning" else body

    count: dict[str, int] = {}
    for _, head, body in parts:
        if not _is_claim(head):
            count[note(head, body)] = count.get(note(head, body), 0) + 1
    per_group: dict[str, list[str]] = {}
    repeated: dict[str, list[tuple[str, str]]] = {}
    groups = list(dict.fromkeys(g for g, _, _ in parts))
    for group, head, body in parts:
        per_group.setdefault(group, [])
        if count.get(note(head, body), 0) > 1:
            metric = "" if head == "warning" else head
            repeated.setdefault(note(head, body), []).append((group, metric))
        else:
            per_group[group].append(f"{head}: {body}" if head else body)
    notes = [f"{t} ({w})" if (w := _where(items, groups)) else t for t, items in repeated.items()]
    return per_group, notes


@dataclass
class AggregateResult:
    """What :func:`aggregate_sweep` computed and wrote."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    sweep_id: str | None
    filter_string: str | None
    by: list[str]
    metrics: list[str]
    level: float
    runs: pd.DataFrame
    summary: pd.DataFrame
    fits: pd.DataFrame
    verdict: list[str]
    axis: str | None = None
    n_duplicates: int = 0
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    logged_run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    # metric -> (the metric it equals in every run, max relative difference): shown once
    same_as: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def selection(self) -> str:
        parts = []
        if self.sweep_id:
            parts.append(f"sweep {self.sweep_id}")
        if self.filter_string:
            parts.append(f"filter {self.filter_string!r}")
        return f"experiment {self.experiment!r}, " + ", ".join(parts)

    @property
    def shown_metrics(self) -> list[str]:
        """The metrics of the tables: those equal to another one by construction (``same_as``)
        are shown once, as that one."""
        return [m for m in self.metrics if m not in self.same_as]

    def headline(self) -> list[str]:
        """One line per group: the claim's status and key numbers (:func:`headline`)."""
        return headline(self.verdict, self.fits)

    def verdict_text(self, markdown: bool = False, with_headline: bool = True) -> str:
        """verdict.txt: the headline, then the verdict per group, then each repeated note once
        (with the metrics and groups it applies to)."""
        per_group, notes = verdict_details(self.verdict, hidden=list(self.same_as))
        notes += self.equal_metric_notes()
        heads = self.headline() if with_headline else []
        out = ([f"- {h}" for h in heads] if markdown else heads) + ([""] if heads else [])
        for group, lines in per_group.items():
            name = group or "all runs"
            if list(per_group) == [""]:  # one group, no labels: a plain list
                out += [f"- {x}" for x in lines]
            elif markdown:
                out += [f"### {name}", ""] + [f"- {x}" for x in lines] + [""]
            else:
                out += [f"{name}:"] + [f"  {x}" for x in lines]
        if notes and markdown:
            out += ["### Notes", ""] + [f"- {n}" for n in notes]
        elif notes:
            out += ["notes:"] + [f"  {n}" for n in notes]
        return "\n".join(out).rstrip() + "\n"

    def equal_metric_notes(self) -> list[str]:
        return [
            f"{m} equals {kept} in every run (max relative difference {diff:.1e}): shown once, "
            f"as {kept} (GD + MSE: the linearised model is the kernel predictor, docs/metrics.md)"
            for m, (kept, diff) in self.same_as.items()
        ]

    def report(self, markdown: bool = False) -> str:
        """The readable report: the headline (one line per group), the selection, runs per
        group, summary, fits, the verdict per group, notes. Text tables fit 120 columns."""
        table = markdown_table if markdown else text_table
        status_counts = self.runs["status"].value_counts().to_dict()
        counts = ", ".join(f"{n} {s}" for s, n in sorted(status_counts.items()))
        out = []
        heads = self.headline()
        if markdown:
            what = f"along {self.axis}" if self.axis else "kernel drift vs width"
            out += [f"# Aggregate: {what}", ""]
            out += [f"- {h}" for h in heads] + ([""] if heads else [])
        else:
            out += heads + ([""] if heads else [])
        dedup = f"{self.n_duplicates} dropped" if self.n_duplicates else "none"
        info = [
            f"Selection: {self.selection} ({len(self.runs)} runs: {counts})",
            f"Grouping keys: {', '.join(self.by) or '(none)'}; replicate key: {SEED_KEY}; "
            f"fit level {self.level:g}",
            f"Duplicate configs (same config hash; the latest FINISHED run kept): {dedup}",
        ]
        out += [f"- {x}" for x in info] if markdown else info
        out += [""]
        shown = self.shown_metrics
        fits = self.fits
        if "metric" in fits:
            fits = fits[~fits["metric"].isin(list(self.same_as))]
        sections = [
            ("Runs per group", _runs_rows(self.summary, self.by), len(self.by)),
            (
                f"Final metrics (mean over seeds, 95% CI: {MEAN_CI_METHOD})",
                _summary_rows(self.summary, self.by, shown),
                1 + len(self.by),
            ),
        ]
        if not fits.empty:
            sections += [
                (
                    f"Power-law fits (metric ~ prefactor * width^slope; 95% CI: {SLOPE_CI_METHOD})",
                    _fits_rows(fits),
                    2,
                ),
                ("Local slopes between consecutive widths", _local_rows(fits), 2),
            ]
        for title, (header, rows), keep in sections:
            out += [f"## {title}" if markdown else f"{title}:", "", table(header, rows, keep=keep)]
            out += [""]
        fit_notes = _fit_notes(fits, list(self.same_as))
        if fit_notes:
            out += ["Fit notes:", ""]
            out += [f"- {n}" for n in fit_notes] + [""]
        out += ["## Verdict" if markdown else "Verdict:", ""]
        out += [self.verdict_text(markdown=markdown, with_headline=False)]
        if self.notes:
            out += ["## Notes" if markdown else "Notes:", ""]
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out).rstrip() + "\n"


EQUAL_RTOL = 1e-6  # metrics closer than this in every run are one metric (shown once)


def equal_metrics(runs: pd.DataFrame, metrics: Sequence[str]) -> dict[str, tuple[str, float]]:
    """Metrics equal to an earlier one of ``metrics`` in every finished run (max relative
    difference below :data:`EQUAL_RTOL`, finite in the same runs): metric -> (the earlier one,
    the max relative difference). E.g. ``kernel_pred_error_test`` and ``lin_error_test`` under
    GD + MSE (docs/metrics.md: computed independently, mathematically equal)."""
    ok = runs[_is_finished(runs)]
    out: dict[str, tuple[str, float]] = {}
    for i, b in enumerate(metrics):
        for a in metrics[:i]:
            if a in out or a not in ok or b not in ok:
                continue
            x, y = ok[a].to_numpy(float), ok[b].to_numpy(float)
            both = np.isfinite(x) & np.isfinite(y)
            if not both.any() or (np.isfinite(x) != np.isfinite(y)).any():
                continue
            scale = np.maximum(np.abs(x[both]), np.abs(y[both]))
            diff = float(np.max(np.abs(x[both] - y[both]) / np.where(scale > 0, scale, 1.0)))
            if diff < EQUAL_RTOL:
                out[b] = (a, diff)
                break
    return out


def slope_metric_names(fits: pd.DataFrame, by: Sequence[str] = ()) -> dict[str, float]:
    """The few scalar metrics logged on the sweep's run when it has one group: the asymptotic
    slope of the kernel drift and its 95 % CI (``kernel_drift_slope``, ``..._ci_low``,
    ``..._ci_high``) and of the linearisation error (``lin_error_test_slope``). None with
    several groups: their fits are the table ``aggregate/fits.json`` (no ``/`` in names)."""
    out: dict[str, float] = {}
    if fits is None or fits.empty or fits["group"].nunique() > 1:
        return out
    ok = fits[fits["status"] == "ok"].set_index("metric")
    for candidates, suffixes in (
        (DRIFT_METRICS, ("", "_ci_low", "_ci_high")),
        (LIN_METRICS, ("",)),
    ):
        m = next((c for c in candidates if c in ok.index), None)
        if m is None:
            continue
        for suffix in suffixes:
            value = float(ok.loc[m, f"asym_slope{suffix}"])
            if np.isfinite(value):
                out[f"{m}_slope{suffix}"] = value
    return out


def aggregate_sweep(
    tracking_uri: str | None = None,
    experiment: str | None = None,
    sweep_id: str | None = None,
    out_dir: str | Path | None = None,
    *,
    filter_string: str | None = None,
    by: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    level: float = 0.3,
    step_metric: str | None = DEFAULT_STEP_METRIC,
    log_to_mlflow: bool = True,
    write: bool = True,
) -> AggregateResult:
    """Aggregate a sweep: read runs, summarise, fit, judge, write ``out_dir``, log to MLflow.

    ``sweep_id``: a parent run id, ``"latest"``, or None (= latest, unless ``filter_string``
    is given, which then selects runs of ``experiment`` instead of a sweep; both together select
    the sweep's children matching the filter). ``by`` / ``metrics`` None = defaults (see
    :func:`default_group_keys`, :data:`DEFAULT_METRICS`). ``out_dir`` None =
    ``outputs/aggregate/<sweep id>`` (or ``.../filter-<hash>``) under the working directory.
    Files and slope metrics are logged on the sweep's parent run (artifact folder
    ``aggregate/``), or on a new run named ``aggregate`` (tag ``ntk_sweep.role=aggregate``) when
    there is no parent. Raises :class:`AggregateError` on bad input, before writing anything.
    """
    if not (level > 0):
        raise AggregateError(f"--level: must be > 0, got {level}")
    if write:
        _check_out_dir(out_dir)
    uri = resolve_tracking_uri(tracking_uri)
    _check_store(uri, writable=write and log_to_mlflow)

    client = tracking.connect(uri)
    exp_name, exp_id, parent_id = _resolve_selection(client, experiment, sweep_id, filter_string)
    runs, params, metric_names = _load_selection(client, exp_name, exp_id, parent_id, filter_string)
    notes: list[str] = []
    runs, n_dup = deduplicate_runs(runs)
    if n_dup:
        notes.append(
            f"deduplicated by config hash (tag {CONFIG_HASH_TAG}): {n_dup} run(s) repeating a "
            "configuration dropped, the latest FINISHED one of each kept"
        )
    by = _grouping_keys(by, runs, params)
    metrics = _chosen_metrics(metrics, metric_names, notes)
    summary, fits, lines, axis = _analyse(runs, by, metrics, level, notes)
    result = AggregateResult(
        tracking_uri=uri,
        experiment=exp_name,
        experiment_id=exp_id,
        sweep_id=parent_id,
        filter_string=filter_string,
        by=by,
        metrics=metrics,
        level=level,
        runs=runs,
        summary=summary,
        fits=fits,
        verdict=lines,
        axis=axis,
        n_duplicates=n_dup,
        notes=notes,
        same_as=equal_metrics(runs, metrics),
    )
    histories = None
    if step_metric and step_metric in metric_names:
        histories = load_histories(client, runs, step_metric)
    elif step_metric:
        notes.append(f"no per-step view: {step_metric!r} is not logged by the selected runs")
    if write:
        try:
            with tracking.full_store_is_fatal(uri, "free space, then run the same command again"):
                _write_and_log(result, client, out_dir, histories, step_metric, log_to_mlflow)
        except tracking.StoreFullError as exc:  # --out is written first: say where it is
            written = f"; the outputs are in {result.out_dir}" if result.out_dir else ""
            raise AggregateError(f"{exc} (or pass --no-log{written})") from None
    return result


def _check_out_dir(out_dir) -> None:
    """``--out`` must be a folder, or a path where one can be created (checked before the store
    is read)."""
    if out_dir is None:
        return
    out = Path(out_dir)
    existing = next(p for p in (out, *out.parents) if p.exists())
    if existing == out and not out.is_dir():
        raise AggregateError(f"--out: {out} is a file, not a folder (pass a folder; it is created)")
    if not existing.is_dir():
        raise AggregateError(f"--out: cannot create {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise AggregateError(f"--out: cannot write into {existing} (permission denied)")


def _load_selection(client, exp_name: str, exp_id: str, parent_id, filter_string):
    """:func:`load_runs`, with a bad filter string or an empty selection as AggregateError."""
    from mlflow.exceptions import MlflowException

    try:
        runs, params, metric_names = load_runs(client, exp_id, parent_id, filter_string)
    except MlflowException as exc:
        msg = str(exc.message if hasattr(exc, "message") else exc).splitlines()[0]
        raise AggregateError(f"--filter: {msg}") from None
    if runs.empty:
        what = f"sweep {parent_id} has no child runs" if parent_id else "no run matches"
        if filter_string:
            what += f" (filter {filter_string!r})"
        raise AggregateError(f"empty selection: {what} in experiment {exp_name!r}")
    return runs, params, metric_names


def _grouping_keys(by: Sequence[str] | None, runs: pd.DataFrame, params: list[str]) -> list[str]:
    """``by`` checked against the runs' params, else :func:`default_group_keys`."""
    if by is None:
        return list(default_group_keys(runs, params))
    by = [k for k in by if k]
    for k in by:
        if k == SEED_KEY:
            raise AggregateError(f"--by: {SEED_KEY!r} is the replicate key, not a grouping key")
        if k not in params:
            raise AggregateError(
                f"--by: {k!r} is not a param of the selected runs; "
                f"available: {', '.join(params) or 'none'}"
            )
    return by


def _chosen_metrics(
    metrics: Sequence[str] | None, metric_names: list[str], notes: list[str]
) -> list[str]:
    """``metrics`` checked against the logged metrics, else the logged :data:`DEFAULT_METRICS`
    (a note lists the default metrics that were not logged)."""
    available = f"available: {', '.join(metric_names) or 'none'}"
    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if m in metric_names]
        missing = [m for m in DEFAULT_METRICS if m not in metric_names]
        if missing:
            notes.append(f"default metrics not logged by the selected runs: {', '.join(missing)}")
        if not metrics:
            raise AggregateError(
                "--metrics: none of the default metrics were logged by the selected runs; "
                + available
            )
        return metrics
    metrics = [m for m in metrics if m]
    for m in metrics:
        if m not in metric_names:
            raise AggregateError(
                f"--metrics: {m!r} is not a metric of the selected runs; {available}"
            )
    return metrics


def _analyse(runs: pd.DataFrame, by: list[str], metrics: list[str], level: float, notes: list[str]):
    """-> (summary, fits, verdict lines, swept axis or None); appends the notes that apply."""
    kink = kink_note(runs, metrics)
    if kink:
        notes.append(kink)
    axis = swept_axis(runs, by)
    if _width_key(by) is None and axis is None:
        notes.append("grouping keys do not include model.width: no power-law fits")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        summary = summarize(runs, by, metrics)
        if axis is None:
            fits = fit_power_laws(runs, by, metrics, level=level)
            lines = verdict(fits)
        else:  # lr / alpha at fixed width: aggregated along that axis, no width fits
            fits = fit_power_laws(runs, [k for k in by if k != _width_key(by)], metrics)
            lines = axis_verdict(runs, summary, axis, by, metrics)
    n_excluded = int((~_is_finished(runs)).sum())
    if n_excluded:
        notes.append(
            f"{n_excluded} run(s) not FINISHED are excluded from the statistics "
            "(listed per group under 'not used')"
        )
    return summary, fits, lines, axis


def _write_and_log(
    result: AggregateResult, client, out_dir, histories, step_metric, log_to_mlflow: bool
) -> None:
    """Write the tables, figures, verdict and report to ``out_dir``; log them (and the slope
    metrics) to the sweep's parent run, or to a new ``aggregate`` run."""
    parent_id = result.sweep_id
    if out_dir is None:
        digest = hashlib.sha1(str(result.filter_string).encode()).hexdigest()[:8]
        out_dir = Path.cwd() / "outputs" / "aggregate" / (parent_id or "filter-" + digest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.out_dir = out
    files: dict[str, Path] = {}
    result.summary.to_csv(out / "summary.csv", index=False)
    files["summary.csv"] = out / "summary.csv"
    result.fits.to_csv(out / "fits.csv", index=False)
    files["fits.csv"] = out / "fits.csv"
    _write_figures(result, out, files, histories, step_metric)
    (out / "verdict.txt").write_text(result.verdict_text())
    files["verdict.txt"] = out / "verdict.txt"
    if log_to_mlflow:
        run_id = parent_id
        if run_id is None:
            run_id = tracking.create_run(
                client,
                result.experiment_id,
                "aggregate",
                {ROLE_TAG: "aggregate", AGGREGATE_FILTER_TAG: result.filter_string or ""},
            )
        result.logged_run_id = run_id
        result.notes.append(f"logged to MLflow run {run_id} (artifacts under aggregate/)")
    (out / "summary.md").write_text(result.report(markdown=True))
    files["summary.md"] = out / "summary.md"
    result.files = files
    if log_to_mlflow:
        _log_outputs(client, result, new_run=parent_id is None)


def _write_figures(
    result: AggregateResult, out: Path, files: dict[str, Path], histories, step_metric
) -> None:
    """The PNGs: drift / linearisation error vs width (or the metrics vs the swept axis), and
    the per-step view; a note for each vs-width figure whose metrics were not selected."""
    summary, fits, by, metrics, axis = (
        result.summary, result.fits, result.by, result.metrics, result.axis
    )  # fmt: skip
    title = result.selection

    def save(fig, name: str) -> None:
        save_png(fig, out / f"{name}.png")
        files[f"{name}.png"] = out / f"{name}.png"

    for name, candidates in (
        ("drift_vs_width", DRIFT_METRICS[:2]),
        ("linearization_error_vs_width", LIN_METRICS),
    ):
        chosen = [m for m in candidates if m in metrics]
        if not chosen:
            result.notes.append(f"no {name}.png: none of {', '.join(candidates)} in --metrics")
            continue
        if _width_key(by) is None or axis is not None:
            continue
        save(plot_vs_width(summary, fits, chosen, by, level=result.level, title=title), name)
    if axis is not None:
        chosen = [m for m in ("kernel_drift", "loss") if m in metrics] or metrics[:2]
        lr_max = lr_max_stable(result.runs) if axis in ("train.lr", "lr") else math.nan
        fig = plot_vs_axis(summary, chosen, by, axis, lr_max=lr_max, title=title)
        save(fig, f"drift_vs_{axis.rsplit('.', 1)[-1]}")
    if histories is not None and not histories.empty:
        save(plot_vs_step(histories, result.runs, by, step_metric, title=title), "drift_vs_step")


def _log_outputs(client, result: AggregateResult, new_run: bool) -> None:
    """The written files as artifacts under ``aggregate/``, the fits as the table
    ``aggregate/fits.json``, the headline as the run's description and tag
    ``ntk_sweep.verdict``, the few claim metrics (:func:`slope_metric_names`); a new
    ``aggregate`` run is then terminated FINISHED. Every write goes through
    :mod:`ntk_sweep.tracking`."""
    run_id = result.logged_run_id
    for path in result.files.values():
        tracking.log_artifact(client, run_id, path, "aggregate")
    if not result.fits.empty:
        tracking.log_table(client, run_id, result.fits, "aggregate/fits.json")
    heads = result.headline()
    if heads:
        tracking.set_tag(client, run_id, VERDICT_TAG, "\n".join(heads))
        description = ["**ntk-aggregate verdict**", "", *(f"- {h}" for h in heads), ""]
        description += ["Details: artifacts `aggregate/summary.md`, table `aggregate/fits.json`."]
        tracking.set_tag(client, run_id, NOTE_TAG, "\n".join(description))
    slopes = slope_metric_names(result.fits)
    if slopes:
        metrics = tracking.MetricLog(client, run_id)
        metrics.log(slopes, step=0)
        metrics.flush()
    if new_run:
        tracking.end_run(client, run_id, FINISHED)
