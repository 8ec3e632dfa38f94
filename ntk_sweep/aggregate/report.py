"""Aggregate a sweep from MLflow: does the kernel stop moving as the network gets wider?

Command line: ``python -m ntk_sweep.aggregate`` or ``ntk-aggregate`` (see ``--help``).

Layout (pure statistics separate from I/O):

- statistics on plain DataFrames (one row per run; columns = group keys, ``seed``, ``status``,
  ``run_name``, one column per metric): :func:`summarize`, :func:`fit_power_laws`,
  :func:`verdict`, :func:`default_group_keys`;
- MLflow reading: :func:`load_runs` (``MlflowClient.search_runs``, params cast to numbers),
  :func:`load_histories` (``MlflowClient.get_metric_history``);
- figures (``matplotlib.figure.Figure``, no pyplot): :func:`plot_vs_width`, :func:`plot_vs_step`;
- :func:`aggregate_sweep`: the whole pipeline, called by :func:`main` and by the optional Hydra
  callback. Bad input raises :class:`AggregateError` before anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_METRICS",
    "AggregateError",
    "AggregateResult",
    "aggregate_sweep",
    "default_group_keys",
    "fit_power_laws",
    "load_histories",
    "load_runs",
    "main",
    "plot_vs_step",
    "plot_vs_width",
    "summarize",
    "verdict",
]

DEFAULT_EXPERIMENT = "ntk-sweep"
WIDTH_KEYS = ("model.width", "width")  # the first one present is the x axis of the fits
SEED_KEY = "seed"  # replicate key
ROLE_TAG = "ntk_sweep.role"
PARENT_TAG = "mlflow.parentRunId"
FAILURE_TAG = "ntk_sweep.failure_reason"
# Resume (ntk_sweep.tracking): a resumed sweep's parent lists the earlier runs its jobs reused as
# tags `ntk_sweep.resumed_run.<job num>` = run id; they belong to the sweep. A RUNNING run whose
# heartbeat (tag, unix time) is older than its `tracking.stale_after_s` param is dead: KILLED.
RESUMED_RUN_TAG = "ntk_sweep.resumed_run."
HEARTBEAT_TAG = "ntk_sweep.heartbeat"
STALE_PARAM = "tracking.stale_after_s"
DEFAULT_STALE_AFTER_S = 120.0
DEAD_REASON = "no heartbeat: process died"
# Final values of these (what search_runs returns as metrics.<name>) are summarised by default.
DEFAULT_METRICS = (
    "kernel_drift",
    "kernel_distance",
    "lin_error_test",
    "kernel_pred_error_test",
    "param_movement",
    "loss",
    "test_loss",
)
DEFAULT_STEP_METRIC = "kernel_drift"
# Param prefixes that never split a table (bookkeeping, not physics).
IGNORED_PARAM_PREFIXES = ("tracking.", "hydra.")
# Metrics the theory says vanish with width: they get a verdict (the others only a fit).
DRIFT_METRICS = ("kernel_drift", "kernel_drift_test", "kernel_distance", "kernel_distance_test")
LIN_METRICS = ("lin_error_test", "lin_error_train")
VANISHING_PREFIXES = (
    "kernel_drift",
    "kernel_distance",
    "lin_error",
    "kernel_pred_error",
    "analytic_pred_error",
    "param_movement",
)
CI_LEVEL = 0.95
# MLflow stores inf as 1.8e308: values beyond this are infinite for the statistics.
MLFLOW_INF = 1e300
MEAN_CI_METHOD = "student-t, n-1 dof"
SLOPE_CI_METHOD = "welch-t on per-width seed means"
MIN_SEEDS_WARN = 5  # fewer seeds per width: the verdict warns that the CIs are wide
MIN_ASYMPTOTIC_WIDTHS = 3  # the asymptotic fit: the widest half of the widths, at least this
MIN_WIDTHS_FOR_WINDOW = 4  # fewer usable widths: the asymptotic fit is the all-widths fit
# Activations (ntk_sweep.network.ACTIVATIONS and common others) by smoothness, MATH.md s.6
RELU_LIKE = ("relu", "leaky_relu", "step", "abs", "hardtanh", "relu6")
SMOOTH = ("erf", "tanh", "linear", "gelu", "sigmoid", "softplus", "silu", "swish", "sin")
# Swept axes other than the width: aggregated by that axis when the width is fixed.
AXIS_KEYS = ("train.lr", "lr", "model.alpha", "alpha")
LR_MAX_METRIC = "lr_max_stable"
PHASE_TAGS = ("phase_net", "phase_lin")  # tags ntk_sweep.phase_net / phase_lin, when logged
CONFIG_HASH_TAG = "ntk_sweep.config_hash"
MAX_CELL = 90  # table cells longer than this are cut (the report has no line over ~200 chars)
FINISHED = "FINISHED"
FIT_COLUMNS = (
    "status",
    "slope",
    "slope_ci_low",
    "slope_ci_high",
    "slope_dof",
    "ci_method",
    "intercept",
    "prefactor",
    "r2",
    "n_widths",
    "widths_used",
    "widths_excluded",
    "min_seeds",
    "asym_slope",
    "asym_slope_ci_low",
    "asym_slope_ci_high",
    "asym_widths",
    "local_slopes",
    "expected_slope",
    "expected_source",
    "comparison",
    "window",
    "reason",
)


class AggregateError(ValueError):
    """Bad input (unknown experiment, sweep, key, metric; empty selection). One-line message."""


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _width_key(by: Sequence[str]) -> str | None:
    for key in WIDTH_KEYS:
        if key in by:
            return key
    return None


def _groups(df: pd.DataFrame, keys: Sequence[str]) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """(key values, sub-frame) per group, sorted by key; the whole frame when ``keys`` is empty."""
    keys = list(keys)
    if not keys:
        yield (), df
        return
    for values, sub in df.groupby(keys, sort=True, dropna=False):
        yield (values if isinstance(values, tuple) else (values,)), sub


def _label(keys: Sequence[str], values: Sequence) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in zip(keys, values, strict=True))


def _fmt_value(v) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "(missing)"
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    if isinstance(x, int | np.integer):
        return str(int(x))
    x = float(x)
    if math.isnan(x):
        return "-"
    return f"{x:.{digits}g}"


def _fixed(x, decimals: int = 3) -> str:
    x = float(x)
    return "-" if math.isnan(x) else f"{x + 0.0:.{decimals}f}"


def _is_finished(df: pd.DataFrame) -> pd.Series:
    if "status" not in df.columns:
        return pd.Series(True, index=df.index)
    return df["status"].fillna(FINISHED).astype(str).eq(FINISHED)


def _finite(values) -> np.ndarray:
    """Finite values; beyond :data:`MLFLOW_INF` counts as inf (MLflow stores inf as 1.8e308)."""
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a) & (np.abs(a) < MLFLOW_INF)]


def t_interval(
    mean: np.ndarray | float, var_of_mean: np.ndarray | float, dof: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided 95 % Student-t interval ``mean -+ t_{0.975, dof} sqrt(var_of_mean)``.

    Vectorised; NaN where ``dof`` < 1 or the variance is not finite. With ``n`` seeds,
    ``var_of_mean = s^2 / n`` and ``dof = n - 1`` give the exact interval for normal seeds
    (the percentile bootstrap it replaces covered 74 % at n = 3)."""
    from scipy import stats

    mean, var_of_mean, dof = (np.asarray(a, dtype=float) for a in (mean, var_of_mean, dof))
    with np.errstate(invalid="ignore", over="ignore"):
        ok = (dof >= 1) & np.isfinite(var_of_mean) & np.isfinite(mean)
        half = stats.t.ppf(1 - (1 - CI_LEVEL) / 2, np.where(ok, dof, 1.0)) * np.sqrt(
            np.where(ok, var_of_mean, 0.0)
        )
        half = np.where(ok, half, np.nan)
    return mean - half, mean + half


