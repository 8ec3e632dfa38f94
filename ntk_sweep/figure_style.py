"""What every figure of ntk-sweep shares, run figures (:mod:`ntk_sweep.figures`) and aggregate
figures (:mod:`ntk_sweep.aggregate.plots`): the check that no text leaves the figure
(:func:`text_outside`), used by their tests. Matplotlib is imported inside the functions."""

from __future__ import annotations


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
