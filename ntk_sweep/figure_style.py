"""The one figure policy of ntk-sweep, shared by the run figures (:mod:`ntk_sweep.figures`)
and the aggregate's figures (:mod:`ntk_sweep.aggregate.plots`). Importing it does not import
Matplotlib (the aggregate imports Matplotlib only when it draws).

- Figures: ``matplotlib.figure.Figure`` on its own Agg canvas (:func:`new_figure`), never
  ``pyplot``: no global registry, no interactive backend, nothing to close, safe in worker
  processes and on machines without a screen.
- Size and dpi: a run figure is :data:`FIGSIZE` at :data:`DPI` (630 x 405 px; taller where it
  has more panels); an aggregate figure is a grid of panels at :data:`GRID_DPI`, at most
  :data:`MAX_WIDTH_IN` wide (1600 px).
- Margins: a run figure has fixed margins in inches (:func:`fit_margins`: room on top for the
  title's lines, a secondary t axis and an offset text), so that ``savefig`` draws once and
  measures no text (constrained layout cost ~40 % of the figure time). An aggregate grid,
  whose number of panels, legend rows and title lines vary with the sweep, uses Matplotlib's
  constrained layout (``new_figure(..., layout="constrained")``); it is drawn once per sweep.
- Clipping: no text leaves the figure (:func:`text_outside`, checked by the tests of both).
- Files: PNG at the figure's dpi (:func:`save_png`, :func:`figure_to_png_bytes`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

# Run figures: 7 x 4.5 in at 90 dpi: 630 x 405 px, 10 pt text about 12 px high, readable in
# the MLflow artifact view.
FIGSIZE = (7.0, 4.5)
DPI = 90
# Aggregate figures: grids of panels at GRID_DPI, at most MAX_WIDTH_IN wide (1600 px).
GRID_DPI = 100
MAX_WIDTH_IN = 16.0


def new_figure(figsize=FIGSIZE, dpi: float = DPI, layout: str | None = None):
    """A pyplot-free ``Figure`` on its own Agg canvas; ``layout=None``: no layout engine (the
    run figures' margins are :func:`fit_margins`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


# --------------------------------------------------------------------------- margins


# Fixed margins, in inches, for 10 pt text (titles "medium" = 10 pt). Sized once for the
# widest labels the figures draw (y tick labels such as "−0.025" or "10⁻³⁰⁵" plus the axis
# label on the left; tick labels plus the axis label below), so that no layout engine has to
# measure text (constrained layout measured every label and cost a second draw per savefig).
MARGIN_LEFT = 0.92
MARGIN_RIGHT = 0.3
MARGIN_BOTTOM = 0.62
# above the axes: title pad + one title line (1.2 x 10 pt) per line, and a little air
TITLE_PAD, TITLE_LINE, TOP_AIR = 6 / 72, 12.5 / 72, 0.06
# a secondary x axis on top (t = lr x step): its tick labels and label
TOP_AXIS = 0.5
# a twin y axis on the right: its tick labels and label
RIGHT_AXIS = 0.62


def text_lines(text: str) -> int:
    """The number of lines of ``text`` (0 for none)."""
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


def fit_margins(fig, *, hspace: float = 0.0) -> None:
    """Fixed figure margins from what the figure shows, without drawing it: room on top for
    the most title lines of an axes (or the suptitle) and for a secondary x axis there, on the
    right for a twin y axis; ``hspace`` (inches) between rows of subplots."""
    width, height = fig.get_size_inches()
    axes = fig.axes
    lines = max([text_lines(fig.get_suptitle())] + [text_lines(ax.get_title()) for ax in axes])
    top = TOP_AIR + (TITLE_PAD + lines * TITLE_LINE if lines else 0.0)
    if any(ax.child_axes for ax in axes):
        top += TOP_AXIS
    elif any(_y_offset_text(ax) for ax in axes if ax.get_title()):
        top += TITLE_LINE  # Matplotlib lifts the title above the offset text ("1e291")
    right = MARGIN_RIGHT
    if any(ax.get_ylabel() and ax.yaxis.get_label_position() == "right" for ax in axes):
        right += RIGHT_AXIS
    specs = [ax.get_subplotspec() for ax in axes]
    rows = max((spec.get_gridspec().nrows for spec in specs if spec is not None), default=1)
    inner = height - top - MARGIN_BOTTOM
    fig.subplots_adjust(
        left=MARGIN_LEFT / width,
        right=1 - right / width,
        bottom=MARGIN_BOTTOM / height,
        top=1 - top / height,
        hspace=hspace * rows / max(inner - hspace * (rows - 1), 1e-3),
    )


# --------------------------------------------------------------------------- saving


def save_png(
    fig,
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


def figure_to_png_bytes(fig, dpi: float | None = None) -> bytes:
    """Render ``fig`` to PNG bytes (Agg canvas, no pyplot, no file)."""
    buf = io.BytesIO()
    save_png(fig, buf, dpi=dpi or fig.dpi)
    return buf.getvalue()


# --------------------------------------------------------------------------- clipping


def text_outside(fig) -> list[str]:
    """The text a drawn figure shows (titles, suptitle, axis and tick labels, offset texts,
    legends, notes) that extends beyond the figure, as "what (x0, y0, x1, y1)" in pixels.
    Draw the figure first (``fig.canvas.draw()`` or ``savefig``)."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    inside = fig.bbox.padded(0.5)  # half a pixel of rounding

    def out(bbox) -> bool:
        if bbox is None or bbox.width == bbox.height == 0:
            return False
        return (
            bbox.x0 < inside.x0 or bbox.y0 < inside.y0 or bbox.x1 > inside.x1 or bbox.y1 > inside.y1
        )

    bad, tick_labels = [], set()
    axes = list(fig.axes) + [c for ax in fig.axes for c in ax.child_axes]  # + secondary axes
    for ax in (a for a in axes if a.get_visible()):  # a hidden spare panel of a grid is not drawn
        for axis in (ax.xaxis, ax.yaxis):
            # tick labels: the axis' tight box covers exactly those drawn (a stale Tick
            # outside the view is not drawn), with the axis label and offset text
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_labels |= {id(tick.label1), id(tick.label2)}
            if out(axis.get_tightbbox(renderer)):
                bad.append(f"{ax.get_label() or 'axes'} {axis.axis_name}-axis tick labels")
    for text in fig.findobj(Text):
        if id(text) in tick_labels or not text.get_visible() or not text.get_text():
            continue
        box = text.get_window_extent(renderer)
        if out(box):
            bad.append(f"{text.get_text()!r} {tuple(round(v) for v in box.extents)}")
    return bad