def mean_ci(values) -> tuple[float, float]:
    """Student-t 95 % CI of the seed mean (``n - 1`` dof; NaN with fewer than 2 values)."""
    v = _finite(values)
    if len(v) < 2:
        return math.nan, math.nan
    with np.errstate(over="ignore", invalid="ignore"):
        lo, hi = t_interval(v.mean(), v.var(ddof=1) / len(v), len(v) - 1)
    return float(lo), float(hi)


def log_contrast(
    coef: np.ndarray, means: np.ndarray, variances: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A linear contrast ``sum_j coef_j log(mean_j)`` of per-width seed means, with its 95 % CI.

    ``coef`` (k,), ``means`` / ``variances`` (seed variance, ddof 1) / ``counts`` (..., k): the
    last axis is the width, leading axes are vectorised (the coverage simulation runs 2000
    sweeps at once). Var(log mean_j) ~ s_j^2 / (n_j mean_j^2) (delta method); the widths are
    independent, so Var = sum coef_j^2 Var_j, and the dof are Welch-Satterthwaite's,
    ``(sum c_j^2 v_j)^2 / sum (c_j^2 v_j)^2 / (n_j - 1)``: the seeds, not the widths, are the
    replicates (a fit on means with t_{k-2} would ignore them, a bootstrap over 3 seeds
    under-covers). Returns (estimate, ci_low, ci_high, dof); the CI is NaN where a width has
    fewer than 2 seeds.
    """
    coef = np.asarray(coef, dtype=float)
    means, variances, counts = (np.asarray(a, dtype=float) for a in (means, variances, counts))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        est = (coef * np.log(means)).sum(axis=-1)
        v = coef**2 * variances / (counts * means**2)
        var = v.sum(axis=-1)
        dof = var**2 / (v**2 / (counts - 1)).sum(axis=-1)
        dof = np.where((counts >= 2).all(axis=-1), dof, np.nan)
        dof = np.where(var > 0, dof, np.nan)
    lo, hi = t_interval(est, var, dof)
    return est, lo, hi, dof


def slope_coefficients(log_widths: np.ndarray) -> np.ndarray:
    """Least-squares slope as a contrast: ``slope = sum_j c_j y_j``, ``c = (x - xbar) / Sxx``
    (the same number as ``numpy.polyfit(x, y, 1)[0]``)."""
    x = np.asarray(log_widths, dtype=float)
    xc = x - x.mean()
    return xc / (xc**2).sum()


# --------------------------------------------------------------------------------------------
# Statistics (pure: frame in, frame out)
# --------------------------------------------------------------------------------------------


def summarize(
    df: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per group: counts by status and, per metric, n / mean / std / Student-t 95 % CI.

    ``df`` has one row per run with columns ``by``, ``metrics`` and optionally ``status``
    (MLflow run status; rows not ``FINISHED`` are counted and listed, not used) and
    ``run_name`` / ``failure_reason``. Columns of the result: the ``by`` keys, ``n_runs``,
    ``n_seeds`` (finished runs), ``n_failed``, ``n_killed``, ``n_running`` (RUNNING or
    SCHEDULED), ``excluded_runs`` ("name [STATUS: reason]; ..."), then for each metric
    ``<m>_n``, ``<m>_mean``, ``<m>_std`` (ddof=1), ``<m>_ci_low``, ``<m>_ci_high`` (the
    Student-t interval of the seed mean, :func:`mean_ci`; column ``ci_method`` says so).
    ``n_boot`` / ``seed`` are accepted for older callers and unused (no bootstrap any more:
    with 3 seeds it covered 74 %).
    """
    by, metrics = list(by), list(metrics)
    finished = _is_finished(df)
    status = df["status"].astype(str) if "status" in df.columns else None
    rows = []
    for values, sub in _groups(df, by):
        row: dict = dict(zip(by, values, strict=True))
        ok = sub[finished.loc[sub.index]]
        row["n_runs"] = len(sub)
        row["n_seeds"] = len(ok)
        st = status.loc[sub.index] if status is not None else pd.Series(FINISHED, index=sub.index)
        row["n_failed"] = int(st.eq("FAILED").sum())
        row["n_killed"] = int(st.eq("KILLED").sum())
        row["n_running"] = int(st.isin(["RUNNING", "SCHEDULED"]).sum())
        row["excluded_runs"] = "; ".join(
            _describe_run(r) for _, r in sub[~st.eq(FINISHED)].iterrows()
        )
        for m in metrics:
            v = _finite(ok[m]) if m in ok.columns else np.array([])
            row[f"{m}_n"] = len(v)
            with np.errstate(over="ignore", invalid="ignore"):
                row[f"{m}_mean"] = float(v.mean()) if len(v) else math.nan
                row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else math.nan
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = mean_ci(v)
        row["ci_method"] = MEAN_CI_METHOD
        rows.append(row)
    columns = [*by, "n_runs", "n_seeds", "n_failed", "n_killed", "n_running", "excluded_runs"]
    columns.append("ci_method")
    for m in metrics:
        columns += [f"{m}_n", f"{m}_mean", f"{m}_std", f"{m}_ci_low", f"{m}_ci_high"]
    return pd.DataFrame(rows, columns=columns)


def _describe_run(r: pd.Series) -> str:
    name = r.get("run_name")
    if name is None or (isinstance(name, float) and math.isnan(name)) or name == "":
        name = str(r.get("run_id", "?"))[:8]
    text = f"{name} [{r.get('status', '?')}"
    reason = r.get("failure_reason")
    if isinstance(reason, str) and reason:
        text += f": {reason}"
    return text + "]"


def expected_rate(
    metric: str,
    activation: str | None = None,
    parameterization: str | None = None,
) -> tuple[float, str]:
    """The width exponent theory expects for ``metric`` (docs/expected_rates.md, MATH.md s.6).

    Returns (slope, source); slope NaN with the reason when there is none. NTK parameterization:
    kernel drift and linearisation / kernel-prediction error n^-1/2 for relu-like (non-smooth)
    activations (activation-pattern flips), n^-1 for smooth ones (Dyer & Gur-Ari 2019; Huang &
    Yau 2019); kernel distance is quadratic in the drift (1 - cos of a small perturbation), so
    twice that exponent; parameter movement and the init fluctuation Theta_0 - Theta_inf
    (analytic_pred_error) n^-1/2 (Jacot et al. 2018; Lee et al. 2019). mean_field: O(1), 0
    (Mei et al. 2018; Chizat & Bach 2019).
    """
    m = str(metric)
    if parameterization == "mean_field":
        return 0.0, "O(1) in mean_field (Mei et al. 2018)"
    if parameterization not in (None, "ntk"):
        return math.nan, f"no expected rate for parameterization {parameterization}"
    if m.startswith("param_movement"):
        return -0.5, "n^-1/2 (Jacot et al. 2018; Lee et al. 2019)"
    if m.startswith("analytic_pred_error"):
        return -0.5, "n^-1/2: Theta_0 - Theta_inf at init (CLT)"
    if not m.startswith(("kernel_drift", "kernel_distance", "lin_error", "kernel_pred_error")):
        return math.nan, f"no expected rate for {m}"
    act = str(activation) if activation is not None else ""
    if act in RELU_LIKE:
        base, why = -0.5, f"non-smooth {act}"
    elif act in SMOOTH:
        base, why = -1.0, f"smooth {act}, Dyer & Gur-Ari 2019"
    else:
        return math.nan, f"no expected rate for activation {act or '(unknown)'}"
    if m.startswith("kernel_distance"):
        return 2 * base, f"{why}; distance ~ drift^2"
    return base, why


def compare_with_expected(lo: float, hi: float, expected: float) -> str:
    """ "consistent" (the CI contains the expected slope), "faster" (CI entirely below it: falls
    faster), "slower" (entirely above), or "" when either is unknown."""
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(expected)):
        return ""
    if lo <= expected <= hi:
        return "consistent"
    return "faster" if hi < expected else "slower"


