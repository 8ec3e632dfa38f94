"""Figures for one run: the paper's eight 1-D figures plus diagnostics for every dataset.

Pure plotting: every function takes plain NumPy arrays (and, for :func:`run_figures`, the
``record`` dict of the figures contract) and returns a :class:`matplotlib.figure.Figure`.
Figures are built with ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no
global figure registry, no interactive backend, nothing to close, safe in worker processes
and on machines without a screen. Each figure carries its own Agg canvas with a fast PNG
writer, so a plain ``fig.savefig(path)`` is already the fast path (:func:`save_png` and
:func:`figure_to_png_bytes` spell it out).

Style shared by all figures: 7 x 4.5 in at 90 dpi (630 x 405 px), fixed margins, grid,
legend, labelled axes; time axes are in GD steps (log) with ``t = lr * step`` ticks on top
(lr the effective learning rate, the one the dynamics use); titles carry dataset,
parameterization, activation, depth, width, lr and seed from ``record["meta"]``.

Speed (issue 4: figures < 20 % of a paper run). The cost is Matplotlib's per-artist Python
work and text, not pixels. Hence: ticks drawn as two line collections and one text per
label (Matplotlib's ticks are five artists each, made and laid out at draw time), at most ~5
per axis, no minor ticks, plain-text labels (``10⁻³``, no mathtext); no secondary Axes for
t = lr x step; fixed margins (no layout engine) and fixed title positions; the legend's
location chosen here (``loc="best"`` tests every path at draw time); hex colours; a
renderer that caches text layouts and glyph bitmaps across draws (pixel-identical); PNG
rows unfiltered at zlib level 1.

Robustness: values are drawn only where finite and within ``±BOUND`` (1e300); larger or
infinite values are drawn at the bound and NaN values are left out, and the legend says so.
Log axes get explicit limits and ticks within [1e-305, 1e305] (Matplotlib's log locator
overflows on data near 1e291). In the 1-D figures a model that runs away (e.g. a diverging
linearised model) does not squash the others: the y-range follows the data and the network,
and a curve that leaves it is labelled with its largest value.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence

import matplotlib as mpl
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import MaxNLocator, NullLocator
from matplotlib.transforms import ScaledTranslation

__all__ = [
    "FIGSIZE",
    "DPI",
    "BOUND",
    "PNG_SAVE_KWARGS",
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
# Rendering cost hardly depends on the pixel count (it is per-artist Python work).
DPI = 90
# Largest magnitude drawn; larger and infinite values are drawn at +-BOUND (log axes:
# positive values below 1 / BOUND at 1 / BOUND).
BOUND = 1e300
# Keyword arguments for ``fig.savefig(target, **PNG_SAVE_KWARGS)`` (what :func:`save_png`
# does; a figure from this module uses them by default anyway).
PNG_SAVE_KWARGS = {"format": "png"}

# Matplotlib's default colour cycle (tab10) as hex: "C0"-style names are looked up in
# rcParams on every use (~0.2 ms each, hundreds per run), hex strings are cached.
_C = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
# One colour / line style per model, the same in every figure.
_STYLE = {
    "net": dict(color=_C[0], ls="-", lw=2.2),
    "lin": dict(color=_C[1], ls="--", lw=1.8),
    "kernel": dict(color=_C[2], ls=":", lw=2.2),
    "analytic": dict(color=_C[3], ls="-.", lw=1.8),
    "target": dict(color="0.55", ls="--", lw=1.2),
}
_DATA_STYLE = dict(color="k", marker="o", s=36, zorder=5, edgecolors="w", linewidths=0.8)
# Ticks (drawn by `_ticks`, Matplotlib's default look): lengths in points.
_TICK = dict(length=3.5, pad=3.5, label_gap=4.0)
_TICK_FONT = FontProperties(size=10.0)  # one FontProperties for every tick label
_TICK_LINE = dict(colors="k", linewidths=0.8)
_TICK_GID = "ntk_sweep-ticks"  # marks the tick and grid collections (not data)
_GRID_LINE = dict(colors="#b0b0b0", linewidths=0.8, alpha=0.3, zorder=0.5)
_MAX_TICKS = 5  # major ticks per axis (each tick costs ~1 ms to create and draw)

# Fixed margins (fractions of the figure) instead of a layout engine: constrained layout
# measures every tick label twice per savefig and roughly doubles the rendering time.
# The content is known (two-line title, short axis labels), so fixed margins fit.
_MARGINS = dict(left=0.115, right=0.97, bottom=0.11, top=0.85)
# Per-step (log-log) figures: room for the "t = lr x step" ticks and label above the plot.
_HISTORY_MARGINS = dict(top=0.75, left=0.12)
_TITLE_PAD = 6.0  # points above the axes
_HISTORY_TITLE_PAD = 34.0  # points: above the t = lr x step tick labels and label


# --------------------------------------------------------------------------- saving

# Text is about half of the rendering time of these figures with Matplotlib 3.11, whose Agg
# backend lays out every string with FreeType at each draw and renders each glyph through a
# Python loop. The renderer below caches, process-wide, what does not change between draws
# and figures: string metrics and layouts per (string, font files, size, dpi, hinting), and
# glyph bitmaps per (glyph, size, dpi, angle, hinting, antialiasing, sub-pixel offset). The
# pixels are identical to Matplotlib's own (tests/test_figures.py checks it); only the work
# is reused. It relies on private Agg/FT2Font methods of Matplotlib 3.11, so it is only used
# with 3.11 (other versions: Matplotlib's renderer), and falls back to Matplotlib's code for
# mathtext.
_TEXT_CACHE_LIMIT = 50_000  # entries per cache; cleared when exceeded (~1 kB per glyph)
_METRICS: dict = {}
_FONT_FILES: dict = {}
_FONT_RC = ("font.family", "font.sans-serif", "font.serif", "font.monospace", "font.cursive")
_FONT_RC += ("font.fantasy", "font.style", "font.variant", "font.weight", "font.stretch")
_LAYOUTS: dict = {}
_GLYPHS: dict = {}


def _fast_text_supported() -> bool:
    # the private methods used below, as they are in the Matplotlib versions checked here
    if tuple(mpl.__version_info__[:2]) not in {(3, 11)}:
        return False
    try:
        from matplotlib.backends import backend_agg
        from matplotlib.ft2font import FT2Font, RenderMode  # noqa: F401
    except ImportError:
        return False
    needed = [
        (backend_agg, "get_hinting_flag"),
        (backend_agg.RendererAgg, "_prepare_font"),
        (backend_agg.RendererAgg, "_draw_text_glyphs_and_boxes"),
        (FT2Font, "_layout"),
        (FT2Font, "_render_glyph"),
        (FT2Font, "_set_transform"),
    ]
    return all(hasattr(obj, name) for obj, name in needed)


def _remember(cache: dict, key, value):
    if len(cache) >= _TEXT_CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


if _fast_text_supported():
    from matplotlib.backends.backend_agg import RendererAgg, get_hinting_flag
    from matplotlib.font_manager import fontManager as _font_manager
    from matplotlib.ft2font import RenderMode

    class _CachedTextRenderer(RendererAgg):
        """RendererAgg with process-wide caches of text metrics, layouts and glyph bitmaps."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            rc = [mpl.rcParams[k] for k in _FONT_RC]
            self._font_rc = tuple(tuple(v) if isinstance(v, list) else v for v in rc)

        def _font_key(self, prop):
            # font lookups (findfont hashes the rcParams font lists on each call) are cached
            # per FontProperties and the rcParams font settings when the renderer was made
            key = (prop, self._font_rc)
            files = _FONT_FILES.get(key)
            if files is None:
                files = tuple(_font_manager._find_fonts_by_props(prop))
                files = _remember(_FONT_FILES, (prop.copy(), self._font_rc), files)
            return (files, prop.get_size_in_points(), self.dpi, get_hinting_flag())

        def get_text_width_height_descent(self, s, prop, ismath):
            if ismath:
                return super().get_text_width_height_descent(s, prop, ismath)
            key = (s, self._font_key(prop))
            hit = _METRICS.get(key)
            if hit is None:
                hit = _remember(
                    _METRICS, key, super().get_text_width_height_descent(s, prop, ismath)
                )
            return hit

        def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
            if ismath:
                return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
            features = mtext.get_fontfeatures() if mtext is not None else None
            language = mtext.get_language() if mtext is not None else None
            key = (s, self._font_key(prop), features, language)
            try:
                items = _LAYOUTS.get(key)
            except TypeError:  # unhashable features / language: no caching
                return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
            flags = key[1][3]
            if items is None:
                font = self._prepare_font(prop)
                laid = font._layout(s, flags=flags, features=features, language=language)
                items = _remember(
                    _LAYOUTS, key, [(i.ft_object, i.glyph_index, i.x, i.y) for i in laid]
                )
            size = prop.get_size_in_points()
            antialiased = bool(gc.get_antialiased())
            mode = RenderMode.NORMAL if antialiased else RenderMode.MONO
            cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            matrix = None
            height = self.height
            for font, index, dx, dy in items:  # as RendererAgg._draw_text_glyphs_and_boxes
                ox = round(0x40 * (x + dx * cos - dy * sin))
                oy = round(0x40 * (height - y + dx * sin + dy * cos))
                # FreeType's bitmap depends on the offset's fraction only (1/64 px); the
                # integer part just moves it
                gkey = (id(font), size, self.dpi, index, angle, flags, antialiased)
                gkey += (ox & 63, oy & 63)
                glyph = _GLYPHS.get(gkey)
                if glyph is None:
                    if matrix is None:
                        matrix = (0x10000 * np.array([[cos, -sin], [sin, cos]])).round()
                        matrix = matrix.astype(int)
                    font.set_size(size, self.dpi)
                    font._set_transform(matrix, [ox & 63, oy & 63])
                    bitmap = font._render_glyph(index, flags, mode)
                    buffer = np.array(bitmap.buffer)
                    if not antialiased:
                        buffer *= 0xFF
                    # keep `font` alive with its glyphs: the key holds its id
                    glyph = _remember(_GLYPHS, gkey, (buffer, bitmap.left, bitmap.top, font))
                buffer, left, top, _ = glyph
                self._renderer.draw_text_image(
                    buffer, left + (ox >> 6), int(height) - top - (oy >> 6) + buffer.shape[0], 0, gc
                )

