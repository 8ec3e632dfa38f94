"""Figures of the aggregate (``matplotlib.figure.Figure``, no pyplot). Matplotlib is imported
inside the functions, so importing :mod:`ntk_sweep.aggregate` does not import it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ntk_sweep.aggregate.common import (
    _cut,
    _fixed,
    _groups,
    _label,
    _width_key,
)


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
            label = _label(others, values) or "all runs"
            fit = _fit_row(fits, m, label if others else "")
            widths_all.update(_draw_width_group(ax, sub, wkey, m, fit, label, f"C{i % 10}"))
        if level is not None:
            ax.axhline(level, color="0.7", lw=1, ls="--", label=f"fit level {level:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        if widths_all and len(widths_all) <= 10:
            ax.set_xticks(sorted(widths_all))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        _label_axes(ax, wkey or "width", f"final {m} (mean, 95% t CI)", m)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _mean_points(sub: pd.DataFrame, key: str, metric: str):
    """(x, mean, yerr) of the summary rows sorted by ``key``; yerr (2, n) from the t interval."""
    sub = sub.sort_values(key)
    x = sub[key].to_numpy(float)
    mu = sub[f"{metric}_mean"].to_numpy(float)
    lo = sub[f"{metric}_ci_low"].to_numpy(float)
    hi = sub[f"{metric}_ci_high"].to_numpy(float)
    yerr = np.vstack([np.nan_to_num(mu - lo), np.nan_to_num(hi - mu)]).clip(min=0)
    return x, mu, yerr


def _draw_width_group(
    ax, sub: pd.DataFrame, wkey: str, m: str, fit: pd.Series | None, label: str, color: str
) -> set[float]:
    """One group's means (filled = in the fit), its fitted and expected power laws, or a dotted
    line when there is no fit. Returns the widths drawn."""
    w, mu, yerr = _mean_points(sub, wkey, m)
    good = np.isfinite(mu) & (mu > 0)
    if not good.any():
        return set()
    ok = fit is not None and fit["status"] == "ok"
    used = {float(x) for x in str(fit["widths_used"]).split(";") if x} if ok else set()
    in_fit = np.array([float(x) in used for x in w])
    for mask, face in ((in_fit & good, color), (~in_fit & good, "none")):
        if mask.any():
            ax.errorbar(w[mask], mu[mask], yerr=yerr[:, mask], fmt="o", color=color, mfc=face,
                        capsize=3, label=None)  # fmt: skip
    if ok:
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
    return set(w[good])


def _label_axes(ax, xlabel: str, ylabel: str, title: str, **title_kw) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, **title_kw)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


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
            x, mu, yerr = _mean_points(sub, axis, m)
            good = np.isfinite(mu) & (mu > 0) & (x > 0)
            if not good.any():
                continue
            ax.errorbar(x[good], mu[good], yerr=np.minimum(yerr[:, good], 0.99 * mu[good]),
                        fmt="o-", color=f"C{i % 10}", capsize=3,
                        label=_label(others, values) or "all runs")  # fmt: skip
        if np.isfinite(lr_max):
            ax.axvline(lr_max, color="C3", ls="--", lw=1, label=f"2N/lambda_max = {lr_max:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _label_axes(ax, axis, f"final {m} (mean, 95% t CI)", f"{m} vs {axis}")
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
        ylabel = f"{metric} (mean over seeds, band +-1 std)"
        _label_axes(ax, "GD step", ylabel, _label(others, values) or metric, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _viridis():
    from matplotlib import colormaps

    return colormaps["viridis"]