def slope_trend(lo: float, hi: float) -> str:
    """ "falls" (CI entirely below 0), "grows" (entirely above), "flat" (contains 0), "n/a"."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/a"
    return "falls" if hi < 0 else "grows" if lo > 0 else "flat"


def fit_power_laws(
    df: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str],
    level: float = 0.3,
    n_boot: int = 2000,
    seed: int = 0,
    min_widths: int = 2,
) -> pd.DataFrame:
    """Power law ``metric ~ prefactor * width**slope`` per metric and per group of the other keys.

    Least squares of ``log(mean)`` on ``log(width)`` (natural log: ``intercept = log(prefactor)``)
    over the group means of finished runs, using only the widths whose mean is in ``(0, level)``
    (at small width the drift is O(1), outside the asymptotic regime). The slope equals
    ``numpy.polyfit(log(widths), log(means), 1)[0]``. Its 95 % CI (:func:`log_contrast`) treats
    the seeds as the replicates: delta-method variance of each width's log mean, Welch-
    Satterthwaite dof (``slope_dof``), Student t. Also: the asymptotic fit over the widest half
    of the widths (at least 3; ``asym_*``, the all-widths fit when fewer than 4 widths), the
    local slopes between consecutive widths (``local_slopes``, text), the expected slope for
    the group's activation / parameterization (:func:`expected_rate`) and ``comparison`` of the
    asymptotic CI with it; ``window`` says when the slope still changes with width.
    Fewer than ``min_widths`` usable widths gives a row with ``status = "not available"`` and
    the reason, not an exception. ``n_boot`` / ``seed``: accepted, unused.

    The width key is the first of ``model.width`` / ``width`` in ``by``; the other keys of ``by``
    split the fits. Returns one row per (metric, group): ``metric``, the other keys, ``group``
    (a label), then :data:`FIT_COLUMNS`.
    """
    by, metrics = list(by), list(metrics)
    wkey = _width_key(by)
    others = [k for k in by if k != wkey]
    columns = ["metric", *others, "group", *FIT_COLUMNS]
    if wkey is None:
        return pd.DataFrame(columns=columns)
    ok = df[_is_finished(df)]
    rows = []
    for m in metrics:
        for values, sub in _groups(ok, others):
            row: dict = {"metric": m, **dict(zip(others, values, strict=True))}
            row["group"] = _label(others, values)
            row.update(_fit_one(sub, wkey, m, level, min_widths))
            expected, source = expected_rate(
                m, _setting(sub, "activation"), _setting(sub, "parameterization")
            )
            row["expected_slope"], row["expected_source"] = expected, source
            row["comparison"] = compare_with_expected(
                row["asym_slope_ci_low"], row["asym_slope_ci_high"], expected
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _setting(sub: pd.DataFrame, name: str) -> str | None:
    """The group's one value of ``model.<name>`` (or ``<name>``), None if absent or mixed."""
    for col in (f"model.{name}", name):
        if col in sub.columns:
            vals = sub[col].dropna().astype(str).unique()
            return str(vals[0]) if len(vals) == 1 else None
    return None


def _width_samples(sub: pd.DataFrame, wkey: str, metric: str) -> dict[float, np.ndarray]:
    samples: dict[float, np.ndarray] = {}
    if metric in sub.columns:
        for w, g in sub.groupby(wkey, sort=True):
            v = _finite(g[metric])
            if len(v) and np.isfinite(float(w)) and float(w) > 0:
                samples[float(w)] = v
    return samples


def _contrast_fit(widths: Sequence[float], samples: dict[float, np.ndarray]):
    """(slope, ci_low, ci_high, dof) of the least-squares log-log slope over ``widths``."""
    x = np.log(np.asarray(widths, dtype=float))
    means = np.array([samples[w].mean() for w in widths])
    var = np.array([samples[w].var(ddof=1) if len(samples[w]) > 1 else np.nan for w in widths])
    counts = np.array([len(samples[w]) for w in widths], dtype=float)
    est, lo, hi, dof = log_contrast(slope_coefficients(x), means, var, counts)
    return float(est), float(lo), float(hi), float(dof)


def _fit_one(sub: pd.DataFrame, wkey: str, metric: str, level: float, min_widths: int) -> dict:
    out: dict = {c: math.nan for c in FIT_COLUMNS}
    out.update(status="not available", n_widths=0, widths_used="", widths_excluded="", reason="")
    out.update(ci_method=SLOPE_CI_METHOD, asym_widths="", local_slopes="", window="")
    samples = _width_samples(sub, wkey, metric)
    means = {w: float(v.mean()) for w, v in samples.items()}
    used = [w for w, mu in means.items() if 0 < mu < level]
    excluded = [w for w in means if w not in used]
    out["widths_used"] = ";".join(_fmt_value(w) for w in used)
    out["widths_excluded"] = ";".join(_fmt_value(w) for w in excluded)
    out["n_widths"] = len(used)
    if not means:
        out["reason"] = f"no finished run has a finite {metric}"
        return out
    if len(used) < min_widths:
        out["reason"] = (
            f"{len(used)} width(s) with 0 < mean {metric} < level {level:g} "
            f"(need {min_widths}; widths excluded: {out['widths_excluded'] or 'none'})"
        )
        if not used and all(mu >= level for mu in means.values()):
            # O(1) at every width (e.g. mean_field): not a power law, but a clear answer
            lo, hi = min(means.values()), max(means.values())
            out["status"] = "above level"
            out["reason"] = (
                f"mean {metric} >= level {level:g} at every width ({_fixed(lo)} to {_fixed(hi)})"
            )
        return out
    x = np.log(np.array(used))
    y = np.log(np.array([means[w] for w in used]))
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else math.nan
    _, lo, hi, dof = _contrast_fit(used, samples)
    min_seeds = int(min(len(samples[w]) for w in used))
    out.update(
        status="ok",
        slope=float(slope),
        slope_ci_low=lo,
        slope_ci_high=hi,
        slope_dof=dof,
        intercept=float(intercept),
        prefactor=float(np.exp(intercept)),
        r2=r2,
        min_seeds=min_seeds,
        reason="only 2 widths: R^2 is trivially 1" if len(used) == 2 else "",
    )
    if min_seeds < 2:
        out["reason"] = "; ".join(x for x in (out["reason"], "a width with 1 seed: no CI") if x)
    out.update(_asymptotic(used, samples, float(slope), lo, hi))
    return out


