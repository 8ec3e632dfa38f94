"""Command line: ``python -m ntk_sweep.aggregate`` or ``ntk-aggregate`` (see ``--help``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ntk_sweep.aggregate.common import (
    DEFAULT_EXPERIMENT,
    DEFAULT_METRICS,
    DEFAULT_STEP_METRIC,
    AggregateError,
)
from ntk_sweep.aggregate.report import (
    aggregate_sweep,
)


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
    p.add_argument("--n-boot", type=int, default=None, help="ignored (deprecated, to be removed)")
    p.add_argument("--seed", type=int, default=None, help="ignored (deprecated, to be removed)")
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
    ignored = [f for f, v in (("--n-boot", args.n_boot), ("--seed", args.seed)) if v is not None]
    if ignored:  # the intervals are Student-t intervals: there is no bootstrap to configure
        print(
            f"warning: {'/'.join(ignored)} ignored (no bootstrap); the flags will be removed",
            file=sys.stderr,
        )
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