else:  # pragma: no cover - other Matplotlib versions: its own renderer
    _CachedTextRenderer = None


def _png(rgba: np.ndarray, dpi: float, metadata: Mapping[str, str]) -> bytes:
    """PNG file bytes of an (H, W, 4) uint8 RGBA image: no row filter and zlib level 1.

    Pillow's encoder (what Matplotlib uses) tries every row filter and compresses at level
    6: ~3x slower for plots, whose flat areas compress about as well unfiltered. Metadata
    as tEXt chunks (Latin-1), the dpi as pHYs, like Matplotlib's own PNGs."""
    h, w, _ = rgba.shape
    rows = np.empty((h, 1 + 4 * w), dtype=np.uint8)
    rows[:, 0] = 0  # filter type "none"
    rows[:, 1:] = rgba.reshape(h, 4 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    per_metre = round(dpi / 0.0254)
    parts = [
        b"\x89PNG\r\n\x1a\n",
        chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)),  # 8-bit RGBA
        chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)),
    ]
    for key, value in metadata.items():
        parts.append(chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")))
    parts.append(chunk(b"IDAT", zlib.compress(rows, 1)))
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


class _PngCanvas(FigureCanvasAgg):
    """Agg canvas of this module's figures: the text-caching renderer where supported, and
    fast PNG output (:func:`_png`) for a plain ``fig.savefig(path)``; passing ``pil_kwargs``
    selects Matplotlib's own (Pillow) writer."""

    def get_renderer(self):
        if _CachedTextRenderer is None:
            return super().get_renderer()
        w, h = self.get_width_height(physical=True)
        key = w, h, self.figure.dpi
        if self._lastKey != key:
            self.renderer = _CachedTextRenderer(w, h, self.figure.dpi)
            self._lastKey = key
        return self.renderer

    def print_png(self, filename_or_obj, *, metadata=None, pil_kwargs=None, **_ignored):
        # print_figure also passes facecolor, edgecolor, orientation, bbox_inches_restore,
        # which it applies itself; matplotlib's own print_png ignores them the same way.
        if pil_kwargs is not None:
            return FigureCanvasAgg.print_png(
                self, filename_or_obj, metadata=metadata, pil_kwargs=pil_kwargs
            )
        info = {"Software": f"Matplotlib version{mpl.__version__}, https://matplotlib.org/"}
        info = {k: v for k, v in {**info, **(metadata or {})}.items() if v is not None}
        try:
            for k, v in info.items():
                k.encode("latin-1"), v.encode("latin-1")
        except UnicodeEncodeError:  # Pillow writes such text as iTXt
            return FigureCanvasAgg.print_png(self, filename_or_obj, metadata=metadata)
        FigureCanvasAgg.draw(self)
        data = _png(np.asarray(self.buffer_rgba()), self.figure.dpi, info)
        if isinstance(filename_or_obj, str | os.PathLike):
            with open(filename_or_obj, "wb") as fh:
                fh.write(data)
        else:
            filename_or_obj.write(data)


def save_png(fig: Figure, target: str | os.PathLike | io.IOBase, **kwargs) -> None:
    """Write ``fig`` (from this module) as a PNG to a path or binary file object, fast: no
    row filter, zlib level 1, the figure's dpi; keyword arguments go to ``fig.savefig``.
    (``fig.savefig(path)`` alone does the same for this module's figures.)"""
    fig.savefig(target, **{**PNG_SAVE_KWARGS, **kwargs})


def figure_to_png_bytes(fig: Figure, dpi: float | None = None) -> bytes:
    """Render ``fig`` to PNG bytes (Agg canvas, no pyplot, no file)."""
    buf = io.BytesIO()
    save_png(fig, buf, dpi=dpi or fig.dpi)
    return buf.getvalue()


# --------------------------------------------------------------------------- helpers


def _figure(figsize=FIGSIZE, nrows: int = 1, ncols: int = 1, margins=None, **subplot_kw):
    """A pyplot-free Figure on its own fast-PNG canvas, with the house margins and axes."""
    fig = Figure(figsize=figsize, dpi=DPI)
    _PngCanvas(fig)
    fig.subplots_adjust(**{**_MARGINS, **(margins or {})})
    return fig, fig.subplots(nrows, ncols, **subplot_kw)


def _set_title(ax, text: str, pad: float = _TITLE_PAD) -> None:
    # an explicit y switches off matplotlib's automatic title placement, which measures the
    # tick labels of every sibling axis again at draw time
    ax.set_title(text, y=1.0, pad=pad)


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def _meta_line(meta: Mapping | None, lr_effective: float | None = None) -> str:
    """Second title line: dataset, parameterization, activation, depth, width, lr, seed."""
    meta = dict(meta or {})
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
    return ", ".join(parts)


def _title(what: str, meta: Mapping | None, lr_effective: float | None = None) -> str:
    line = _meta_line(meta, lr_effective)
    return f"{what}\n{line}" if line else what


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


# --------------------------------------------------------------------------- ticks

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _tick_label(v: float) -> str:
    """Plain-text label of a positive log-axis tick: 0.01, 1, 500, 10⁻⁵, 2×10⁷ (no mathtext,
    which costs a parse and a layout per label)."""
    k = math.floor(math.log10(v) + 1e-9)
    if -2 <= k <= 3:
        return f"{v:.6g}"
    mantissa = v / 10.0**k
    power = "10" + str(k).translate(_SUPERSCRIPT)
    return power if abs(mantissa - 1) < 1e-6 else f"{mantissa:.3g}×{power}"


def _log_limits(lo: float, hi: float) -> tuple[float, float]:
    """Limits (in data units) of a log axis showing [lo, hi] (positive, finite), with a
    margin, kept within [1e-305, 1e305] so that nothing downstream overflows."""
    a, b = math.log10(lo), math.log10(hi)
    if b - a < 1e-6:
        a, b = a - 0.5, b + 0.5
    pad = 0.04 * (b - a)
    return 10.0 ** max(a - pad, -305.0), 10.0 ** min(b + pad, 305.0)


def _log_ticks(lo: float, hi: float, max_ticks: int = _MAX_TICKS) -> list[float]:
    """At most ~max_ticks major tick positions within [lo, hi] (0 < lo < hi, finite)."""
    a, b = math.log10(lo), math.log10(hi)
    k0, k1 = math.ceil(a - 1e-9), math.floor(b + 1e-9)
    if k1 - k0 >= 2:  # three or more decades inside: decades, every `stride`-th
        stride = -(-(k1 - k0 + 1) // max_ticks)
        ks = range(-(-k0 // stride) * stride, k1 + 1, stride)
        if len(ks) < 2:
            ks = range(k0, k1 + 1, stride)
        return [10.0**k for k in ks]
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0)):
        ticks = [
            m * 10.0**k for k in range(k0 - 1, k1 + 1) for m in mantissas if lo <= m * 10.0**k <= hi
        ]
        if 3 <= len(ticks) <= max_ticks + 1:
            return ticks
    ticks = MaxNLocator(nbins=max_ticks - 1).tick_values(lo, hi)
    return [float(t) for t in ticks if lo <= t <= hi and t > 0]


def _linear_ticks(lo: float, hi: float, nbins: int, integer: bool) -> tuple[list, list, int]:
    """Tick positions in [lo, hi] (MaxNLocator's nice numbers), plain labels (the fewest
    significant digits that tell them apart, unicode minus) and a power of ten factored out
    of the labels (0 unless the largest |tick| is >= 1e5 or < 1e-3)."""
    ticks = MaxNLocator(nbins=nbins, integer=integer).tick_values(lo, hi)
    eps = 1e-9 * max(abs(lo), abs(hi), hi - lo)
    ticks = np.array([t for t in ticks if lo - eps <= t <= hi + eps])
    if ticks.size == 0:
        return [], [], 0
    big = float(np.max(np.abs(ticks)))
    power = math.floor(math.log10(big)) if big >= 1e5 or 0 < big < 1e-3 else 0
    positions = [float(t) for t in ticks]
    ticks = ticks / 10.0**power
    step = float(np.min(np.diff(ticks))) if ticks.size > 1 else abs(float(ticks[0])) or 1.0
    if step > 0:
        with np.errstate(over="ignore", invalid="ignore"):
            snapped = np.round(ticks / step) * step
        ticks = np.where(np.isfinite(snapped), snapped, ticks)
    for digits in range(1, 17):
        labels = [f"{t:.{digits}g}" for t in ticks]
        if len(set(labels)) == len(labels) and all(
            abs(float(s) - t) <= 1e-6 * step for s, t in zip(labels, ticks, strict=True)
        ):
            break
    labels = ["0" if float(s) == 0 else s.replace("-", "−") for s in labels]
    return positions, labels, power


def _text_extent_pt(fig, labels, index: int) -> float:
    """Largest width (index 0) or height (index 1) of tick labels, in points."""
    if not labels:
        return 0.0
    renderer = fig.canvas.get_renderer()  # the one the figure is drawn with (cached metrics)
    size = max(renderer.get_text_width_height_descent(s, _TICK_FONT, False)[index] for s in labels)
    return size * 72.0 / fig.dpi


def _ticks(ax, which: str, ticks, labels=None, *, side: str | None = None, grid: bool = True):
    """Major ticks of the x or y axis drawn as two line collections (marks, grid) and one
    text per label, instead of Matplotlib's per-tick objects (each tick is two marker lines,
    a grid line and two texts, created, copied and laid out at draw time: most of the
    rendering time of a simple plot). The axis limits must be final (they are frozen here).
    Returns the labels' extent away from the axes in points (for the axis label's pad)."""
    fig = ax.get_figure()
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(NullLocator())
    axis.set_minor_locator(NullLocator())
    lim = ax.get_xlim() if which == "x" else ax.get_ylim()
    (ax.set_xlim if which == "x" else ax.set_ylim)(*lim)  # freeze
    lo, hi = min(lim), max(lim)
    if axis.get_scale() == "log":  # within the limits up to rounding
        a, b = math.log10(lo) - 1e-9, math.log10(hi) + 1e-9
        keep = [i for i, t in enumerate(ticks) if t > 0 and a <= math.log10(t) <= b]
    else:
        eps = 1e-9 * (hi - lo)
        keep = [i for i, t in enumerate(ticks) if lo - eps <= t <= hi + eps]
    ticks = [ticks[i] for i in keep]
    labels = None if labels is None else [labels[i] for i in keep]
    box = ax.get_position()
    width_pt = box.width * fig.get_figwidth() * 72.0
    height_pt = box.height * fig.get_figheight() * 72.0
    length, pad = _TICK["length"], _TICK["pad"]
    if which == "x":
        transform = ax.get_xaxis_transform()  # x in data, y in axes fraction
        edge, sign = (1.0, 1.0) if side == "top" else (0.0, -1.0)
        d = sign * length / height_pt
        marks = [[(t, edge), (t, edge + d)] for t in ticks]
        lines = [[(t, 0.0), (t, 1.0)] for t in ticks]
        shift = ScaledTranslation(0.0, sign * (length + pad) / 72.0, fig.dpi_scale_trans)
        align = dict(ha="center", va="bottom" if sign > 0 else "top")
        where = [(t, edge) for t in ticks]
    else:
        transform = ax.get_yaxis_transform()  # x in axes fraction, y in data
        edge, sign = (1.0, 1.0) if side == "right" else (0.0, -1.0)
        d = sign * length / width_pt
        marks = [[(edge, t), (edge + d, t)] for t in ticks]
        lines = [[(0.0, t), (1.0, t)] for t in ticks]
        shift = ScaledTranslation(sign * (length + pad) / 72.0, 0.0, fig.dpi_scale_trans)
        align = dict(ha="left" if sign > 0 else "right", va="center_baseline")
        where = [(edge, t) for t in ticks]
    ax.add_collection(
        LineCollection(marks, transform=transform, clip_on=False, gid=_TICK_GID, **_TICK_LINE),
        autolim=False,
    )
    if grid:
        ax.add_collection(
            LineCollection(lines, transform=transform, gid=_TICK_GID, **_GRID_LINE), autolim=False
        )
    if labels is None:
        return 0.0
    for (x, y), s in zip(where, labels, strict=True):
        ax.text(x, y, s, transform=transform + shift, fontproperties=_TICK_FONT, **align)
    return length + pad + _text_extent_pt(fig, labels, 0 if which == "y" else 1)


def _log_scale(ax, which: str, lo: float, hi: float, **kwargs) -> tuple[float, float]:
    """Log scale with explicit limits and plain-text ticks for the positive finite range
    [lo, hi] of the x or y axis; returns (limits, label extent in points)."""
    lim = _log_limits(lo, hi)
    # limits first: autoscaling on the change of scale would overflow near 1e300
    if which == "x":
        ax.set_xlim(*lim)
        ax.set_xscale("log")
        ax.set_xlim(*lim)
    else:
        ax.set_ylim(*lim)
        ax.set_yscale("log")
        ax.set_ylim(*lim)
    ticks = _log_ticks(*lim)
    return lim, _ticks(ax, which, ticks, [_tick_label(t) for t in ticks], **kwargs)


def _linear_scale(
    ax, which: str, nbins: int = _MAX_TICKS - 1, *, integer=False, labels=True, **kwargs
) -> float:
    """Plain-text ticks for the current (autoscaled or set) limits of a linear axis; returns
    the label extent in points."""
    lim = ax.get_xlim() if which == "x" else ax.get_ylim()
    ticks, text, power = _linear_ticks(min(lim), max(lim), nbins, integer)
    extent = _ticks(ax, which, ticks, text if labels else None, **kwargs)
    if labels and power and ticks:  # the factor, where Matplotlib puts its offset text
        factor = "×10" + str(power).translate(_SUPERSCRIPT)
        fig = ax.get_figure()
        if which == "x":
            shift = ScaledTranslation(0.0, -extent / 72.0, fig.dpi_scale_trans)
            ax.text(1.0, 0.0, factor, transform=ax.transAxes + shift, ha="right", va="top")
        else:
            right = kwargs.get("side") == "right"
            shift = ScaledTranslation(0.0, 2.0 / 72.0, fig.dpi_scale_trans)
            x, ha = (1.0, "right") if right else (0.0, "left")
            ax.text(x, 1.0, factor, transform=ax.transAxes + shift, ha=ha, va="bottom")
    return extent


def _labels(ax, xlabel=None, ylabel=None, *, x_extent: float = 0.0, y_extent: float = 0.0):
    """Axis labels placed beyond the tick labels (their extents in points)."""
    if xlabel:
        ax.set_xlabel(xlabel, labelpad=x_extent + _TICK["label_gap"])
    if ylabel:
        ax.set_ylabel(ylabel, labelpad=y_extent + _TICK["label_gap"])


def _time_axis(ax, lr, xlim: tuple[float, float]) -> bool:
    """Ticks and label on top of a log step axis for t = lr * step (finite positive lr only);
    returns whether they were drawn. (Not a secondary Axes: that is a whole second Axes
    with its own ticks, for a scaled copy of the step axis.)"""
    lr = _positive_lr(lr)
    if lr is None:
        return False
    t0, t1 = xlim[0] * lr, xlim[1] * lr
    if not (math.isfinite(t0) and math.isfinite(t1) and 0 < t0 < t1):
        return False
    ticks = _log_ticks(t0, t1)
    labels = [_tick_label(t) for t in ticks]
    extent = _ticks(ax, "x", [t / lr for t in ticks], labels, side="top", grid=False)
    shift = ScaledTranslation(0.0, (extent + _TICK["label_gap"]) / 72.0, ax.figure.dpi_scale_trans)
    ax.text(
        0.5,
        1.0,
        f"t = lr × step  (lr = {lr:g})",
        transform=ax.transAxes + shift,
        ha="center",
        va="bottom",
    )
    return True


# Legend locations in the order Matplotlib's loc="best" tries them.
_LEGEND_LOCS = (
    "upper right",
    "upper left",
    "lower left",
    "lower right",
    "center left",
    "center right",
    "lower center",
    "upper center",
    "center",
)


def _data_points(ax) -> np.ndarray:
    """(K, 2) points, in axes fraction, along the lines and at the markers drawn in ``ax``
    (line segments sampled every ~1 % of the axes)."""
    to_axes = ax.transAxes.inverted()
    chunks = [np.empty((0, 2))]
    for line in ax.get_lines():
        pts = to_axes.transform(line.get_transform().transform(line.get_xydata()))
        pts = pts[np.isfinite(pts).all(axis=1)]
        if len(pts) > 1:
            arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
            if arc[-1] > 0:
                at = np.linspace(0.0, arc[-1], int(min(2000, max(len(pts), arc[-1] / 0.01))))
                pts = np.column_stack(
                    [np.interp(at, arc, pts[:, 0]), np.interp(at, arc, pts[:, 1])]
                )
        chunks.append(pts)
    for coll in ax.collections:
        if coll.get_gid() == _TICK_GID:
            continue
        offsets = np.asarray(coll.get_offsets(), dtype=float)
        if offsets.size:
            pts = to_axes.transform(coll.get_offset_transform().transform(offsets))
            chunks.append(pts[np.isfinite(pts).all(axis=1)])
    return np.concatenate(chunks)


def _legend(ax, fontsize="small", ncol: int = 1):
    """``ax.legend`` at the first of Matplotlib's standard locations that covers the fewest
    drawn points. Matplotlib's ``loc="best"`` does the same at draw time by laying the legend
    out and testing every path (about a third of a legend's drawing time); here the legend's
    size is estimated from its labels' text metrics, and the data are sampled points."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    fig = ax.get_figure()
    prop = FontProperties(size=fontsize)
    em = prop.get_size_in_points()
    renderer = fig.canvas.get_renderer()
    to_pt = 72.0 / fig.dpi
    text_w = max(renderer.get_text_width_height_descent(t, prop, False)[0] for t in labels) * to_pt
    text_h = renderer.get_text_width_height_descent("lp", prop, False)[1] * to_pt
    box = ax.get_position()
    ax_w, ax_h = box.width * fig.get_figwidth() * 72.0, box.height * fig.get_figheight() * 72.0
    # Matplotlib's legend geometry (rcParams legend.*, in font sizes): borderpad 0.4,
    # labelspacing 0.5, handlelength 2, handletextpad 0.8, columnspacing 2, borderaxespad 0.5
    while True:  # fewer columns while too wide for the axes
        w_pt = ncol * (2.8 * em + text_w) + (ncol - 1) * 2.0 * em + 0.8 * em
        if ncol == 1 or w_pt + 1.0 * em <= ax_w:
            break
        ncol -= 1
    rows = -(-len(labels) // ncol)
    h_pt = rows * text_h + (rows - 1) * 0.5 * em + 0.8 * em
    w, h = w_pt / ax_w, h_pt / ax_h
    px, py = 0.5 * em / ax_w, 0.5 * em / ax_h
    xs = {"left": px, "center": 0.5 - w / 2, "right": 1.0 - px - w}
    ys = {"lower": py, "center": 0.5 - h / 2, "upper": 1.0 - py - h}
    pts = _data_points(ax)
    best, fewest = _LEGEND_LOCS[0], math.inf
    for loc in _LEGEND_LOCS:
        v, _, hpos = loc.partition(" ")
        x0, y0 = xs[hpos or v], ys[v]
        inside = (
            (pts[:, 0] >= x0) & (pts[:, 0] <= x0 + w) & (pts[:, 1] >= y0) & (pts[:, 1] <= y0 + h)
        )
        count = int(np.count_nonzero(inside))
        if count < fewest:
            best, fewest = loc, count
            if count == 0:
                break
    return ax.legend(loc=best, fontsize=fontsize, ncol=ncol)


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
        x_extent = _linear_scale(ax, "x", labels=bool(xlabel))
        y_extent = _linear_scale(ax, "y")
        _labels(ax, xlabel, "f(x)", x_extent=x_extent, y_extent=y_extent)
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
    fig, (ax, dax) = _figure(
        (7.0, 5.6),
        2,
        1,
        margins=dict(bottom=0.09, top=0.88, hspace=0.08),
        sharex=True,
        height_ratios=[3, 1.3],
    )
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
    x_extent = _linear_scale(dax, "x")
    y_extent = _linear_scale(dax, "y", nbins=2)
    _labels(dax, "x", "model − network", x_extent=x_extent, y_extent=y_extent)
    _legend(dax, fontsize="x-small", ncol=min(3, len(curves)))
    return fig


# --------------------------------------------------------------- per-step diagnostics


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
    cannot be drawn and are dropped), t = lr x step ticks on top."""
    fig, ax = _figure(margins=_HISTORY_MARGINS)
    steps = np.asarray(steps, dtype=float)
    good_step = np.isfinite(steps) & (steps > 0)
    xs, ys = [], []
    for name, label, style in series:
        values = history.get(name)
        if values is None:
            continue
        y = np.asarray(values, dtype=float)
        if y.shape != steps.shape:
            continue
        y, note = _clean(y, positive=True, report_nan=False)
        keep = np.isfinite(y) & good_step
        if not keep.any():
            continue
        ax.plot(steps[keep], y[keep], label=label + note, marker=".", ms=4, **style)
        xs.append(steps[keep])
        ys.append(y[keep])
    if xs and hline is not None:
        value, label = hline
        v, note = _clean(np.array([value], dtype=float), positive=True, report_nan=False)
        if np.isfinite(v[0]):
            ax.axhline(v[0], color="0.5", ls=":", lw=1.2, label=label + note)
            ys.append(v)
    if xs:
        xlim, x_extent = _log_scale(ax, "x", *_finite_range(xs))
        _, y_extent = _log_scale(ax, "y", *_finite_range(ys))
        _legend(ax)
        on_top = _time_axis(ax, lr, xlim)
        _set_title(ax, title, _HISTORY_TITLE_PAD if on_top else _TITLE_PAD)
    else:
        x_extent, y_extent = _linear_scale(ax, "x"), _linear_scale(ax, "y")
        _no_data(ax)
        _set_title(ax, title)
    _labels(ax, "step (log scale)", ylabel, x_extent=x_extent, y_extent=y_extent)
    return fig


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
    """
    series = [
        ("kernel_drift", "kernel drift, train", dict(color=_C[0], ls="-")),
        ("kernel_drift_test", "kernel drift, test", dict(color=_C[1], ls="-")),
        ("kernel_distance", "kernel distance, train", dict(color=_C[0], ls="--")),
        ("kernel_distance_test", "kernel distance, test", dict(color=_C[1], ls="--")),
        ("param_movement", "relative parameter movement", dict(color="0.4", ls=":")),
    ]
    return _history_figure(
        steps,
        history,
        series,
        ylabel="relative change from init",
        title=_title("NTK drift ‖Θ_t−Θ_0‖/‖Θ_0‖ and distance 1−cos(Θ_t,Θ_0)", meta, lr),
        lr=lr,
    )


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
        _, y_extent = _log_scale(ax, "y", *_finite_range(ys))
        _legend(ax)
    else:
        y_extent = _linear_scale(ax, "y")
        _no_data(ax)
    x_extent = _linear_scale(ax, "x", integer=True)
    _labels(
        ax,
        "eigenvalue index (descending)",
        "eigenvalue λ of Θ on the training inputs",
        x_extent=x_extent,
        y_extent=y_extent,
    )
    if skipped:
        ax.text(
            0.01,
            0.01,
            "not drawn (non-finite entries): " + ", ".join(skipped),
            transform=ax.transAxes,
            fontsize="small",
            color="0.3",
        )
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
    fig = Figure(figsize=(12.0, 4.3), dpi=DPI)
    _PngCanvas(fig)
    # panel boxes (left, bottom, width, height) and colour-bar boxes, figure fractions:
    # [init][end]|bar|   [difference]|bar|; square panels (0.2222 x 12 in = 0.62 x 4.3 in)
    boxes = [(0.05, 0.13, 0.2222, 0.62), (0.325, 0.13, 0.2222, 0.62), (0.68, 0.13, 0.2222, 0.62)]
    bars = [(0.557, 0.13, 0.012, 0.62), (0.912, 0.13, 0.012, 0.62)]
    axes = [fig.add_axes(b) for b in boxes]
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
        (k0, "Θ at init" + note0, dict(cmap="viridis", vmin=vmin, vmax=vmax)),
        (k1, "Θ at the end" + note1, dict(cmap="viridis", vmin=vmin, vmax=vmax)),
        (diff, "Θ_end − Θ_init", dict(cmap="RdBu_r", vmin=-dmax, vmax=dmax)),
    )
    images = []
    for ax, (mat, name, cm) in zip(axes, panels, strict=True):
        images.append(ax.imshow(mat, **cm, **kw))
        ax.set_title(name, y=1.0, pad=4.0, fontsize="medium")
        x_extent = _linear_scale(ax, "x", nbins=4, integer=True, grid=False)
        y_extent = _linear_scale(ax, "y", nbins=4, integer=True, grid=False)
        _labels(ax, "training point j", "training point i", x_extent=x_extent, y_extent=y_extent)
    for box, image, label in zip(bars, images[1:], ("Θ(x_i, x_j)", "difference"), strict=True):
        cb = fig.colorbar(image, cax=fig.add_axes(box, label="<colorbar>"))
        cb.set_ticks([])
        extent = _linear_scale(cb.ax, "y", side="right", grid=False)
        cb.set_label(label, labelpad=extent + _TICK["label_gap"])
    fig.suptitle(_title(f"Empirical NTK on the training inputs (drift {rel:.3g})", meta))
    return fig


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
    x_extent, y_extent = _linear_scale(ax, "x"), _linear_scale(ax, "y")
    _labels(ax, "target y", "prediction f(x)", x_extent=x_extent, y_extent=y_extent)
    at = f" at step {step}" if step is not None else ""
    _set_title(ax, _title(f"Test predictions vs targets{at}", meta))
    return fig


# ------------------------------------------------------------------------- the run set


def expected_figure_names(record: Mapping) -> list[str]:
    """Names (no ``.png``) :func:`run_figures` produces for ``record`` (figures contract)."""
    d = np.asarray(record["x_train"]).reshape(len(record["x_train"]), -1).shape[1]
    names: list[str] = []
    if d == 1:
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
    return names


def figure_builders(record: Mapping) -> dict[str, Callable[[], Figure]]:
    """name -> zero-argument function drawing that figure, for exactly the names of
    :func:`expected_figure_names` (lets a caller build, save and release the figures one at
    a time, or time them; :func:`run_figures` calls them all)."""
    meta = dict(record.get("meta") or {})
    x_train, y_train = record["x_train"], record["y_train"]
    x_test, y_test = record["x_test"], record.get("y_test")
    steps = np.asarray(record["steps"])
    snaps = record.get("snapshot_steps")
    lr_eff = record.get("lr_effective", record.get("lr"))
    lr_eff = None if lr_eff is None else float(lr_eff)
    f_test = np.asarray(record["f_test"], dtype=float)
    f_lin = np.asarray(record["f_lin_test"], dtype=float)
    f_kernel = np.asarray(record["f_kernel_test"], dtype=float)
    f_analytic = _array_or_none(record.get("f_analytic_test"))
    km_emp = np.asarray(record["km_empirical_test"], dtype=float)
    km_an = _array_or_none(record.get("km_analytic_test"))
    history = record.get("history") or {}
    last = steps.size - 1
    i0 = _step_index(steps, 0)
    i8 = _step_index(steps, int(record.get("fig8_step", steps[last])))
    an8 = None if f_analytic is None else f_analytic[i8]
    data = (x_train, y_train, x_test)
    common = dict(y_test=y_test, meta=meta)
    n_train = int(record.get("n_train", np.asarray(x_train).shape[0]))

    table: dict[str, Callable[[], Figure]] = {
        "fig1_data_init": lambda: plot_data_init(*data, f_test[i0], **common),
        "fig2_training": lambda: plot_training_snapshots(
            *data, f_test, steps, snaps, lr=lr_eff, **common
        ),
        "fig3_kernel_machine_empirical": lambda: plot_kernel_machine(
            *data, km_emp, kernel="empirical", **common
        ),
        "fig4_kernel_machine_analytic": lambda: plot_kernel_machine(
            *data, km_an, kernel="analytic", **common
        ),
        "fig5_net_vs_kernel_machines": lambda: plot_net_vs_kernel_machines(
            *data, f_test[last], km_emp, km_an, step=int(steps[last]), **common
        ),
        "fig6_kernel_dynamics_empirical": lambda: plot_kernel_dynamics(
            *data, f_kernel, steps, snaps, kernel="empirical", lr=lr_eff, **common
        ),
        "fig7_kernel_dynamics_analytic": lambda: plot_kernel_dynamics(
            *data, f_analytic, steps, snaps, kernel="analytic", lr=lr_eff, **common
        ),
        "fig8_net_vs_kernel_dynamics": lambda: plot_net_vs_kernel_dynamics(
            *data,
            int(steps[i8]),
            f_test[i8],
            f_lin[i8],
            f_kernel[i8],
            an8,
            lr=lr_eff,
            **common,
        ),
        "drift": lambda: plot_drift(steps, history, lr=lr_eff, meta=meta),
        "losses": lambda: plot_losses(steps, history, lr=lr_eff, meta=meta),
        "linearization_error": lambda: plot_linearization_error(
            steps, history, lr=lr_eff, meta=meta
        ),
        "ntk_spectrum": lambda: plot_ntk_spectrum(
            record["ntk_init"],
            record["ntk_final"],
            record.get("ntk_analytic"),
            n_train=n_train,
            lr_effective=lr_eff,
            meta=meta,
        ),
        "ntk_heatmaps": lambda: plot_ntk_heatmaps(
            record["ntk_init"], record["ntk_final"], meta=meta
        ),
        "pred_vs_target": lambda: plot_pred_vs_target(
            y_test,
            f_test[last],
            f_lin[last],
            f_kernel[last],
            None if f_analytic is None else f_analytic[last],
            step=int(steps[last]),
            meta=meta,
        ),
    }
    return {name: table[name] for name in expected_figure_names(record)}


def run_figures(record: Mapping) -> dict[str, Figure]:
    """All figures for one run (figures contract in the design notes): name -> Figure.

    1-D inputs give the paper's fig1..fig8 (fig4 only with ``km_analytic_test``, fig7 only
    with ``f_analytic_test``); every run gives drift, losses, linearization_error,
    ntk_spectrum and ntk_heatmaps; d > 1 with ``y_test`` adds pred_vs_target. Time axes use
    ``lr_effective`` (the learning rate the dynamics actually use). Exactly the names of
    :func:`expected_figure_names`. Each Figure has its own canvas; ``fig.savefig(path)``
    writes a PNG with the fast settings of :func:`save_png`.
    """
    return {name: build() for name, build in figure_builders(record).items()}