def _asymptotic(used: list[float], samples: dict[float, np.ndarray], slope, lo, hi) -> dict:
    """The fit over the widest half of the widths (>= 3), local slopes, and the window note."""
    k = len(used)
    local = []
    for w1, w2 in zip(used[:-1], used[1:], strict=True):
        s, a, b, _ = _contrast_fit([w1, w2], samples)
        local.append(f"{_fmt_value(w1)}-{_fmt_value(w2)}: {s:.2f} [{_fixed(a, 2)}, {_fixed(b, 2)}]")
    out = {"local_slopes": "; ".join(local)}
    if k < MIN_WIDTHS_FOR_WINDOW:
        out.update(asym_slope=slope, asym_slope_ci_low=lo, asym_slope_ci_high=hi)
        out["asym_widths"] = ";".join(_fmt_value(w) for w in used)
        out["window"] = f"only {k} widths: no separate asymptotic fit (all widths used)"
        return out
    top = used[-max(MIN_ASYMPTOTIC_WIDTHS, math.ceil(k / 2)) :]
    s, a, b, _ = _contrast_fit(top, samples)
    out.update(asym_slope=s, asym_slope_ci_low=a, asym_slope_ci_high=b)
    out["asym_widths"] = ";".join(_fmt_value(w) for w in top)
    if np.isfinite(a) and np.isfinite(b) and not (a <= slope <= b):
        out["window"] = (
            f"not asymptotic: the all-widths slope {slope:.2f} is outside the widest-widths "
            f"CI [{_fixed(a, 2)}, {_fixed(b, 2)}] (the slope still changes with width)"
        )
    return out


def _is_mean_field(row: pd.Series) -> bool:
    return any(
        str(k).endswith("parameterization") and str(row[k]) == "mean_field" for k in row.index
    )


_TREND_TEXT = {
    "falls": "falls with width (CI < 0)",
    "grows": "grows with width (CI > 0)",
    "flat": "does not fall with width (CI contains 0)",
    "n/a": "no CI (a width has 1 seed)",
}
_COMPARISON_TEXT = {
    "consistent": "consistent with",
    "faster": "falls faster than",
    "slower": "falls slower than",
}


def _asym_ci(row: pd.Series) -> tuple[float, float, float]:
    return row["asym_slope"], row["asym_slope_ci_low"], row["asym_slope_ci_high"]


def _metric_line(row: pd.Series) -> str:
    """One fit in words: the asymptotic slope, its trend, the expected rate, the other fits."""
    m = row["metric"]
    s, lo, hi = _asym_ci(row)
    asym = str(row["asym_widths"]).split(";")
    dof = row["slope_dof"]
    dof_text = f", {dof:.0f} dof" if np.isfinite(dof) else ""
    text = (
        f"{m}: slope {s:.3f} [{_fixed(lo)}, {_fixed(hi)}] (t{dof_text}), widths "
        f"{asym[0]}-{asym[-1]}: {_TREND_TEXT[slope_trend(lo, hi)]}"
    )
    e = row["expected_slope"]
    if np.isfinite(e):
        cmp = row["comparison"]
        text += f"; expected {e:g} ({row['expected_source']})"
        text += f": {cmp}" if cmp else ": not compared (no CI)"
    else:
        text += f"; {row['expected_source']}"
    if len(asym) < row["n_widths"]:
        text += (
            f"; all {int(row['n_widths'])} widths {row['slope']:.3f} "
            f"[{_fixed(row['slope_ci_low'])}, {_fixed(row['slope_ci_high'])}]"
        )
    return text


def verdict(fits: pd.DataFrame) -> list[str]:
    """The claim in words, from :func:`fit_power_laws` rows (one line per fit, one per group).

    Every clause follows from a fitted slope and its 95 % CI, of the asymptotic fit (widest
    widths): a metric "falls" iff its CI is entirely below 0, "grows" iff entirely above,
    else "does not fall"; it is "consistent with" its expected rate (:func:`expected_rate`)
    iff the CI contains it, else it falls "faster" or "slower". A window that is not asymptotic
    and fewer than :data:`MIN_SEEDS_WARN` seeds per width get a warning line. ``mean_field``
    groups are the negative control: drift is expected not to fall. Metrics that the theory
    does not say vanish (losses) get no line.
    """
    lines: list[str] = []
    if fits is None or fits.empty:
        return ["no fit: the grouping keys do not include the width (model.width)"]
    for group, gf in fits.groupby("group", sort=False):
        prefix = f"[{group}] " if group else ""
        trends: dict[str, tuple[str, pd.Series]] = {}
        for _, row in gf.iterrows():
            m = row["metric"]
            if not str(m).startswith(VANISHING_PREFIXES):
                continue
            if row["status"] == "above level":
                lines.append(
                    f"{prefix}{m}: {row['reason']}: O(1), does not fall into the lazy regime"
                )
                trends[m] = ("above", row)
                continue
            if row["status"] != "ok":
                lines.append(f"{prefix}{m}: no fit ({row['reason']})")
                trends[m] = ("n/a", row)
                continue
            trends[m] = (slope_trend(*_asym_ci(row)[1:]), row)
            lines.append(prefix + _metric_line(row))
            if row["window"]:
                lines.append(f"{prefix}{m}: {row['window']}")
        lines += _warnings(gf, prefix)
        drift = next((m for m in DRIFT_METRICS if m in trends), None)
        lin = next((m for m in LIN_METRICS if m in trends), None)
        lines.append(f"{prefix}verdict: {_claim(trends, drift, lin, _is_mean_field(gf.iloc[0]))}")
    return lines


def _warnings(gf: pd.DataFrame, prefix: str) -> list[str]:
    seeds = gf.loc[gf["status"] == "ok", "min_seeds"].dropna()
    if len(seeds) and int(seeds.min()) < MIN_SEEDS_WARN:
        return [
            f"{prefix}warning: {int(seeds.min())} seed(s) at some width (< {MIN_SEEDS_WARN}): "
            "the t intervals are honest but wide; run more seeds to narrow them"
        ]
    return []


def _rate_clause(metric: str, row: pd.Series) -> str:
    s, lo, hi = _asym_ci(row)
    text = f"{metric} slope {s:.2f} [{_fixed(lo, 2)}, {_fixed(hi, 2)}]"
    cmp = row["comparison"]
    if cmp:
        text += f", {_COMPARISON_TEXT[cmp]} the expected {row['expected_slope']:g}"
    return text


def _claim(trends: dict, drift: str | None, lin: str | None, mean_field: bool) -> str:
    if drift is None:
        return "undetermined: no kernel drift metric among the fitted metrics"
    d_trend, d_row = trends[drift]
    if d_trend == "n/a":
        reason = d_row["reason"] or "no CI"
        return f"undetermined: no {drift} fit ({reason})"
    if d_trend == "falls":
        text = f"the kernel tends to constant ({_rate_clause(drift, d_row)})"
    elif d_trend == "above":
        text = f"{drift} stays O(1) at every width ({d_row['reason']}), the kernel keeps moving"
    elif d_trend == "grows":
        text = f"the kernel moves more with width ({_rate_clause(drift, d_row)})"
    else:
        text = f"the kernel keeps moving ({_rate_clause(drift, d_row)}: CI contains 0)"
    if lin is not None:
        l_trend, l_row = trends[lin]
        if l_trend == "falls":
            text += f"; the network approaches its linearisation ({_rate_clause(lin, l_row)})"
        elif l_trend == "n/a":
            text += f"; no {lin} fit"
        elif l_trend == "above":
            text += f"; the network stays far from its linearisation ({lin} O(1))"
        elif l_trend == "grows":
            text += f"; the network moves away from its linearisation ({_rate_clause(lin, l_row)})"
        else:
            text += (
                "; the network does not approach its linearisation "
                f"({_rate_clause(lin, l_row)}: CI contains 0)"
            )
    if mean_field:
        expected = d_trend != "falls"
        return (
            "as expected for the mean_field negative control: "
            if expected
            else "UNEXPECTED for the mean_field negative control (drift should not fall): "
        ) + text
    lin_ok = lin is None or trends[lin][0] == "falls"
    if d_trend == "falls" and lin_ok:
        return "claim supported: " + text
    if d_trend == "falls":
        return "claim partly supported: " + text
    if d_trend == "flat":  # a CI containing 0 neither shows a fall nor rules one out
        return "claim not established (more seeds or widths narrow the CI): " + text
    return "claim not supported: " + text


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


