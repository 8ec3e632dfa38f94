"""Figures of the aggregate (``matplotlib.figure.Figure``, no pyplot), in the style every figure
of ntk-sweep shares (:mod:`ntk_sweep.figure_style`). Matplotlib is imported inside the
functions, so importing :mod:`ntk_sweep.aggregate` does not import it."""

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
from ntk_sweep.figure_style import GRID_DPI, MAX_WIDTH_IN, new_figure

# Aggregate figures: a grid of panels at figure_style.GRID_DPI, at most MAX_WIDTH_IN wide
# (1600 px), legends outside the axes (below each panel, or one for the figure below the grid).
PANEL_IN = (7.4, 3.6)  # one panel's axes and labels, inches
LEGEND_ROW_IN = 0.19  # one legend row (7 pt)
TITLE_CHARS_PER_IN = 13  # 9 pt suptitle: characters per inch of figure width before it wraps


def _new_figure(n_panels: int, legend_rows: int = 0, max_cols: int = 2, title: str = ""):
    """A constrained-layout grid of ``n_panels`` axes (``max_cols`` per row, at most
    :data:`MAX_WIDTH_IN` wide), with room for ``legend_rows`` legend rows under each row of
    panels; the title wrapped to the width. Returns (figure, flat list of the panels' axes)."""
    import textwrap

    n = max(1, n_panels)
    ncols = min(n, max_cols)
    nrows = math.ceil(n / ncols)
    width = min(MAX_WIDTH_IN, PANEL_IN[0] * ncols)
    height = nrows * (PANEL_IN[1] + LEGEND_ROW_IN * legend_rows) + 0.4
    fig = new_figure((width, height), GRID_DPI, layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, int(TITLE_CHARS_PER_IN * width))), fontsize=9)
    return fig, axes[:n]


def _legend_below(ax, ncol: int = 2) -> None:
    """The panel's legend under its axes (outside them: the curves stay visible)."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol,
              frameon=False)  # fmt: skip


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
    n_groups = len(list(_groups(summary, others)))
    fig, axes = _new_figure(len(metrics), math.ceil((2 * n_groups + 1) / 2), title=title)
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
    return fig


def _mean_points(sub: pd.DataFrame, key: str, metric: str):
    """(x, mean, yerr) of the summary rows sorted by ``key``; yerr (2, n) from the t interval,
    its lower bar clipped at a tenth of the mean (log axes: never at or below 0)."""
    sub = sub.sort_values(key)
    x = sub[key].to_numpy(float)
    mu = sub[f"{metric}_mean"].to_numpy(float)
    lo = sub[f"{metric}_ci_low"].to_numpy(float)
    hi = sub[f"{metric}_ci_high"].to_numpy(float)
    yerr = np.vstack([np.nan_to_num(mu - lo), np.nan_to_num(hi - mu)]).clip(min=0)
    yerr[0] = np.minimum(yerr[0], 0.9 * np.abs(np.nan_to_num(mu)))
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
    _legend_below(ax)


def _expected_line(ax, fit: pd.Series, widths: Sequence[float], color: str) -> None:
    """The expected power law through the fitted value at the widest width (reference line)."""
    e = fit.get("expected_slope", math.nan)
    if not np.isfinite(e) or not widths:
        return
    w_max = max(float(x) for x in str(fit["widths_used"]).split(";") if x)
    xs = np.geomspace(min(widths), max(widths), 20)
    y_ref = fit["prefactor"] * w_max ** fit["slope"]
    ax.plot(xs, y_ref * (xs / w_max) ** e, color=color, ls=(0, (4, 2)), lw=1, alpha=0.8,
            label=f"expected width^{e:g} ({_cut(fit['expected_source'], 30)})")  # fmt: skip


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
    n_groups = len(list(_groups(summary, others)))
    fig, axes = _new_figure(len(metrics), math.ceil((n_groups + 1) / 2), title=title)
    for ax, m in zip(axes, metrics, strict=True):
        for i, (values, sub) in enumerate(_groups(summary, others)):
            x, mu, yerr = _mean_points(sub, axis, m)
            good = np.isfinite(mu) & (mu > 0) & (x > 0)
            if not good.any():
                continue
            ax.errorbar(x[good], mu[good], yerr=yerr[:, good],
                        fmt="o-", color=f"C{i % 10}", capsize=3,
                        label=_label(others, values) or "all runs")  # fmt: skip
        if np.isfinite(lr_max):
            ax.axvline(lr_max, color="C3", ls="--", lw=1, label=f"2N/lambda_max = {lr_max:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _label_axes(ax, axis, f"final {m} (mean, 95% t CI)", f"{m} vs {axis}")
    return fig


def _fit_row(fits: pd.DataFrame, metric: str, group: str) -> pd.Series | None:
    if fits is None or fits.empty:
        return None
    sel = fits[(fits["metric"] == metric) & (fits["group"] == group)]
    return None if sel.empty else sel.iloc[0]


def plot_vs_step(
    histories: pd.DataFrame, runs: pd.DataFrame, by: Sequence[str], metric: str, title: str = ""
):
    """Metric against GD step (log axis; step 0 is left out), one curve per width (mean over
    seeds, band = +-1 std, clipped at the min/max over seeds), one panel per group of the other
    keys in a grid (3 per row), one legend of the widths below the grid. Log y axis (steps
    whose mean is 0 are left out) unless no value is positive."""
    wkey = _width_key(by)
    others = [k for k in by if k != wkey]
    keys = [k for k in by if k in runs.columns]
    h = histories.merge(runs[["run_id", *keys]], on="run_id", how="left")
    h = h[np.isfinite(h["value"].to_numpy(float)) & (h["step"].to_numpy(float) > 0)]
    log_y = bool((h["value"] > 0).any())
    groups = list(_groups(h, others))
    curve_keys = [wkey] if wkey else []
    n_curves = max(1, h[wkey].nunique()) if wkey else 1
    fig, axes = _new_figure(len(groups), max_cols=3, title=title)
    legend: dict[str, object] = {}
    cmap = _viridis()
    widths = sorted(h[wkey].dropna().unique()) if wkey else [None]
    for ax, (values, sub) in zip(axes, groups, strict=False):
        for wv, c in _groups(sub, curve_keys):
            stats = c.groupby("step")["value"].agg(["mean", "std", "min", "max", "count"])
            stats = stats.sort_index()
            if log_y:  # a mean of 0 is not drawable on a log axis
                stats = stats[stats["mean"] > 0]
            j = widths.index(wv[0]) if wkey else 0
            color = cmap(0.85 * j / max(1, n_curves - 1))
            lab = _label(curve_keys, wv) or "all runs"
            (line,) = ax.plot(stats.index, stats["mean"], color=color, label=lab)
            legend.setdefault(lab, line)
            std = stats["std"].fillna(0)
            low = np.maximum(stats["mean"] - std, stats["min"])
            high = np.minimum(stats["mean"] + std, stats["max"])
            ax.fill_between(stats.index, low, high, color=color, alpha=0.25, lw=0)
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("GD step")
        ax.set_ylabel(f"{metric} (mean over seeds, +-1 std)", fontsize=8)
        ax.set_title(_label(others, values) or metric, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside lower center",
                   ncol=min(len(legend), 8), fontsize=8, frameon=False)  # fmt: skip
    return fig


def _viridis():
    from matplotlib import colormaps

    return colormaps["viridis"]
