"""Aggregate a sweep from MLflow: does the kernel stop moving as the network gets wider?

Command line: ``python -m ntk_sweep.aggregate`` or ``ntk-aggregate`` (see ``--help``).

Layout (pure statistics separate from I/O; imports flow down this list, no cycles):

- :mod:`.common`: default metrics, :class:`AggregateError`, small helpers (the MLflow tag /
  param names are the store layer's, :mod:`ntk_sweep.tracking`, re-exported here);
- :mod:`.rates`: the width exponents the theory expects (:func:`expected_rate`);
- :mod:`.statistics`: plain DataFrames in and out (one row per run; columns = group keys,
  ``seed``, ``status``, ``run_name``, one column per metric): :func:`summarize`,
  :func:`fit_power_laws`, :func:`default_group_keys` (no MLflow, no matplotlib);
- :mod:`.verdict`: the claim in words (:func:`verdict`, :func:`axis_verdict`);
- :mod:`.loading`: MLflow reading, :func:`load_runs` (``MlflowClient.search_runs``, params cast
  to numbers), :func:`load_histories` (``MlflowClient.get_metric_history``);
- :mod:`.plots`: figures (``matplotlib.figure.Figure``, no pyplot, imported lazily):
  :func:`plot_vs_width`, :func:`plot_vs_step`, :func:`plot_vs_axis`;
- :mod:`.report`: :func:`aggregate_sweep`, the whole pipeline, called by :func:`main`
  (:mod:`.cli`) and by the optional Hydra callback. Bad input raises :class:`AggregateError`
  before anything is written.
"""

from __future__ import annotations

from ntk_sweep.aggregate.cli import (
    build_parser,
    main,
)
from ntk_sweep.aggregate.common import (
    AXIS_KEYS,
    CI_LEVEL,
    DEFAULT_EXPERIMENT,
    DEFAULT_METRICS,
    DEFAULT_STALE_AFTER_S,
    DEFAULT_STEP_METRIC,
    DRIFT_METRICS,
    FINISHED,
    FIT_COLUMNS,
    IGNORED_PARAM_PREFIXES,
    LIN_METRICS,
    LR_MAX_METRIC,
    MAX_CELL,
    MEAN_CI_METHOD,
    MIN_ASYMPTOTIC_WIDTHS,
    MIN_SEEDS_WARN,
    MIN_WIDTHS_FOR_WINDOW,
    MLFLOW_INF,
    PHASE_TAGS,
    SEED_KEY,
    SLOPE_CI_METHOD,
    VANISHING_PREFIXES,
    WIDTH_KEYS,
    AggregateError,
)
from ntk_sweep.aggregate.loading import (
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
from ntk_sweep.aggregate.rates import (
    RELU_LIKE,
    SMOOTH,
    Terms,
    compare_with_expected,
    expected_axis_rate,
    expected_rate,
    expected_terms,
)
from ntk_sweep.aggregate.report import (
    AggregateResult,
    aggregate_sweep,
    markdown_table,
    slope_metric_names,
    text_table,
)
from ntk_sweep.aggregate.statistics import (
    default_group_keys,
    fit_power_laws,
    flip_mechanism,
    judge_rate,
    log_contrast,
    lr_max_stable,
    mean_ci,
    slope_coefficients,
    summarize,
    swept_axis,
    t_interval,
    two_term_fit,
)
from ntk_sweep.aggregate.verdict import (
    axis_verdict,
    kink_note,
    slope_trend,
    verdict,
)
from ntk_sweep.tracking import (
    CONFIG_HASH_TAG,
    DEAD_REASON,
    FAILURE_TAG,
    HEARTBEAT_TAG,
    PARENT_TAG,
    RESUMED_RUN_TAG,
    ROLE_TAG,
    STALE_PARAM,
)

__all__ = [
    "AXIS_KEYS",
    "AggregateError",
    "AggregateResult",
    "CI_LEVEL",
    "CONFIG_HASH_TAG",
    "DEAD_REASON",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_METRICS",
    "DEFAULT_STALE_AFTER_S",
    "DEFAULT_STEP_METRIC",
    "DRIFT_METRICS",
    "FAILURE_TAG",
    "FINISHED",
    "FIT_COLUMNS",
    "HEARTBEAT_TAG",
    "IGNORED_PARAM_PREFIXES",
    "LIN_METRICS",
    "LR_MAX_METRIC",
    "MAX_CELL",
    "MEAN_CI_METHOD",
    "MIN_ASYMPTOTIC_WIDTHS",
    "MIN_SEEDS_WARN",
    "MIN_WIDTHS_FOR_WINDOW",
    "MLFLOW_INF",
    "PARENT_TAG",
    "PHASE_TAGS",
    "RELU_LIKE",
    "RESUMED_RUN_TAG",
    "ROLE_TAG",
    "SEED_KEY",
    "SLOPE_CI_METHOD",
    "SMOOTH",
    "Terms",
    "STALE_PARAM",
    "VANISHING_PREFIXES",
    "WIDTH_KEYS",
    "aggregate_sweep",
    "axis_verdict",
    "build_parser",
    "compare_with_expected",
    "deduplicate_runs",
    "default_group_keys",
    "expected_axis_rate",
    "expected_rate",
    "expected_terms",
    "fit_power_laws",
    "flip_mechanism",
    "judge_rate",
    "kink_note",
    "load_histories",
    "load_runs",
    "log_contrast",
    "lr_max_stable",
    "main",
    "markdown_table",
    "mean_ci",
    "plot_vs_axis",
    "plot_vs_step",
    "plot_vs_width",
    "resolve_tracking_uri",
    "slope_coefficients",
    "slope_metric_names",
    "slope_trend",
    "summarize",
    "swept_axis",
    "t_interval",
    "text_table",
    "two_term_fit",
    "verdict",
]