def kink_note(runs: pd.DataFrame, metrics: Sequence[str]) -> str:
    """A warning for test metrics of ``paper_toy`` with ``sigma_b = 0`` (the paper preset): the
    test grid contains x = 0, where that kernel has a kink (MATH.md s.3), and one grid point
    can dominate an RMS or a kernel drift on test inputs. "" when it does not apply."""
    test = [m for m in metrics if str(m).endswith("_test")]
    if not test or "dataset.name" not in runs.columns or "model.sigma_b" not in runs.columns:
        return ""
    sigma_b = pd.to_numeric(runs["model.sigma_b"], errors="coerce")
    hit = runs["dataset.name"].astype(str).eq("paper_toy") & sigma_b.eq(0)
    if not hit.any():
        return ""
    return (
        f"{int(hit.sum())} run(s) are paper_toy with sigma_b = 0: the test grid contains x = 0, "
        f"the kernel's kink (MATH.md s.3); {', '.join(test)} may be dominated by that point: "
        "read the train metrics"
    )


def swept_axis(df: pd.DataFrame, by: Sequence[str]) -> str | None:
    """The swept axis other than the width (``train.lr``, ``model.alpha``, :data:`AXIS_KEYS`)
    when the width takes a single value: the sweep is then aggregated along that axis."""
    wkey = _width_key(by)
    if wkey is not None and wkey in df.columns and df[wkey].nunique(dropna=True) > 1:
        return None
    for key in AXIS_KEYS:
        if key in by and key in df.columns and df[key].nunique(dropna=True) > 1:
            return key
    return None


def lr_max_stable(runs: pd.DataFrame) -> float:
    """Median over finished runs of ``lr_max_stable`` = 2N/lambda_max of the initial NTK (MATH.md
    s.4: GD is stable only below it); NaN when not logged."""
    if LR_MAX_METRIC not in runs.columns:
        return math.nan
    v = _finite(runs.loc[_is_finished(runs), LR_MAX_METRIC])
    if not len(v):
        v = _finite(runs[LR_MAX_METRIC])
    return float(np.median(v)) if len(v) else math.nan


def _phase_text(sub: pd.DataFrame) -> str:
    parts = []
    for name in PHASE_TAGS:
        if name in sub.columns:
            tags = sub[name].fillna("").astype(str)
            counts = tags[tags != ""].value_counts()
            if len(counts):
                short = name.split("_", 1)[1]
                parts.append(f"{short} " + ", ".join(f"{p} x{n}" for p, n in counts.items()))
    return "phase " + "; ".join(parts) if parts else ""


def axis_verdict(
    runs: pd.DataFrame, summary: pd.DataFrame, axis: str, by: Sequence[str], metrics: Sequence[str]
) -> list[str]:
    """The sweep along ``axis`` (lr or alpha at fixed width) in words: 2N/lambda_max, one line
    per axis value (finished / total, the phase tags when logged, else lr / lr_max, the final
    drift and loss with their t intervals), and all diverged runs in one line."""
    wkey = _width_key(by)
    others = [k for k in by if k not in (axis, wkey)]
    width = ""
    if wkey is not None and wkey in runs.columns and runs[wkey].nunique() == 1:
        width = f" at fixed {wkey}={_fmt_value(runs[wkey].iloc[0])}"
    n_values = runs[axis].nunique()
    lines = [f"swept axis {axis}{width}: {n_values} values (no width fits)"]
    lr_max = lr_max_stable(runs)
    is_lr = axis in ("train.lr", "lr")
    if np.isfinite(lr_max):
        lines.append(f"2N/lambda_max of the initial NTK ({LR_MAX_METRIC}, median): {lr_max:.4g}")
    shown = [m for m in ("kernel_drift", "loss") if m in metrics]
    for _, r in summary.iterrows():
        sel = np.ones(len(runs), dtype=bool)
        for k in [*others, axis]:
            sel &= (runs[k] == r[k]).to_numpy() | (runs[k].isna() & pd.isna(r[k])).to_numpy()
        sub = runs[sel]
        parts = [f"{r['n_seeds']}/{r['n_runs']} finished"]
        phase = _phase_text(sub)
        if phase:
            parts.append(phase)
        elif is_lr and np.isfinite(lr_max):
            ratio = float(r[axis]) / lr_max
            parts.append(
                f"lr/lr_max {ratio:.2f} ({'below' if ratio < 1 else 'above'} 2N/lambda_max)"
            )
        for m in shown:
            if r[f"{m}_n"]:
                parts.append(
                    f"{m} {_fmt(r[f'{m}_mean'], 3)} [{_fmt(r[f'{m}_ci_low'], 3)}, "
                    f"{_fmt(r[f'{m}_ci_high'], 3)}]"
                )
        label = _label([*others, axis], [r[k] for k in [*others, axis]])
        lines.append(f"{label}: " + ", ".join(parts))
    lines += _diverged_line(runs, axis)
    return lines


def _diverged_line(runs: pd.DataFrame, axis: str) -> list[str]:
    failed = runs[runs["status"].astype(str).eq("FAILED")]
    if failed.empty:
        return []
    counts = failed.groupby(axis, sort=True).size()
    where = ", ".join(f"{_fmt_value(v)} (x{n})" for v, n in counts.items())
    reasons = failed["failure_reason"].fillna("").astype(str)
    reason = next((x for x in reasons if x), "no reason recorded")
    return [f"diverged: {len(failed)} run(s) FAILED at {axis} = {where}; e.g. {_cut(reason, 80)}"]


def _cut(text: str, n: int = MAX_CELL) -> str:
    text = str(text).replace("\n", " ")
    return text if len(text) <= n else text[: n - 3] + "..."


def default_group_keys(df: pd.DataFrame, params: Sequence[str]) -> list[str]:
    """Every swept param (varies across the runs) that splits the runs, then the width key.

    Ignored: ``seed`` (the replicate key), ``tracking.*`` / ``hydra.*``, params that are a
    function of the width alone (shortcut duplicates like a top-level ``width``) or of the seed
    alone (``dataset.seed=${seed}``), per-run values (a function of width and seed together,
    or leaving one seed per group), and duplicates of an already chosen key (``lr`` next to
    ``train.lr``; dotted names win).
    """
    params = [p for p in params if p in df.columns]
    wkey = next((k for k in WIDTH_KEYS if k in params), None)
    keys = [wkey] if wkey else []
    varying = [
        p
        for p in params
        if p not in (wkey, SEED_KEY)
        and not p.startswith(IGNORED_PARAM_PREFIXES)
        and df[p].nunique(dropna=False) > 1
    ]
    varying.sort(key=lambda p: ("." not in p, p))
    seed = SEED_KEY if SEED_KEY in df.columns else None

    def determined(p: str, by: list[str]) -> bool:
        if not by:
            return False
        return bool((df.groupby(by, dropna=False)[p].nunique(dropna=False) <= 1).all())

    chosen: list[str] = []
    for p in varying:
        if wkey and determined(p, [wkey]):
            continue
        if seed and determined(p, [seed]):
            continue
        if wkey and seed and determined(p, [wkey, seed]):
            continue
        if seed and df[seed].nunique() > 1:
            # per-run values (an output dir): grouping by it would leave no replicates
            per_group = df.groupby([*keys, p], dropna=False)[seed].nunique()
            if bool((per_group <= 1).all()):
                continue
        if any(determined(p, [c]) and determined(c, [p]) for c in chosen):
            continue
        chosen.append(p)
    return chosen + keys


