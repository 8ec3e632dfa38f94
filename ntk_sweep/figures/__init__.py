"""Figures for one run: the paper's eight 1-D figures plus diagnostics for every dataset.

Modules: :mod:`.paper` (figs. 1-8, the kernel drift, predictions vs targets),
:mod:`.diagnostics` (losses, linearisation error, NTK spectrum and heatmaps), :mod:`.common`
(what both draw with), :mod:`.sets` (which figures a run draws); the style all figures of
ntk-sweep share, the aggregate's too, is :mod:`ntk_sweep.figure_style`. Everything callers
use is importable from here.

Pure plotting: every function takes plain NumPy arrays (and, for :func:`run_figures`, the
``record`` dict of the figures contract) and returns a :class:`matplotlib.figure.Figure`.
Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, never through
``pyplot``: no global figure registry, no interactive backend, nothing to close, safe in
worker processes and on machines without a screen. No layout engine: fixed margins in inches
(:func:`ntk_sweep.figure_style.fit_margins`; room on top for the title's lines, a secondary t
axis and an offset text), so that ``savefig`` draws a figure once and measures no text
(constrained layout cost ~40 % of the figure time); tests check that no text leaves the figure
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

from ntk_sweep.figure_style import DPI, FIGSIZE, figure_to_png_bytes, save_png

# _TITLE_CHARS: where titles wrap (tests/test_figures.py measures against it)
from ntk_sweep.figures.common import _TITLE_CHARS, BOUND  # noqa: F401
from ntk_sweep.figures.diagnostics import (
    plot_linearization_error,
    plot_losses,
    plot_ntk_heatmaps,
    plot_ntk_spectrum,
)
from ntk_sweep.figures.paper import (
    KERNEL_DIAGNOSTICS,
    plot_data_init,
    plot_drift,
    plot_kernel_dynamics,
    plot_kernel_machine,
    plot_net_vs_kernel_dynamics,
    plot_net_vs_kernel_machines,
    plot_pred_vs_target,
    plot_training_snapshots,
)
from ntk_sweep.figures.sets import (
    FIGURE_SETS,
    PAPER_FIGURES,
    expected_figure_names,
    figure_builders,
    run_figures,
)

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
