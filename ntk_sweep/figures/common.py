"""What the run figures (:mod:`.paper`, :mod:`.diagnostics`) share beyond the style of
:mod:`ntk_sweep.figure_style`: the models' colours and line styles, titles with the run's
metadata, values made safe to draw (:func:`_clean`, ``±BOUND``), y-ranges that a runaway
model does not squash (:func:`_view`), log axes with plain decade ticks and the t = lr x step
axis, and the per-step history figure (:func:`_history_figure`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ntk_sweep.figure_style import FIGSIZE, fit_margins, new_figure

# Largest magnitude drawn; larger and infinite values are drawn at +-BOUND (log axes:
# positive values below 1 / BOUND at 1 / BOUND).
BOUND = 1e300

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


def _figure(figsize=FIGSIZE, nrows: int = 1, ncols: int = 1, *, grid: bool = True, **subplot_kw):
    """A run figure (:func:`ntk_sweep.figure_style.new_figure`: no layout engine, margins
    :func:`~ntk_sweep.figure_style.fit_margins`) and its axes, with a grid."""
    fig = new_figure(figsize)
    axes = fig.subplots(nrows, ncols, **subplot_kw)
    for ax in np.ravel(axes):
        if grid:
            ax.grid(True, alpha=0.3)
    return fig, axes


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
    fit_margins(fig)
    return fig