# --------------------------------------------------------------------------------------------
# MLflow I/O
# --------------------------------------------------------------------------------------------


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


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


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
    runs = _search_all(client, experiment_id, " and ".join(clauses))
    if parent_id:
        runs += _resumed_runs(client, experiment_id, parent_id, filter_string, runs)
    now = time.time()
    records, params, metrics = [], {}, {}
    for run in runs:
        tags = run.data.tags
        if tags.get(ROLE_TAG) in ("sweep", "aggregate"):
            continue
        status, reason = run.info.status, tags.get(FAILURE_TAG, "")
        if status == "RUNNING" and _is_dead(run, now):
            status, reason = "KILLED", DEAD_REASON
        rec = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name or tags.get("mlflow.runName", ""),
            "status": status,
            "start_time": run.info.start_time,
            "failure_reason": reason,
            "role": tags.get(ROLE_TAG, ""),
            "config_hash": tags.get(CONFIG_HASH_TAG, ""),
        }
        for name in PHASE_TAGS:  # the run's learning-rate phase, where the run logged it
            rec[name] = tags.get(f"ntk_sweep.{name}", tags.get(name, ""))
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
        out += _search_all(client, experiment_id, clause)
    return out


def _is_dead(run, now: float) -> bool:
    """RUNNING without a heartbeat (else since its start) for longer than its stale_after_s."""
    try:
        stale_after = float(run.data.params.get(STALE_PARAM, DEFAULT_STALE_AFTER_S))
    except ValueError:
        stale_after = DEFAULT_STALE_AFTER_S
    try:
        beat = float(run.data.tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        beat = (run.info.start_time or 0) / 1000.0
    return now - beat > stale_after


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
    """``tracking_uri``, else env ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    if tracking_uri:
        return tracking_uri
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _check_store(uri: str) -> None:
    """A local store must exist: reading must not create an empty database."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = unquote(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else ""
        if path and path != ":memory:" and not Path(path).exists():
            raise AggregateError(
                f"no MLflow store at {path} (pass --tracking-uri or set MLFLOW_TRACKING_URI)"
            )
    elif parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else uri
        if not Path(path).exists():
            raise AggregateError(
                f"no MLflow store at {path} (pass --tracking-uri or set MLFLOW_TRACKING_URI)"
            )


# --------------------------------------------------------------------------------------------
# Figures (matplotlib.figure.Figure, no pyplot)
# --------------------------------------------------------------------------------------------


def _new_figure(n_panels: int, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * n_panels, height), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, axes


def plot_vs_width(
    summary: pd.DataFrame,
    fits: pd.DataFrame,
    metrics: Sequence[str],
    by: Sequence[str],
    level: float | None = None,
    title: str = "",
):
    """Log-log metric vs width: group means with t-interval error bars (hollow = outside the
    fit), the fitted power law, the expected rate of each group (:func:`expected_rate`, dashed,
    through the fit at the widest width), the fit level. One panel per metric."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    wkey = _width_key(by)
    others = [k for k in by if k != wkey]
    fig, axes = _new_figure(len(metrics))
    for ax, m in zip(axes, metrics, strict=True):
        widths_all: set[float] = set()
        for i, (values, sub) in enumerate(_groups(summary, others)):
            color = f"C{i % 10}"
            label = _label(others, values) or "all runs"
            sub = sub.sort_values(wkey)
            w = sub[wkey].to_numpy(float)
            mu = sub[f"{m}_mean"].to_numpy(float)
            lo = sub[f"{m}_ci_low"].to_numpy(float)
            hi = sub[f"{m}_ci_high"].to_numpy(float)
            good = np.isfinite(mu) & (mu > 0)
            if not good.any():
                continue
            widths_all.update(w[good])
            yerr = np.vstack([np.nan_to_num(mu - lo), np.nan_to_num(hi - mu)]).clip(min=0)
            fit = _fit_row(fits, m, label if others else "")
            used = set()
            if fit is not None and fit["status"] == "ok":
                used = {float(x) for x in str(fit["widths_used"]).split(";") if x}
            in_fit = np.array([float(x) in used for x in w])
            for mask, face in ((in_fit & good, color), (~in_fit & good, "none")):
                if mask.any():
                    ax.errorbar(
                        w[mask],
                        mu[mask],
                        yerr=yerr[:, mask],
                        fmt="o",
                        color=color,
                        mfc=face,
                        capsize=3,
                        label=None,
                    )
            if fit is not None and fit["status"] == "ok":
                xs = np.geomspace(min(used), max(used), 50)
                ax.plot(
                    xs,
                    fit["prefactor"] * xs ** fit["slope"],
                    "-",
                    color=color,
                    label=f"{label}: slope {fit['slope']:.2f} "
                    f"[{_fixed(fit['slope_ci_low'], 2)}, {_fixed(fit['slope_ci_high'], 2)}]",
                )
                _expected_line(ax, fit, sorted(w[good]), color)
            else:
                ax.plot(w[good], mu[good], ":", color=color, label=f"{label}: no fit")
        if level is not None:
            ax.axhline(level, color="0.7", lw=1, ls="--", label=f"fit level {level:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        if widths_all and len(widths_all) <= 10:
            ax.set_xticks(sorted(widths_all))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(wkey or "width")
        ax.set_ylabel(f"final {m} (mean, 95% t CI)")
        ax.set_title(m)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _expected_line(ax, fit: pd.Series, widths: Sequence[float], color: str) -> None:
    """The expected power law through the fitted value at the widest width (reference line)."""
    e = fit.get("expected_slope", math.nan)
    if not np.isfinite(e) or not widths:
        return
    w_max = max(float(x) for x in str(fit["widths_used"]).split(";") if x)
    xs = np.geomspace(min(widths), max(widths), 20)
    y_ref = fit["prefactor"] * w_max ** fit["slope"]
    ax.plot(xs, y_ref * (xs / w_max) ** e, color=color, ls=(0, (4, 2)), lw=1, alpha=0.8,
            label=f"expected width^{e:g} ({_cut(fit['expected_source'], 40)})")  # fmt: skip


def plot_vs_axis(
    summary: pd.DataFrame,
    metrics: Sequence[str],
    by: Sequence[str],
    axis: str,
    lr_max: float = math.nan,
    title: str = "",
):
    """Final metric vs a swept axis (lr, alpha) at fixed width, log-log: group means with
    t-interval error bars, one curve per group of the other keys, 2N/lambda_max marked (a
    vertical line) when ``lr_max`` is finite. One panel per metric; groups with no finished
    run (all diverged) have no point."""
    others = [k for k in by if k not in (axis, _width_key(by))]
    fig, axes = _new_figure(len(metrics))
    for ax, m in zip(axes, metrics, strict=True):
        for i, (values, sub) in enumerate(_groups(summary, others)):
            sub = sub.sort_values(axis)
            x = sub[axis].to_numpy(float)
            mu = sub[f"{m}_mean"].to_numpy(float)
            lo = sub[f"{m}_ci_low"].to_numpy(float)
            hi = sub[f"{m}_ci_high"].to_numpy(float)
            good = np.isfinite(mu) & (mu > 0) & (x > 0)
            if not good.any():
                continue
            yerr = np.vstack([np.nan_to_num(mu - lo), np.nan_to_num(hi - mu)]).clip(min=0)
            ax.errorbar(x[good], mu[good], yerr=np.minimum(yerr[:, good], 0.99 * mu[good]),
                        fmt="o-", color=f"C{i % 10}", capsize=3,
                        label=_label(others, values) or "all runs")  # fmt: skip
        if np.isfinite(lr_max):
            ax.axvline(lr_max, color="C3", ls="--", lw=1, label=f"2N/lambda_max = {lr_max:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel(f"final {m} (mean, 95% t CI)")
        ax.set_title(f"{m} vs {axis}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _fit_row(fits: pd.DataFrame, metric: str, group: str) -> pd.Series | None:
    if fits is None or fits.empty:
        return None
    sel = fits[(fits["metric"] == metric) & (fits["group"] == group)]
    return None if sel.empty else sel.iloc[0]


def plot_vs_step(
    histories: pd.DataFrame, runs: pd.DataFrame, by: Sequence[str], metric: str, title: str = ""
):
    """Metric against GD step, one curve per width (mean over seeds, band = +-1 std, clipped
    at the min/max over seeds), one panel per group of the other keys. Log y axis (steps whose
    mean is 0, like step 0 of the drift, are left out) unless no value is positive."""
    wkey = _width_key(by)
    others = [k for k in by if k != wkey]
    keys = [k for k in by if k in runs.columns]
    h = histories.merge(runs[["run_id", *keys]], on="run_id", how="left")
    h = h[np.isfinite(h["value"].to_numpy(float))]
    log_y = bool((h["value"] > 0).any())
    groups = list(_groups(h, others))
    fig, axes = _new_figure(max(1, len(groups)))
    for ax, (values, sub) in zip(axes, groups, strict=False):
        curve_keys = [wkey] if wkey else []
        curves = list(_groups(sub, curve_keys))
        cmap = _viridis()
        for j, (wv, c) in enumerate(curves):
            stats = c.groupby("step")["value"].agg(["mean", "std", "min", "max", "count"])
            stats = stats.sort_index()
            if log_y:  # step 0 has drift 0: not drawable on a log axis
                stats = stats[stats["mean"] > 0]
            color = cmap(0.85 * j / max(1, len(curves) - 1))
            n = int(stats["count"].max())
            lab = f"{_label(curve_keys, wv) or 'all runs'} (n={n})"
            ax.plot(stats.index, stats["mean"], color=color, label=lab)
            std = stats["std"].fillna(0)
            low = np.maximum(stats["mean"] - std, stats["min"])
            high = np.minimum(stats["mean"] + std, stats["max"])
            ax.fill_between(stats.index, low, high, color=color, alpha=0.25, lw=0)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("GD step")
        ax.set_ylabel(f"{metric} (mean over seeds, band +-1 std)")
        ax.set_title(_label(others, values) or metric, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _viridis():
    from matplotlib import colormaps

    return colormaps["viridis"]


# --------------------------------------------------------------------------------------------
# Tables (text and GitHub markdown; no tabulate)
# --------------------------------------------------------------------------------------------


def text_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Aligned plain-text table."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """GitHub-flavoured markdown table (``|`` in cells escaped)."""

    def esc(c) -> str:
        return _fmt(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _summary_rows(summary: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]):
    header = ["metric", *by, "n", "mean", "std", "95% CI", "ci_method"]
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
                    ci,
                    "t" if n > 1 else "-",
                ]
            )
    return header, rows


def _runs_rows(summary: pd.DataFrame, by: Sequence[str]):
    header = [*by, "runs", "finished", "failed", "killed", "running", "not used"]
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
        "note",
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
                _cut(f["reason"] or ("-" if ok else "")) or "-",
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


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


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

    @property
    def selection(self) -> str:
        parts = []
        if self.sweep_id:
            parts.append(f"sweep {self.sweep_id}")
        if self.filter_string:
            parts.append(f"filter {self.filter_string!r}")
        return f"experiment {self.experiment!r}, " + ", ".join(parts)

    def report(self, markdown: bool = False) -> str:
        """The readable report: selection, runs per group, summary, fits, verdict."""
        table = markdown_table if markdown else text_table
        status_counts = self.runs["status"].value_counts().to_dict()
        counts = ", ".join(f"{n} {s}" for s, n in sorted(status_counts.items()))
        out = []
        if markdown:
            what = f"along {self.axis}" if self.axis else "kernel drift vs width"
            out += [f"# Aggregate: {what}", ""]
        dedup = f"{self.n_duplicates} duplicate(s) dropped" if self.n_duplicates else "none found"
        out += [
            f"Selection: {self.selection} ({len(self.runs)} runs: {counts})",
            f"Grouping keys: {', '.join(self.by) or '(none)'}; replicate key: {SEED_KEY}; "
            f"fit level {self.level:g}",
            f"One run per config hash (latest FINISHED wins): {dedup}",
            "",
        ]
        sections = [
            ("Runs per group", _runs_rows(self.summary, self.by)),
            (
                f"Final metrics (mean over seeds, 95% CI: {MEAN_CI_METHOD})",
                _summary_rows(self.summary, self.by, self.metrics),
            ),
        ]
        if not self.fits.empty:
            sections += [
                (
                    f"Power-law fits (metric ~ prefactor * width^slope; 95% CI: {SLOPE_CI_METHOD})",
                    _fits_rows(self.fits),
                ),
                ("Local slopes between consecutive widths", _local_rows(self.fits)),
            ]
        for title, (header, rows) in sections:
            out += [f"## {title}" if markdown else f"{title}:", "", table(header, rows), ""]
        out += ["## Verdict" if markdown else "Verdict:", ""]
        out += [f"- {line}" for line in self.verdict]
        if self.notes:
            out += ["", "## Notes" if markdown else "Notes:", ""]
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def _sanitize(text: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", str(text)).strip("_") or "x"


def slope_metric_names(fits: pd.DataFrame, by: Sequence[str]) -> dict[str, float]:
    """MLflow metric name -> value for the ok fits: ``slope_<metric>``, ``slope_<metric>_ci_low``,
    ``slope_<metric>_ci_high``, ``slope_<metric>_r2``, ``slope_<metric>_asym`` (and its
    ``_asym_ci_low`` / ``_asym_ci_high``: the widest-widths fit), suffixed
    ``/<key>-<value>...`` (last component of the key) when there are several groups."""
    out: dict[str, float] = {}
    if fits is None or fits.empty:
        return out
    others = [k for k in by if k != _width_key(by)]
    several = fits["group"].nunique() > 1
    for _, f in fits[fits["status"] == "ok"].iterrows():
        suffix = ""
        if several:
            suffix = "/" + "/".join(
                f"{_sanitize(k.rsplit('.', 1)[-1])}-{_sanitize(_fmt_value(f[k]))}" for k in others
            )
        base = f"slope_{_sanitize(f['metric'])}"
        for name, col in (
            ("", "slope"),
            ("_ci_low", "slope_ci_low"),
            ("_ci_high", "slope_ci_high"),
            ("_r2", "r2"),
            ("_asym", "asym_slope"),
            ("_asym_ci_low", "asym_slope_ci_low"),
            ("_asym_ci_high", "asym_slope_ci_high"),
        ):
            value = float(f[col])
            if np.isfinite(value):
                out[f"{base}{name}{suffix}"] = value
    return out


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
    sweeps = client.search_runs(
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
    n_boot: int = 2000,
    seed: int = 0,
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
    if n_boot < 0:
        raise AggregateError(f"--n-boot: must be >= 0, got {n_boot}")
    uri = resolve_tracking_uri(tracking_uri)
    _check_store(uri)

    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(uri)
    exp_name, exp_id, parent_id = _resolve_selection(client, experiment, sweep_id, filter_string)
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

    notes: list[str] = []
    runs, n_dup = deduplicate_runs(runs)
    if n_dup:
        notes.append(
            f"deduplicated by config hash (tag {CONFIG_HASH_TAG}): {n_dup} run(s) repeating a "
            "configuration dropped, the latest FINISHED one of each kept"
        )
    if by is None:
        by = default_group_keys(runs, params)
    else:
        by = [k for k in by if k]
        for k in by:
            if k == SEED_KEY:
                raise AggregateError(f"--by: {SEED_KEY!r} is the replicate key, not a grouping key")
            if k not in params:
                raise AggregateError(
                    f"--by: {k!r} is not a param of the selected runs; "
                    f"available: {', '.join(params) or 'none'}"
                )
    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if m in metric_names]
        missing = [m for m in DEFAULT_METRICS if m not in metric_names]
        if missing:
            notes.append(f"default metrics not logged by the selected runs: {', '.join(missing)}")
        if not metrics:
            raise AggregateError(
                "--metrics: none of the default metrics were logged by the selected runs; "
                f"available: {', '.join(metric_names) or 'none'}"
            )
    else:
        metrics = [m for m in metrics if m]
        for m in metrics:
            if m not in metric_names:
                raise AggregateError(
                    f"--metrics: {m!r} is not a metric of the selected runs; "
                    f"available: {', '.join(metric_names) or 'none'}"
                )
    by, metrics = list(by), list(metrics)
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
    )
    histories = None
    if step_metric and step_metric in metric_names:
        histories = load_histories(client, runs, step_metric)
    elif step_metric:
        notes.append(f"no per-step view: {step_metric!r} is not logged by the selected runs")
    if not write:
        return result

    if out_dir is None:
        tag = parent_id or "filter-" + hashlib.sha1(str(filter_string).encode()).hexdigest()[:8]
        out_dir = Path.cwd() / "outputs" / "aggregate" / tag
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.out_dir = out
    files: dict[str, Path] = {}
    summary.to_csv(out / "summary.csv", index=False)
    files["summary.csv"] = out / "summary.csv"
    fits.to_csv(out / "fits.csv", index=False)
    files["fits.csv"] = out / "fits.csv"
    title = result.selection
    for name, candidates in (
        ("drift_vs_width", DRIFT_METRICS[:2]),
        ("linearization_error_vs_width", LIN_METRICS),
    ):
        chosen = [m for m in candidates if m in metrics]
        if not chosen:
            notes.append(f"no {name}.png: none of {', '.join(candidates)} in --metrics")
            continue
        if _width_key(by) is None or axis is not None:
            continue
        fig = plot_vs_width(summary, fits, chosen, by, level=level, title=title)
        fig.savefig(out / f"{name}.png", dpi=110)
        files[f"{name}.png"] = out / f"{name}.png"
    if axis is not None:
        chosen = [m for m in ("kernel_drift", "loss") if m in metrics] or metrics[:2]
        name = f"drift_vs_{axis.rsplit('.', 1)[-1]}"
        lr_max = lr_max_stable(runs) if axis in ("train.lr", "lr") else math.nan
        fig = plot_vs_axis(summary, chosen, by, axis, lr_max=lr_max, title=title)
        fig.savefig(out / f"{name}.png", dpi=110)
        files[f"{name}.png"] = out / f"{name}.png"
    if histories is not None and not histories.empty:
        fig = plot_vs_step(histories, runs, by, step_metric, title=title)
        fig.savefig(out / "drift_vs_step.png", dpi=110)
        files["drift_vs_step.png"] = out / "drift_vs_step.png"
    (out / "verdict.txt").write_text("\n".join(lines) + "\n")
    files["verdict.txt"] = out / "verdict.txt"

    if log_to_mlflow:
        run_id = parent_id
        if run_id is None:
            run = client.create_run(
                exp_id,
                run_name="aggregate",
                tags={ROLE_TAG: "aggregate", "ntk_sweep.aggregate_filter": filter_string or ""},
            )
            run_id = run.info.run_id
        result.logged_run_id = run_id
        notes.append(f"logged to MLflow run {run_id} (artifacts under aggregate/)")
    (out / "summary.md").write_text(result.report(markdown=True))
    files["summary.md"] = out / "summary.md"
    result.files = files
    if log_to_mlflow:
        for path in files.values():
            client.log_artifact(result.logged_run_id, str(path), artifact_path="aggregate")
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        slopes = [Metric(k, v, now, 0) for k, v in slope_metric_names(fits, by).items()]
        if slopes:
            client.log_batch(result.logged_run_id, metrics=slopes)
        if parent_id is None:
            client.set_terminated(result.logged_run_id, FINISHED)
    return result


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _csv_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ntk-aggregate",
        description="Aggregate an ntk-sweep sweep from MLflow: per-width tables with "
        "Student-t CIs, power-law fits of kernel drift and linearisation error against "
        "width, and a verdict on the constant-kernel claim.",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: env MLFLOW_TRACKING_URI, else "
        "sqlite:///<cwd>/mlflow.db)",
    )
    p.add_argument(
        "--experiment",
        default=None,
        help=f"experiment name (default {DEFAULT_EXPERIMENT!r}; with --sweep RUN_ID, "
        "the run's experiment)",
    )
    p.add_argument(
        "--sweep",
        default=None,
        metavar="RUN_ID|latest",
        help="the sweep's parent run (default: the most recent sweep, unless --filter)",
    )
    p.add_argument(
        "--filter",
        default=None,
        metavar="STRING",
        help="MLflow filter string selecting runs instead of a sweep (with --sweep: "
        "among that sweep's runs)",
    )
    p.add_argument(
        "--by",
        default=None,
        metavar="KEY[,KEY...]",
        help="grouping params (default: model.width and every other swept param)",
    )
    p.add_argument(
        "--metrics",
        default=None,
        metavar="NAME[,NAME...]",
        help=f"final metrics to summarise (default: {','.join(DEFAULT_METRICS)})",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default outputs/aggregate/<sweep id>)",
    )
    p.add_argument(
        "--level",
        type=float,
        default=0.3,
        help="fit only widths whose mean metric is below this (default 0.3)",
    )
    p.add_argument("--n-boot", type=int, default=2000, help="accepted, unused (t intervals)")
    p.add_argument("--seed", type=int, default=0, help="accepted, unused (t intervals)")
    p.add_argument(
        "--step-metric",
        default=DEFAULT_STEP_METRIC,
        help="metric of the per-step view drift_vs_step.png (default kernel_drift)",
    )
    p.add_argument(
        "--no-log", action="store_true", help="do not log the outputs to MLflow (write --out only)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point. Exit 2 with a one-line ``error: ...`` on stderr for bad input."""
    args = build_parser().parse_args(argv)
    try:
        result = aggregate_sweep(
            tracking_uri=args.tracking_uri,
            experiment=args.experiment,
            sweep_id=args.sweep,
            out_dir=args.out,
            filter_string=args.filter,
            by=_csv_list(args.by),
            metrics=_csv_list(args.metrics),
            level=args.level,
            n_boot=args.n_boot,
            seed=args.seed,
            step_metric=args.step_metric,
            log_to_mlflow=not args.no_log,
        )
    except AggregateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(result.report())
    for path in result.files.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
