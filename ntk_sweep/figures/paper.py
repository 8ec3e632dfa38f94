"""The paper's figures of a run: figs. 1-8 (functions of x on the 1-D test inputs), the
kernel drift (the paper's claim, measured) and, for d > 1, predictions vs targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ntk_sweep.figure_style import fit_margins
from ntk_sweep.figures.common import (
    _C,
    _DATA_STYLE,
    _STYLE,
    _clean,
    _col,
    _draw_series,
    _figure,
    _finite_range,
    _history_figure,
    _legend,
    _log_scale,
    _no_data,
    _off_note,
    _positive_lr,
    _set_title,
    _snapshot_indices,
    _time_axis,
    _title,
    _view,
)

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
    fit_margins(fig)
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
    fit_margins(fig)
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
    fit_margins(fig)
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
    fit_margins(fig)
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
    fit_margins(fig, hspace=0.12)
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
    fit_margins(fig, hspace=0.12)
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
    fit_margins(fig)
    return fig
