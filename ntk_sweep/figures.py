"""Figures for one run: the paper's eight 1-D figures plus diagnostics for every dataset.

Pure plotting: every function takes plain NumPy arrays (and, for :func:`run_figures`, the
``record`` dict of the figures contract) and returns a :class:`matplotlib.figure.Figure`.
Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, never through
``pyplot``: no global figure registry, no interactive backend, nothing to close, safe in
worker processes and on machines without a screen. No layout engine: fixed margins in inches
(:func:`_fit`; room on top for the title's lines, a secondary t axis and an offset text), so
that ``savefig`` draws a figure once and measures no text (constrained layout cost ~40 % of
the figure time); tests check that no text leaves the figure
(:func:`ntk_sweep.figure_style.text_outside`). PNGs are written by
``fig.savefig`` (:func:`save_png`, :func:`figure_to_png_bytes`).

Style shared by all figures: 7 x 4.5 in at 90 dpi (630 x 405 px), grid, legend, labelled
axes; time axes are in GD steps (log) with a secondary axis t = lr * step on top (lr the
effective learning rate, the one the dynamics use); titles carry dataset, parameterization,
activation, depth, width, lr, seed (and lr_eff where it differs) from ``record["meta"]``,
wrapped onto more lines where they would not fit.

Which figures a run draws: :data:`FIGURE_SETS` (``tracking.figures``): ``all`` every figure
of :func:`expected_figure_names`, ``paper`` those of :data:`PAPER_FIGURES` (the paper's
figs. 1-8, the kernel drift, and for d > 1 predictions vs targets), ``none`` nothing.

Robustness: values are drawn only where finite and within ``±BOUND`` (1e300); larger or
infinite values are drawn at the bound and NaN values are left out, and the legend says so.
Log axes get explicit limits within [1e-305, 1e305] (tick positions beyond that would
overflow). In the 1-D figures a model that runs away (e.g. a diverging linearised model) does
not squash the others: the y-range follows the data and the network, and a curve that leaves
it is labelled with its largest value.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

__all__ = [
    "FIGSIZE",
    "DPI",
    "BOUND",
    "FIGURE_SETS",
    "PAPER_FIGURES",
    "KERNEL_DIAGNOSTICS",
    "expected_figure_names",
    "figure_builders",
    "figure_to_png_bytes",
    "save_png",
    "plot_data_init",
    "plot_training_snapshots",
    "plot_kernel_machine",
    "plot_net_vs_kernel_machines",
    "plot_kernel_dynamics",
    "plot_net_vs_kernel_dynamics",
    "plot_drift",
    "plot_losses",
    "plot_linearization_error",
    "plot_ntk_spectrum",
    "plot_ntk_heatmaps",
    "plot_pred_vs_target",
    "run_figures",
]

FIGSIZE = (7.0, 4.5)
# 90 dpi: 630 x 405 px, 10 pt text about 12 px high, readable in the MLflow artifact view.
DPI = 90
# Largest magnitude drawn; larger and infinite values are drawn at +-BOUND (log axes:
# positive values below 1 / BOUND at 1 / BOUND).
BOUND = 1e300
# Values of `tracking.figures`: which figures a run draws (see the module docstring).
FIGURE_SETS = ("paper", "all", "none")
# The `paper` set: the paper's figures 1-8 (1-D inputs), the kernel drift (the paper's claim,
# measured) and, for d > 1 where the 1-D figures do not exist, predictions vs targets.
PAPER_FIGURES = (
    "fig1_data_init",
    "fig2_training",
    "fig3_kernel_machine_empirical",
    "fig4_kernel_machine_analytic",
    "fig5_net_vs_kernel_machines",
    "fig6_kernel_dynamics_empirical",
    "fig7_kernel_dynamics_analytic",
    "fig8_net_vs_kernel_dynamics",
    "drift",
    "pred_vs_target",
)

# Matplotlib's default colour cycle (tab10); one colour / line style per model, the same in
# every figure.
_C = ("C0", "C1", "C2", "C3", "C4")
_STYLE = {
    "net": dict(color=_C[0], ls="-", lw=2.2),
    "lin": dict(color=_C[1], ls="--", lw=1.8),
    "kernel": dict(color=_C[2], ls=":", lw=2.2),
    "analytic": dict(color=_C[3], ls="-.", lw=1.8),
    "target": dict(color="0.55", ls="--", lw=1.2),
}
_DATA_STYLE = dict(color="k", marker="o", s=36, zorder=5, edgecolors="w", linewidths=0.8)
# Characters per title line before the run's metadata wraps onto another line (10 pt titles:
# about 6 pt per character, 7 in = 504 pt wide figures).
_TITLE_CHARS = 72


# --------------------------------------------------------------------------- saving


def save_png(
    fig: Figure,
    target: str | os.PathLike | io.IOBase,
    *,
    metadata: Mapping[str, str] | None = None,
    **kwargs,
) -> None:
    """Write ``fig`` as a PNG (the figure's dpi) to a path or binary file object; ``metadata``
    become PNG text chunks (e.g. ``{"Title": ...}``), other keyword arguments go to
    ``fig.savefig``."""
    options = {"format": "png", "dpi": fig.dpi, **kwargs}
    fig.savefig(target, metadata=dict(metadata or {}), **options)


def figure_to_png_bytes(fig: Figure, dpi: float | None = None) -> bytes:
    """Render ``fig`` to PNG bytes (Agg canvas, no pyplot, no file)."""
    buf = io.BytesIO()
    save_png(fig, buf, dpi=dpi or fig.dpi)
    return buf.getvalue()


# --------------------------------------------------------------------------- helpers


def _figure(figsize=FIGSIZE, nrows: int = 1, ncols: int = 1, *, grid: bool = True, **subplot_kw):
    """A pyplot-free Figure on its own Agg canvas, no layout engine (margins: :func:`_fit`),
    and its axes."""
    fig = Figure(figsize=figsize, dpi=DPI, layout=None)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, **subplot_kw)
    for ax in np.ravel(axes):
        if grid:
            ax.grid(True, alpha=0.3)
    return fig, axes


# Fixed margins, in inches, for 10 pt text (titles "medium" = 10 pt). Sized once for the
# widest labels the figures draw (y tick labels such as "−0.025" or "10⁻³⁰⁵" plus the axis
# label on the left; tick labels plus the axis label below), so that no layout engine has to
# measure text (constrained layout measured every label and cost a second draw per savefig).
_MARGIN_LEFT = 0.92
_MARGIN_RIGHT = 0.3
_MARGIN_BOTTOM = 0.62
# above the axes: title pad + one title line (1.2 x 10 pt) per line, and a little air
_TITLE_PAD, _TITLE_LINE, _TOP_AIR = 6 / 72, 12.5 / 72, 0.06
# a secondary x axis on top (t = lr x step): its tick labels and label
_TOP_AXIS = 0.5
# a twin y axis on the right: its tick labels and label
_RIGHT_AXIS = 0.62


def _lines(text: str) -> int:
    return len(text.splitlines()) if text else 0


def _y_offset_text(ax) -> bool:
    """Whether the linear y axis of ``ax`` will draw an offset / scale text on top ("1e291"),
    from its formatter at the current ticks (no drawing)."""
    axis = ax.yaxis
    if axis.get_scale() != "linear":
        return False
    formatter = axis.get_major_formatter()
    formatter.set_locs(axis.get_majorticklocs())
    return bool(formatter.get_offset())


def _fit(fig: Figure, *, hspace: float = 0.0) -> None:
    """Fixed figure margins from what the figure shows, without drawing it: room on top for
    the most title lines of an axes (or the suptitle) and for a secondary x axis there, on the
    right for a twin y axis; ``hspace`` (inches) between rows of subplots."""
    width, height = fig.get_size_inches()
    axes = fig.axes
    lines = max([_lines(fig.get_suptitle())] + [_lines(ax.get_title()) for ax in axes])
    top = _TOP_AIR + (_TITLE_PAD + lines * _TITLE_LINE if lines else 0.0)
    if any(ax.child_axes for ax in axes):
        top += _TOP_AXIS
    elif any(_y_offset_text(ax) for ax in axes if ax.get_title()):
        top += _TITLE_LINE  # Matplotlib lifts the title above the offset text ("1e291")
    right = _MARGIN_RIGHT
    if any(ax.get_ylabel() and ax.yaxis.get_label_position() == "right" for ax in axes):
        right += _RIGHT_AXIS
    specs = [ax.get_subplotspec() for ax in axes]
    rows = max((spec.get_gridspec().nrows for spec in specs if spec is not None), default=1)
    inner = height - top - _MARGIN_BOTTOM
    fig.subplots_adjust(
        left=_MARGIN_LEFT / width,
        right=1 - right / width,
        bottom=_MARGIN_BOTTOM / height,
        top=1 - top / height,
        hspace=hspace * rows / max(inner - hspace * (rows - 1), 1e-3),
    )


def _set_title(ax, text: str) -> None:
    ax.set_title(text, fontsize="medium")


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def _meta_parts(meta: Mapping | None, lr_effective: float | None = None) -> list[str]:
    """The run's metadata for a title: dataset, parameterization, activation, depth, width,
    lr, seed, sigma_b, and lr_eff where it differs from lr."""
    meta = dict(meta or {})
    if lr_effective is None:
        lr_effective = meta.get("lr_effective")
    parts = []
    if "dataset" in meta:
        parts.append(str(meta["dataset"]))
    arch = " ".join(
        str(meta[k]) for k in ("parameterization", "activation") if meta.get(k) is not None
    )
    if meta.get("depth") is not None:
        arch = f"{arch} depth={_fmt(meta['depth'])}".strip()
    if arch:
        parts.append(arch)
    for key in ("width", "lr", "seed", "sigma_b"):
        if meta.get(key) is not None:
            parts.append(f"{key}={_fmt(meta[key])}")
    lr = meta.get("lr")
    if lr_effective is not None and lr is not None and not np.isclose(lr_effective, float(lr)):
        parts.append(f"lr_eff={_fmt(lr_effective)}")
    return parts


def _title(
    what: str, meta: Mapping | None, lr_effective: float | None = None, chars: int = _TITLE_CHARS
) -> str:
    """``what`` on the first line, then the metadata, as many lines of at most ``chars``
    characters as it needs (broken between items, never inside one)."""
    lines = [what]
    current = ""
    for part in _meta_parts(meta, lr_effective):
        joined = f"{current}, {part}" if current else part
        if current and len(joined) > chars:
            lines.append(current + ",")
            joined = part
        current = joined
    if current:
        lines.append(current)
    return "\n".join(lines)


def _positive_lr(lr) -> float | None:
    if lr is None:
        return None
    lr = float(lr)
    return lr if math.isfinite(lr) and lr > 0 else None


def _col(x: np.ndarray) -> np.ndarray:
    """1-D inputs as a flat vector (accepts (N,) or (N, 1))."""
    x = np.asarray(x, dtype=float)
    return x.reshape(x.shape[0], -1)[:, 0]


def _array_or_none(a):
    return None if a is None else np.asarray(a, dtype=float)


def _step_index(steps: np.ndarray, step: int) -> int:
    """Index of ``step`` among the logged steps, or of the nearest logged step."""
    steps = np.asarray(steps)
    hits = np.flatnonzero(steps == step)
    if hits.size:
        return int(hits[0])
    return int(np.argmin(np.abs(steps.astype(float) - float(step))))


def _snapshot_indices(steps: np.ndarray, snapshot_steps: Sequence[int] | None) -> list[int]:
    steps = np.asarray(steps)
    wanted = list(snapshot_steps) if snapshot_steps else list(steps)
    out: list[int] = []
    for s in wanted:
        i = _step_index(steps, int(s))
        if i not in out:
            out.append(i)
    return sorted(out, key=lambda i: steps[i])


def _no_data(ax, text: str = "no finite values to plot") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


# ------------------------------------------------------------- huge / non-finite values


def _clean(values, *, positive: bool = False, report_nan: bool = True) -> tuple[np.ndarray, str]:
    """Values safe to draw, and a legend note on what was changed ("" if nothing).

    NaN stays NaN (matplotlib leaves a gap); +-inf and magnitudes beyond BOUND become
    +-BOUND. With ``positive`` (log axes), values <= 0 become NaN (not drawable; not noted:
    e.g. drift is exactly 0 at step 0) and positive values below 1/BOUND become 1/BOUND.
    """
    y = np.array(values, dtype=float)  # a copy
    notes = []
    with np.errstate(invalid="ignore"):
        nan = np.isnan(y)
        big = np.abs(y) > BOUND  # includes +-inf
        if big.any():
            y[big] = np.copysign(BOUND, y[big])
            top = f"{BOUND:.0e}".replace("+", "")
            notes.append(f"{int(big.sum())} inf or beyond ±{top} drawn at ±{top}")
        if positive:
            y[y <= 0] = np.nan
            tiny = y < 1.0 / BOUND
            if tiny.any():
                y[tiny] = 1.0 / BOUND
                low = f"{1 / BOUND:.0e}"
                notes.append(f"{int(tiny.sum())} below {low} drawn at {low}")
    if report_nan and nan.any():
        notes.append(f"{int(nan.sum())} NaN omitted")
    return y, (f" [{'; '.join(notes)}]" if notes else "")


def _finite_range(arrays) -> tuple[float, float] | None:
    lo, hi = math.inf, -math.inf
    for a in arrays:
        if a is None:
            continue
        a = np.asarray(a, dtype=float)
        a = a[np.isfinite(a)]
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    return (lo, hi) if lo <= hi else None


def _view(anchor, others) -> tuple[float, float] | None:
    """Y-limits of a 1-D plot: the ``anchor`` arrays (data, targets, the network) always fit;
    the values of the ``others`` (model predictions) within three anchor spans of them
    widen the view, farther ones are left out (labelled by :func:`_off_note`), so that one
    runaway model does not flatten every other curve into a line. Arrays must already be
    clipped to +-BOUND. None when nothing is finite."""
    a = _finite_range(anchor)
    if a is None:
        a = _finite_range(others)
        if a is None:
            return None
    lo, hi = a
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    for y in others:
        y = np.asarray(y, dtype=float)
        y = y[(y >= a[0] - 3 * span) & (y <= a[1] + 3 * span)]  # False for NaN
        if y.size:
            lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
    return lo - pad, hi + pad


def _off_note(y: np.ndarray, view: tuple[float, float] | None) -> str:
    """Legend note for a curve that leaves the y-range of the plot."""
    if view is None:
        return ""
    f = y[np.isfinite(y)]
    if f.size and (f.min() < view[0] or f.max() > view[1]):
        return f" [leaves the plot: max |f| {np.max(np.abs(f)):.3g}]"
    return ""


# --------------------------------------------------------------------------- axes


def _log_limits(lo: float, hi: float) -> tuple[float, float]:
    """Limits (in data units) of a log axis showing [lo, hi] (positive, finite): at least one
    decade (so that some ticks are labelled), with a margin, kept within [1e-305, 1e305]."""
    a, b = math.log10(lo), math.log10(hi)
    if b - a < 1.0:
        a, b = (a + b) / 2 - 0.5, (a + b) / 2 + 0.5
    pad = 0.04 * (b - a)
    return 10.0 ** max(a - pad, -305.0), 10.0 ** min(b + pad, 305.0)


def _log_scale(ax, which: str, lo: float, hi: float) -> tuple[float, float]:
    """Log scale with explicit limits for the positive finite range [lo, hi] of the x or y
    axis; returns the limits."""
    lim = _log_limits(lo, hi)
    set_lim = ax.set_xlim if which == "x" else ax.set_ylim
    # limits first: autoscaling on the change of scale would overflow near 1e300
    set_lim(*lim)
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    set_lim(*lim)
    _decade_ticks(ax.xaxis if which == "x" else ax.yaxis, *lim)
    return lim


def _decade_ticks(axis, lo: float, hi: float) -> None:
    """Where [lo, hi] spans two decades or more: ticks at every stride-th decade (at most ~6),
    labelled in plain text (:func:`_decade_label`), no minor ticks (eight a decade, each a
    full Tick artist, would double the drawing time).
    Fixed positions, because LogLocator places ticks up to two strides beyond the limits,
    which overflow for data near 1e300. Narrower ranges keep Matplotlib's log ticks."""
    k0, k1 = math.ceil(math.log10(lo)), math.floor(math.log10(hi))
    if k1 - k0 < 2:
        return
    stride = -(-(k1 - k0 + 1) // 6)
    decades = np.arange(-(-k0 // stride) * stride, k1 + 1, stride)
    axis.set_major_locator(FixedLocator(10.0 ** decades.astype(float)))
    axis.set_major_formatter(FuncFormatter(_decade_label))
    axis.set_minor_locator(NullLocator())


_SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _decade_label(value: float, _pos=None) -> str:
    """ "10⁻³" for a decade, plain text: Matplotlib's log labels are mathtext, whose parsing
    and layout cost more than the rest of a log axis."""
    if not (math.isfinite(value) and value > 0):
        return ""
    k = round(math.log10(value))
    if math.isclose(value, 10.0**k, rel_tol=1e-9):
        return "10" + str(k).translate(_SUPERSCRIPTS)
    return f"{value:g}"


def _time_axis(ax, lr, xlim: tuple[float, float]) -> None:
    """A secondary axis on top of a log step axis (limits ``xlim``) for t = lr * step (finite
    positive lr only)."""
    lr = _positive_lr(lr)
    if lr is None:
        return
    top = ax.secondary_xaxis("top", functions=(lambda s: s * lr, lambda t: t / lr))
    _decade_ticks(top.xaxis, xlim[0] * lr, xlim[1] * lr)
    top.set_xlabel(f"t = lr × step  (lr = {lr:g})")


def _on_own_lines(label: str) -> str:
    """``label`` with each bracketed note ("[3 NaN omitted]") on a line of its own."""
    return label.replace(" [", "\n[")


def _legend(ax, fontsize="small"):
    """The axes' legend at Matplotlib's best location (None if nothing is labelled); the
    notes of a label ("[3 NaN omitted]", see :func:`_clean`) go on lines of their own, so
    that the legend stays narrower than the axes."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    labels = [_on_own_lines(label) for label in labels]
    return ax.legend(handles, labels, loc="best", fontsize=fontsize)


# ------------------------------------------------------------------ 1-D (paper) figures


class _Plot1D:
    """One 1-D panel: curves of f(x) on sorted test inputs, training data on top, a y-range
    that follows the anchor arrays (see :func:`_view`), plain ticks, title and legend."""

    def __init__(self, ax, x_test, anchor, others, x_train=None, y_train=None, y_test=None):
        self.ax = ax
        xs = _col(x_test)
        self.order = np.argsort(xs, kind="stable")
        self.xs = xs[self.order]
        self.y_train = None if y_train is None else _clean(y_train)[0]
        self.x_train = None if x_train is None else _col(x_train)
        self.target = None if y_test is None else _clean(y_test)[0][self.order]
        anchor = [self.y_train, self.target] + [_clean(a)[0] for a in anchor]
        self.view = _view(anchor, [_clean(a)[0] for a in others])

    def curve(self, f, label: str, **style) -> np.ndarray:
        """Draw f (test-input order) sorted by x; returns the drawn values."""
        y, note = _clean(np.asarray(f, dtype=float)[self.order])
        self.ax.plot(self.xs, y, label=label + note + _off_note(y, self.view), **style)
        return y

    def finish(self, title: str, *, xlabel: str | None = "x", legend: bool = True) -> None:
        ax = self.ax
        if self.target is not None:
            ax.plot(self.xs, self.target, label="target", **_STYLE["target"])
        if self.y_train is not None:
            ax.scatter(self.x_train, self.y_train, label="training data", **_DATA_STYLE)
        if self.view is not None:
            ax.set_ylim(*self.view)
        if xlabel:
            ax.set_xlabel(xlabel)
        ax.set_ylabel("f(x)")
        _set_title(ax, title)
        if legend:
            _legend(ax)


def plot_data_init(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    f0_test: np.ndarray,
    *,
    y_test: np.ndarray | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """Paper fig. 1: training points and the untrained network on the test grid."""
    fig, ax = _figure()
    p = _Plot1D(ax, x_test, [f0_test], [], x_train, y_train, y_test)
    p.curve(f0_test, "network at init", **_STYLE["net"])
    p.finish(_title("Data and untrained network (step 0)", meta))
    _fit(fig)
    return fig


def _plot_snapshots(
    x_train,
    y_train,
    x_test,
    f_steps,
    steps,
    snapshot_steps,
    *,
    lr,
    y_test,
    meta,
    what,
    label,
    anchor_all: bool,
) -> Figure:
    fig, ax = _figure()
    steps = np.asarray(steps)
    f_steps = np.asarray(f_steps, dtype=float)
    idx = _snapshot_indices(steps, snapshot_steps)
    curves = [f_steps[i] for i in idx]
    anchor = curves if anchor_all else curves[:1]
    p = _Plot1D(ax, x_test, anchor, curves, x_train, y_train, y_test)
    cmap = colormaps["viridis"]
    lr = _positive_lr(lr)
    for k, i in enumerate(idx):
        step = int(steps[i])
        tag = f"{label} step {step}" + (f" (t={lr * step:g})" if lr is not None else "")
        p.curve(f_steps[i], tag, color=cmap(0.9 * k / max(len(idx) - 1, 1)), lw=1.8)
    p.finish(_title(what, meta, lr))
    _fit(fig)
    return fig


def plot_training_snapshots(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    f_test: np.ndarray,
    steps: np.ndarray,
    snapshot_steps: Sequence[int] | None = None,
    *,
    lr: float | None = None,
    y_test: np.ndarray | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """Paper fig. 2: the network on the test grid at the snapshot steps, one colour per step.

    ``f_test`` is (S, M), aligned with ``steps``; a snapshot step that was not logged is
    replaced by the nearest logged step (and labelled with that step).
    """
    return _plot_snapshots(
        x_train,
        y_train,
        x_test,
        f_test,
        steps,
        snapshot_steps,
        lr=lr,
        y_test=y_test,
        meta=meta,
        what="Network during gradient-descent training",
        label="network,",
        anchor_all=True,
    )


def plot_kernel_machine(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    km_test: np.ndarray,
    *,
    kernel: str = "empirical",
    y_test: np.ndarray | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """Paper figs. 3/4: kernel machine (f0 = 0, t -> inf) with the empirical or analytic NTK."""
    fig, ax = _figure()
    style = _STYLE["kernel" if kernel == "empirical" else "analytic"]
    name = "initial empirical NTK" if kernel == "empirical" else "analytic NTK"
    p = _Plot1D(ax, x_test, [km_test], [], x_train, y_train, y_test)
    p.curve(km_test, f"kernel machine, {name}", **style)
    p.finish(_title(f"Kernel machine with the {name}", meta))
    _fit(fig)
    return fig


def plot_net_vs_kernel_machines(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    f_net: np.ndarray,
    km_empirical: np.ndarray,
    km_analytic: np.ndarray | None = None,
    *,
    step: int | None = None,
    y_test: np.ndarray | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """Paper fig. 5: the trained network against the kernel machine(s)."""
    fig, ax = _figure()
    others = [km_empirical] + ([] if km_analytic is None else [km_analytic])
    p = _Plot1D(ax, x_test, [f_net], others, x_train, y_train, y_test)
    p.curve(
        f_net, "trained network" + (f" (step {step})" if step is not None else ""), **_STYLE["net"]
    )
    p.curve(km_empirical, "kernel machine, empirical NTK", **_STYLE["kernel"])
    if km_analytic is not None:
        p.curve(km_analytic, "kernel machine, analytic NTK", **_STYLE["analytic"])
    p.finish(_title("Trained network vs kernel machines", meta))
    _fit(fig)
    return fig


def plot_kernel_dynamics(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    f_kernel_test: np.ndarray,
    steps: np.ndarray,
    snapshot_steps: Sequence[int] | None = None,
    *,
    kernel: str = "empirical",
    lr: float | None = None,
    y_test: np.ndarray | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """Paper figs. 6/7: constant-kernel GD prediction (MATH.md s.4) at the snapshot steps."""
    name = "initial empirical NTK" if kernel == "empirical" else "analytic NTK"
    return _plot_snapshots(
        x_train,
        y_train,
        x_test,
        f_kernel_test,
        steps,
        snapshot_steps,
        lr=lr,
        y_test=y_test,
        meta=meta,
        what=f"Kernel-dynamics prediction with the {name}",
        label="kernel,",
        anchor_all=False,
    )


def plot_net_vs_kernel_dynamics(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    step: int,
    f_net: np.ndarray,
    f_lin: np.ndarray,
    f_kernel: np.ndarray,
    f_analytic: np.ndarray | None = None,
    *,
    lr: float | None = None,
    y_test: np.ndarray | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """Paper fig. 8: network, linearised network and kernel-dynamics predictions at one step.

    Top panel: the curves (sorted by x; the plotted data are exactly the inputs). Bottom
    panel: each model minus the network, so that "visually indistinguishable" can be read
    off quantitatively.
    """
    fig, (ax, dax) = _figure((7.0, 5.6), 2, 1, sharex=True, height_ratios=[3, 1.3])
    curves = [
        ("linearised network", "linearised", "lin", f_lin),
        ("kernel dynamics, empirical NTK", "kernel (emp.)", "kernel", f_kernel),
    ]
    if f_analytic is not None:
        curves.append(
            ("kernel dynamics, analytic NTK", "kernel (analytic)", "analytic", f_analytic)
        )
    p = _Plot1D(ax, x_test, [f_net], [c[3] for c in curves], x_train, y_train, y_test)
    net = p.curve(f_net, "network", **_STYLE["net"])
    drawn = [p.curve(f, label, **_STYLE[key]) for label, _, key, f in curves]
    lr = _positive_lr(lr)
    t = f", t={lr * step:g}" if lr is not None else ""
    p.finish(_title(f"Network vs kernel dynamics at step {step}{t}", meta, lr), xlabel=None)
    diffs = []
    with np.errstate(invalid="ignore", over="ignore"):
        for (_, short, key, _), y in zip(curves, drawn, strict=True):
            diff, note = _clean(y - net, report_nan=False)
            finite = diff[np.isfinite(diff)]
            mx = f"{np.max(np.abs(finite)):.2g}" if finite.size else "nan"
            dax.plot(
                p.xs, diff, label=f"{short}: max |diff| {mx}{note}", **{**_STYLE[key], "lw": 1.4}
            )
            diffs.append(diff)
    dax.axhline(0.0, color="0.5", lw=0.8)
    # the model closest to the network anchors the range: a runaway one is left out
    sizes = [np.nanmax(np.abs(d)) if np.isfinite(d).any() else np.inf for d in diffs]
    view = _view([np.zeros(1), diffs[int(np.argmin(sizes))]], diffs)
    if view is not None:
        dax.set_ylim(*view)
    dax.yaxis.set_major_locator(MaxNLocator(nbins=3))
    dax.set_xlabel("x")
    dax.set_ylabel("model − network")
    _legend(dax, fontsize="x-small")
    _fit(fig, hspace=0.12)
    return fig


# --------------------------------------------------------------- per-step diagnostics


def _draw_series(
    ax, steps: np.ndarray, history: Mapping, series: Sequence[tuple[str, str, dict]], *, log_y=True
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Draw the named history series present (aligned with ``steps``) at steps > 0 (a log
    step axis cannot show step 0); with ``log_y`` values <= 0 are dropped too. Returns the
    drawn x and y arrays."""
    steps = np.asarray(steps, dtype=float)
    good_step = np.isfinite(steps) & (steps > 0)
    xs, ys = [], []
    for name, label, style in series:
        values = history.get(name)
        if values is None or np.shape(values) != steps.shape:
            continue
        y, note = _clean(np.asarray(values, dtype=float), positive=log_y, report_nan=False)
        keep = np.isfinite(y) & good_step
        if not keep.any():
            continue
        ax.plot(steps[keep], y[keep], label=label + note, marker=".", ms=4, **style)
        xs.append(steps[keep])
        ys.append(y[keep])
    return xs, ys


def _history_figure(
    steps: np.ndarray,
    history: Mapping[str, np.ndarray],
    series: Sequence[tuple[str, str, dict]],
    *,
    ylabel: str,
    title: str,
    lr,
    hline: tuple[float, str] | None = None,
) -> Figure:
    """A per-step figure: the named history series present, log-log (step 0 and values <= 0
    cannot be drawn and are dropped), t = lr x step on a secondary axis on top."""
    fig, ax = _figure()
    xs, ys = _draw_series(ax, steps, history, series)
    if xs and hline is not None:
        value, label = hline
        v, note = _clean(np.array([value], dtype=float), positive=True, report_nan=False)
        if np.isfinite(v[0]):
            ax.axhline(v[0], color="0.5", ls=":", lw=1.2, label=label + note)
            ys.append(v)
    if xs:
        xlim = _log_scale(ax, "x", *_finite_range(xs))
        _log_scale(ax, "y", *_finite_range(ys))
        _legend(ax)
        _time_axis(ax, lr, xlim)
    else:
        _no_data(ax)
    _set_title(ax, title)
    ax.set_xlabel("step (log scale)")
    ax.set_ylabel(ylabel)
    _fit(fig)
    return fig


# Per-log-step kernel diagnostics (docs/metrics.md) the drift figure adds where logged.
KERNEL_DIAGNOSTICS = ("kernel_lambda_max", "kernel_velocity", "kernel_alignment")
_DRIFT_SERIES = (
    ("kernel_drift", "kernel drift, train", dict(color=_C[0], ls="-")),
    ("kernel_drift_test", "kernel drift, test", dict(color=_C[1], ls="-")),
    ("kernel_distance", "kernel distance, train", dict(color=_C[0], ls="--")),
    ("kernel_distance_test", "kernel distance, test", dict(color=_C[1], ls="--")),
    ("param_movement", "relative parameter movement", dict(color="0.4", ls=":")),
)


def plot_drift(
    steps: np.ndarray,
    history: Mapping[str, np.ndarray],
    *,
    lr: float | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """Kernel drift and kernel distance (train and test) against step, log-log.

    Drift and distance are exactly 0 at step 0 (and the log axis cannot show step 0 either),
    so non-positive values and step 0 are dropped rather than drawn on a symlog axis: on
    log-log axes the O(width^-1/2)-type scaling reads as a straight line, which symlog
    would bend near its linear threshold. Relative parameter movement is added where logged.

    Where the history has the kernel diagnostics (:data:`KERNEL_DIAGNOSTICS`), two
    panels below share the step axis: lambda_max of Theta_t (its step-0 value as a dotted
    line: the catapult lowers it) with the kernel-target alignment on a right-hand axis, and
    the kernel velocity (log scale; NaN at step 0). Records without them get the single
    panel.
    """
    title = _title("NTK drift ‖Θ_t−Θ_0‖/‖Θ_0‖ and distance 1−cos(Θ_t,Θ_0)", meta, lr)
    steps = np.asarray(steps, dtype=float)
    if not any(np.shape(history.get(k)) == steps.shape for k in KERNEL_DIAGNOSTICS):
        return _history_figure(
            steps, history, _DRIFT_SERIES, ylabel="relative change from init", title=title, lr=lr
        )
    fig, (ax, lax, vax) = _figure((7.0, 8.0), 3, 1, sharex=True, height_ratios=[2.6, 1.6, 1.3])
    xs, ys = _draw_series(ax, steps, history, _DRIFT_SERIES)
    lxs, ays = _diagnostic_panels(lax, vax, steps, history)
    xs += lxs
    if xs:
        xlim = _log_scale(ax, "x", *_finite_range(xs))
        _time_axis(ax, lr, xlim)
    if ys:
        _log_scale(ax, "y", *_finite_range(ys))
        _legend(ax)
    else:
        _no_data(ax)
    _set_title(ax, title)
    ax.set_ylabel("relative change from init")
    vax.set_xlabel("step (log scale)")
    _fit(fig, hspace=0.12)
    return fig


def _diagnostic_panels(lax, vax, steps: np.ndarray, history: Mapping) -> tuple[list, list]:
    """The drift figure's lower panels: lambda_max(Theta_t) and (right axis) the alignment
    on ``lax``, the kernel velocity (log y) on ``vax``. Returns the drawn x arrays and the
    alignment's y arrays."""
    lam = history.get("kernel_lambda_max")
    xs, _ = _draw_series(
        lax, steps, history, [("kernel_lambda_max", "λ_max(Θ_t)", dict(color=_C[0]))], log_y=False
    )
    if lam is not None and np.shape(lam) == steps.shape and (steps == 0).any():
        lam0, note = _clean(np.asarray(lam, dtype=float)[steps == 0][:1], report_nan=False)
        if np.isfinite(lam0[0]):
            lax.axhline(lam0[0], color=_C[0], ls=":", lw=1.2, label="λ_max(Θ_0)" + note)
    lax.set_ylabel("λ_max(Θ_t)")
    aax = lax.twinx()
    axs, ays = _draw_series(
        aax,
        steps,
        history,
        [("kernel_alignment", "alignment yᵀΘy/(‖Θ‖‖y‖²)", dict(color=_C[4], ls="--"))],
        log_y=False,
    )
    aax.set_ylabel("alignment")
    handles, labels = lax.get_legend_handles_labels()
    more = aax.get_legend_handles_labels()
    if handles or more[0]:
        aax.legend(handles + more[0], labels + more[1], loc="best", fontsize="small")
    vxs, vys = _draw_series(
        vax, steps, history, [("kernel_velocity", "kernel velocity", dict(color=_C[3]))]
    )
    if vys:
        _log_scale(vax, "y", *_finite_range(vys))
        _legend(vax)
    vax.set_ylabel("velocity per unit t")
    return xs + axs + vxs, ays


def plot_losses(
    steps: np.ndarray,
    history: Mapping[str, np.ndarray],
    *,
    lr: float | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """Training loss of network, linearised model and kernel prediction, and test loss, log-log.

    Log-log like the other per-step figures (a symlog step axis would show step 0 but bend
    the power laws near its linear threshold). Step 0 and non-positive values are dropped;
    the initial training loss is drawn as a horizontal line.
    Losses that overflow (a diverging linearised model reaches 1e291 and beyond) are drawn
    at 1e300 at most, and the legend says how many points were clipped.
    """
    series = [
        ("loss", "network, train", _STYLE["net"]),
        ("loss_lin", "linearised, train", _STYLE["lin"]),
        ("loss_kernel", "kernel dynamics, train", _STYLE["kernel"]),
        ("test_loss", "network, test", dict(color=_C[4], ls="-", lw=1.6)),
    ]
    steps = np.asarray(steps, dtype=float)
    hline = None
    loss = history.get("loss")
    if loss is not None and np.shape(loss) == steps.shape:
        at0 = np.asarray(loss, dtype=float)[steps == 0]
        at0 = at0[np.isfinite(at0) & (at0 > 0)]
        if at0.size:
            hline = (float(at0[0]), "network, train, at step 0")
    return _history_figure(
        steps,
        history,
        series,
        ylabel="loss (1/2N) Σ(f − y)²",
        title=_title("Losses", meta, lr),
        lr=lr,
        hline=hline,
    )


def plot_linearization_error(
    steps: np.ndarray,
    history: Mapping[str, np.ndarray],
    *,
    lr: float | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """RMS network-vs-linearised and network-vs-kernel-prediction errors against step, log-log.

    All are exactly 0 at step 0 (every model starts from the network's f_0), so step 0 and
    non-positive values are dropped, as in :func:`plot_drift`.
    """
    series = [
        ("lin_error_train", "network − linearised, train", dict(color=_C[1], ls="-")),
        ("lin_error_test", "network − linearised, test", dict(color=_C[1], ls="--")),
        ("kernel_pred_error_train", "network − kernel (emp.), train", dict(color=_C[2], ls="-")),
        ("kernel_pred_error_test", "network − kernel (emp.), test", dict(color=_C[2], ls="--")),
        (
            "analytic_pred_error_test",
            "network − kernel (analytic), test",
            dict(color=_C[3], ls="--"),
        ),
    ]
    return _history_figure(
        steps,
        history,
        series,
        ylabel="RMS difference",
        title=_title("Linearisation error", meta, lr),
        lr=lr,
    )


# ------------------------------------------------------------------------ NTK figures


def _sorted_eigs(k: np.ndarray | None) -> np.ndarray | None:
    """Eigenvalues, descending, of a finite square matrix (None otherwise)."""
    if k is None:
        return None
    k = np.asarray(k, dtype=float)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or not np.all(np.isfinite(k)):
        return None
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.sort(np.linalg.eigvalsh(0.5 * k + 0.5 * k.T))[::-1]
    except np.linalg.LinAlgError:
        return None


def plot_ntk_spectrum(
    ntk_init: np.ndarray,
    ntk_final: np.ndarray,
    ntk_analytic: np.ndarray | None = None,
    *,
    n_train: int | None = None,
    lr_effective: float | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """Sorted eigenvalues (descending, log scale) of the empirical NTK at init and at the end
    and of the analytic NTK, with the GD stability limit 2N/lr marked.

    Eigenvalues <= 0 (round-off of a singular kernel, e.g. the paper's rank-2 setting) cannot
    be drawn on a log axis and are dropped; the legend says how many. A kernel with
    non-finite entries is not drawn (noted in the plot).
    """
    fig, ax = _figure()
    ys: list[np.ndarray] = []
    skipped = []
    for k, label, style in (
        (ntk_init, "empirical, init", dict(color=_C[0], ls="-", marker="o")),
        (ntk_final, "empirical, final", dict(color=_C[1], ls="--", marker="s")),
        (ntk_analytic, "analytic", dict(color=_C[3], ls="-.", marker="^")),
    ):
        if k is None:
            continue
        ev = _sorted_eigs(k)
        if ev is None:
            skipped.append(label)
            continue
        idx = np.arange(1, ev.size + 1)
        nonpos = int(np.sum(ev <= 0))
        y, note = _clean(ev, positive=True)
        pos = np.isfinite(y)
        tag = label + (f" ({nonpos} ≤ 0 omitted)" if nonpos else "") + note
        if pos.any():
            if ev.size > 60:  # hundreds of markers cost more than they show
                style = {**style, "marker": None}
            ax.plot(idx[pos], y[pos], label=tag, ms=3, lw=1.4, **style)
            ys.append(y[pos])
    lr = _positive_lr(lr_effective)
    if n_train and lr is not None:
        limit = 2.0 * n_train / lr
        v, note = _clean(np.array([limit]), positive=True)
        if np.isfinite(v[0]):
            ax.axhline(
                v[0],
                color="k",
                ls=":",
                lw=1.2,
                label=f"2N/lr = {limit:.3g} (GD unstable above)" + note,
            )
            ys.append(v)
    _set_title(ax, _title("NTK spectrum", meta, lr_effective))
    if ys:
        _log_scale(ax, "y", *_finite_range(ys))
        _legend(ax)
    else:
        _no_data(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("eigenvalue index (descending)")
    ax.set_ylabel("eigenvalue λ of Θ on the training inputs")
    if skipped:
        ax.text(
            0.01,
            0.01,
            "not drawn (non-finite entries): " + ", ".join(skipped),
            transform=ax.transAxes,
            fontsize="small",
            color="0.3",
        )
    _fit(fig)
    return fig


def plot_ntk_heatmaps(
    ntk_init: np.ndarray,
    ntk_final: np.ndarray,
    *,
    meta: Mapping | None = None,
) -> Figure:
    """Empirical NTK on the training inputs at init and at the end (shared colour scale,
    one colour bar) and their difference final − init (own, symmetric diverging scale).

    Entries beyond ±BOUND (or infinite) are drawn at the bound, NaN entries blank; the
    panel titles say how many."""
    k0, note0 = _clean(ntk_init)
    k1, note1 = _clean(ntk_final)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = k1 - k0
        both = _finite_range([k0, k1])
        vmin, vmax = both if both is not None else (0.0, 1.0)
        if vmin == vmax:
            vmin, vmax = vmin - 1.0, vmax + 1.0
        fd = diff[np.isfinite(diff)]
        dmax = float(np.max(np.abs(fd))) if fd.size else 0.0
        dmax = dmax if dmax > 0 else 1.0
        f0 = k0[np.isfinite(k0)]
        rel = np.linalg.norm(fd) / np.linalg.norm(f0) if fd.size and f0.size else np.nan
    kw = dict(interpolation="nearest", aspect="equal")
    panels = (
        (k0, _on_own_lines("Θ at init" + note0), dict(cmap="viridis", vmin=vmin, vmax=vmax)),
        (k1, _on_own_lines("Θ at the end" + note1), dict(cmap="viridis", vmin=vmin, vmax=vmax)),
        (diff, "Θ_end − Θ_init", dict(cmap="RdBu_r", vmin=-dmax, vmax=dmax)),
    )
    what = f"Empirical NTK on the training inputs (drift {rel:.3g})"
    suptitle = _title(what, meta, chars=2 * _TITLE_CHARS)
    fig, axes, caxes = _heatmap_axes(_lines(suptitle), max(_lines(p[1]) for p in panels))
    images = []
    for ax, (mat, name, cm) in zip(axes, panels, strict=True):
        images.append(ax.imshow(mat, **cm, **kw))
        ax.set_title(name, fontsize="medium")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.set_xlabel("training point j")
        ax.set_ylabel("training point i")
    # one colour bar for the two kernels (one scale), one for the difference
    fig.colorbar(images[1], cax=caxes[0], label="Θ(x_i, x_j)")
    fig.colorbar(images[2], cax=caxes[1], label="difference")
    fig.suptitle(suptitle, fontsize="medium", y=1 - _TOP_AIR / fig.get_figheight(), va="top")
    return fig


def _heatmap_axes(suptitle_lines: int, title_lines: int, size=(12.0, 4.3)):
    """Figure, three square image axes in a row and two colour-bar axes (after the second
    and the third), placed at fixed positions in inches: room left of every image for its
    tick labels and y label, right of each colour bar for its labels."""
    fig = Figure(figsize=size, dpi=DPI, layout=None)
    FigureCanvasAgg(fig)
    width, height = size
    top = 2 * _TOP_AIR + (suptitle_lines + title_lines) * _TITLE_LINE + _TITLE_PAD
    ylabels, gap, bar, bar_labels = 0.85, 0.12, 0.15, 0.8
    side = min(
        height - top - _MARGIN_BOTTOM,
        (width - 3 * ylabels - 2 * (gap + bar + bar_labels)) / 3,
    )
    bottom = _MARGIN_BOTTOM + 0.5 * (height - top - _MARGIN_BOTTOM - side)

    def rect(x: float, w: float) -> list[float]:
        return [x / width, bottom / height, w / width, side / height]

    x1 = ylabels
    x2 = x1 + side + ylabels
    c1 = x2 + side + gap
    x3 = c1 + bar + bar_labels + ylabels
    c2 = x3 + side + gap
    axes = [fig.add_axes(rect(x, side)) for x in (x1, x2, x3)]
    caxes = [fig.add_axes(rect(c, bar), label="<colorbar>") for c in (c1, c2)]
    return fig, axes, caxes


def plot_pred_vs_target(
    y_test: np.ndarray,
    f_net: np.ndarray,
    f_lin: np.ndarray | None = None,
    f_kernel: np.ndarray | None = None,
    f_analytic: np.ndarray | None = None,
    *,
    step: int | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """Predicted vs target on the test set (d > 1) for the network, the linearised model and
    the kernel prediction(s), with the diagonal y = f. The y-range follows the targets and
    the network; a model that leaves it is labelled with its largest value."""
    fig, ax = _figure()
    y, _ = _clean(y_test, report_nan=False)
    models = [
        ("network", "net", f_net, "o"),
        ("linearised", "lin", f_lin, "s"),
        ("kernel dynamics, empirical NTK", "kernel", f_kernel, "^"),
        ("kernel dynamics, analytic NTK", "analytic", f_analytic, "v"),
    ]
    cleaned = {key: _clean(f) if f is not None else None for _, key, f, _ in models}
    net = cleaned["net"][0] if cleaned["net"] is not None else None
    others = [c[0] for k, c in cleaned.items() if c is not None and k != "net"]
    view = _view([y, net], others)
    drawn = 0
    for label, key, _, marker in models:
        if cleaned[key] is None:
            continue
        f, note = cleaned[key]
        keep = np.isfinite(f) & np.isfinite(y)
        if not keep.any():
            continue
        with np.errstate(over="ignore"):
            rmse = float(np.sqrt(np.mean((f[keep] - y[keep]) ** 2)))
        colour = _STYLE[key]["color"]
        # the network as hollow circles on top, so it stays visible where the models agree
        look = (
            dict(s=40, facecolors="none", edgecolors=colour, linewidths=1.2, zorder=4)
            if key == "net"
            else dict(s=14, color=colour, alpha=0.6, zorder=3)
        )
        tag = f"{label} (RMSE {rmse:.3g}){note}{_off_note(f[keep], view)}"
        ax.scatter(y[keep], f[keep], marker=marker, label=tag, **look)
        drawn += 1
    yr = _finite_range([y])
    if drawn and yr is not None:
        a, b = yr
        ax.plot([a, b], [a, b], color="k", lw=1.0, ls="--", label="f = y")
        if view is not None:
            ax.set_ylim(*view)
        _legend(ax)
    else:
        _no_data(ax)
    ax.set_xlabel("target y")
    ax.set_ylabel("prediction f(x)")
    at = f" at step {step}" if step is not None else ""
    _set_title(ax, _title(f"Test predictions vs targets{at}", meta))
    _fit(fig)
    return fig


# ------------------------------------------------------------------------- the run set


def _check_which(which: str) -> None:
    if which not in FIGURE_SETS:
        raise ValueError(f"which={which!r} is invalid: expected one of {', '.join(FIGURE_SETS)}")


def expected_figure_names(record: Mapping, which: str = "all") -> list[str]:
    """Names (no ``.png``) :func:`run_figures` produces for ``record`` (figures contract) and
    the figure set ``which`` (one of :data:`FIGURE_SETS`)."""
    _check_which(which)
    if which == "none":
        return []
    d = np.asarray(record["x_train"]).reshape(len(record["x_train"]), -1).shape[1]
    names: list[str] = []
    if d == 1 and int(record.get("outputs", 1)) == 1:  # the paper's f(x) curves: one output
        names += ["fig1_data_init", "fig2_training", "fig3_kernel_machine_empirical"]
        if record.get("km_analytic_test") is not None:
            names.append("fig4_kernel_machine_analytic")
        names += ["fig5_net_vs_kernel_machines", "fig6_kernel_dynamics_empirical"]
        if record.get("f_analytic_test") is not None:
            names.append("fig7_kernel_dynamics_analytic")
        names.append("fig8_net_vs_kernel_dynamics")
    names += ["drift", "losses", "linearization_error", "ntk_spectrum", "ntk_heatmaps"]
    if d > 1 and record.get("y_test") is not None:
        names.append("pred_vs_target")
    if which == "paper":
        names = [n for n in names if n in PAPER_FIGURES]
    return names


@dataclass(frozen=True)
class _Series:
    """What the figures of one record draw, as float arrays (see :func:`figure_builders`)."""

    data: tuple  # (x_train, y_train, x_test)
    common: dict  # y_test and meta, the keyword arguments of every 1-D figure
    meta: dict
    steps: np.ndarray
    snaps: Sequence[int] | None
    lr_eff: float | None
    f_test: np.ndarray
    f_lin: np.ndarray
    f_kernel: np.ndarray
    f_analytic: np.ndarray | None
    km_emp: np.ndarray
    km_an: np.ndarray | None
    i0: int  # index of step 0 in steps
    i8: int  # index of the step of figure 8
    last: int  # index of the last step


def _series(record: Mapping) -> _Series:
    meta = dict(record.get("meta") or {})
    steps = np.asarray(record["steps"])
    lr_eff = record.get("lr_effective", record.get("lr"))
    lr_eff = None if lr_eff is None else float(lr_eff)
    meta.setdefault("lr_effective", lr_eff)  # every title says lr_eff where it differs
    last = steps.size - 1
    return _Series(
        data=(record["x_train"], record["y_train"], record["x_test"]),
        common=dict(y_test=record.get("y_test"), meta=meta),
        meta=meta,
        steps=steps,
        snaps=record.get("snapshot_steps"),
        lr_eff=lr_eff,
        f_test=np.asarray(record["f_test"], dtype=float),
        f_lin=np.asarray(record["f_lin_test"], dtype=float),
        f_kernel=np.asarray(record["f_kernel_test"], dtype=float),
        f_analytic=_array_or_none(record.get("f_analytic_test")),
        km_emp=np.asarray(record["km_empirical_test"], dtype=float),
        km_an=_array_or_none(record.get("km_analytic_test")),
        i0=_step_index(steps, 0),
        i8=_step_index(steps, int(record.get("fig8_step", steps[last]))),
        last=last,
    )


def _paper_builders(s: _Series) -> dict[str, Callable[[], Figure]]:
    """The paper's 1-D figures 1-8 (functions of x on the test inputs)."""
    data, common, lr = s.data, s.common, s.lr_eff
    an8 = None if s.f_analytic is None else s.f_analytic[s.i8]
    return {
        "fig1_data_init": lambda: plot_data_init(*data, s.f_test[s.i0], **common),
        "fig2_training": lambda: plot_training_snapshots(
            *data, s.f_test, s.steps, s.snaps, lr=lr, **common
        ),
        "fig3_kernel_machine_empirical": lambda: plot_kernel_machine(
            *data, s.km_emp, kernel="empirical", **common
        ),
        "fig4_kernel_machine_analytic": lambda: plot_kernel_machine(
            *data, s.km_an, kernel="analytic", **common
        ),
        "fig5_net_vs_kernel_machines": lambda: plot_net_vs_kernel_machines(
            *data, s.f_test[s.last], s.km_emp, s.km_an, step=int(s.steps[s.last]), **common
        ),
        "fig6_kernel_dynamics_empirical": lambda: plot_kernel_dynamics(
            *data, s.f_kernel, s.steps, s.snaps, kernel="empirical", lr=lr, **common
        ),
        "fig7_kernel_dynamics_analytic": lambda: plot_kernel_dynamics(
            *data, s.f_analytic, s.steps, s.snaps, kernel="analytic", lr=lr, **common
        ),
        "fig8_net_vs_kernel_dynamics": lambda: plot_net_vs_kernel_dynamics(
            *data,
            int(s.steps[s.i8]),
            s.f_test[s.i8],
            s.f_lin[s.i8],
            s.f_kernel[s.i8],
            an8,
            lr=lr,
            **common,
        ),
    }


def _run_builders(record: Mapping, s: _Series) -> dict[str, Callable[[], Figure]]:
    """The figures of every run: histories over the log steps, the kernels, and predictions
    against targets."""
    history = record.get("history") or {}
    n_train = int(record.get("n_train", np.asarray(record["x_train"]).shape[0]))
    lr, meta, last = s.lr_eff, s.meta, s.last
    return {
        "drift": lambda: plot_drift(s.steps, history, lr=lr, meta=meta),
        "losses": lambda: plot_losses(s.steps, history, lr=lr, meta=meta),
        "linearization_error": lambda: plot_linearization_error(s.steps, history, lr=lr, meta=meta),
        "ntk_spectrum": lambda: plot_ntk_spectrum(
            record["ntk_init"],
            record["ntk_final"],
            record.get("ntk_analytic"),
            n_train=n_train,
            lr_effective=lr,
            meta=meta,
        ),
        "ntk_heatmaps": lambda: plot_ntk_heatmaps(
            record["ntk_init"], record["ntk_final"], meta=meta
        ),
        "pred_vs_target": lambda: plot_pred_vs_target(
            s.common["y_test"],
            s.f_test[last],
            s.f_lin[last],
            s.f_kernel[last],
            None if s.f_analytic is None else s.f_analytic[last],
            step=int(s.steps[last]),
            meta=meta,
        ),
    }


def figure_builders(record: Mapping, which: str = "all") -> dict[str, Callable[[], Figure]]:
    """name -> zero-argument function drawing that figure, for exactly the names of
    :func:`expected_figure_names` (lets a caller build, save and release the figures one at
    a time, or time them; :func:`run_figures` calls them all)."""
    names = expected_figure_names(record, which)
    s = _series(record)
    table = {**_paper_builders(s), **_run_builders(record, s)}
    return {name: table[name] for name in names}


def run_figures(record: Mapping, which: str = "all") -> dict[str, Figure]:
    """The figures of one run (figures contract in the design notes): name -> Figure.

    ``which="all"``: 1-D inputs give the paper's fig1..fig8 (fig4 only with
    ``km_analytic_test``, fig7 only with ``f_analytic_test``); every run gives drift, losses,
    linearization_error, ntk_spectrum and ntk_heatmaps; d > 1 with ``y_test`` adds
    pred_vs_target. ``"paper"`` keeps those in :data:`PAPER_FIGURES`, ``"none"`` none. Time
    axes use ``lr_effective`` (the learning rate the dynamics actually use). Exactly the
    names of :func:`expected_figure_names`. Each Figure has its own Agg canvas.
    """
    return {name: build() for name, build in figure_builders(record, which).items()}
