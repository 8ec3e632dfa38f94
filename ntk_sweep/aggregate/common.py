"""Shared vocabulary of the aggregation: default metrics, the fit columns,
:class:`AggregateError`, and small grouping / formatting helpers (no I/O). The MLflow tag and
param names it reads are the store layer's (:mod:`ntk_sweep.tracking.names`)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from ntk_sweep.names import short_names

DEFAULT_EXPERIMENT = "ntk-sweep"

WIDTH_KEYS = ("model.width", "width")  # the first one present is the x axis of the fits

SEED_KEY = "seed"  # replicate key

# A RUNNING run whose heartbeat is older than its own `tracking.stale_after_s` param (this, for
# a run that did not log it) is dead: counted KILLED (tracking.death_reason).
DEFAULT_STALE_AFTER_S = 120.0

# Final values of these (what search_runs returns as metrics.<name>) are summarised by default.
DEFAULT_METRICS = (
    "kernel_drift",
    "kernel_distance",
    "lin_error_test",
    "kernel_pred_error_test",
    "param_movement",
    "loss",
    "test_loss",
    "kernel_drift_flip",
    "kernel_drift_smooth",
    "flipped_units",
    "flip_coherence",
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

MEAN_CI_METHOD = "student-t, n-1 dof (of log mean for positive metrics)"

SLOPE_CI_METHOD = "welch-t on per-width seed means"

MIN_SEEDS_WARN = 5  # fewer seeds per width: the verdict warns that the CIs are wide

MIN_ASYMPTOTIC_WIDTHS = 3  # the asymptotic fit: the widest half of the widths, at least this

MIN_WIDTHS_FOR_WINDOW = 4  # fewer usable widths: the asymptotic fit is the all-widths fit

# Swept axes other than the width: aggregated by that axis when the width is fixed.
AXIS_KEYS = ("train.lr", "lr", "model.alpha", "alpha")

LR_MAX_METRIC = "lr_max_stable"

# Columns of the runs' frame: tags tracking.PHASE_NET_TAG / PHASE_LIN_TAG, when logged
PHASE_TAGS = ("phase_net", "phase_lin")

MAX_CELL = 90  # table cells longer than this are cut (the report has no line over ~200 chars)

MAX_TABLE_WIDTH = 120  # text tables wider than this are split into several (report.text_table)

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
    "outcome",
    "expected_kind",
    "next_slope",
    "theories",
    "mechanism",
    "widest_mean",
    "tt_widths",
    "tt_a",
    "tt_a_ci_low",
    "tt_a_ci_high",
    "tt_b",
    "tt_chi2",
    "tt_p_value",
    "tt_delta_aic",
    "tt_p_aic",
    "n_star",
    "mechanism_slope",
)


class AggregateError(ValueError):
    """Bad input (unknown experiment, sweep, key, metric; empty selection). One-line message."""


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
    """A group's short label, ``act=relu alpha=none param=ntk``: common keys abbreviated, the
    others by their last dotted component (:func:`ntk_sweep.names.short_names`), a missing
    value ``none``."""
    short = short_names(keys, reserved=())
    return " ".join(f"{short[k]}={_fmt_value(v)}" for k, v in zip(keys, values, strict=True))


def _fmt_value(v) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "none"
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


def _cut(text: str, n: int = MAX_CELL) -> str:
    text = str(text).replace("\n", " ")
    return text if len(text) <= n else text[: n - 3] + "..."
