"""Figures for one run: the paper's eight 1-D figures plus diagnostics for every dataset.

Pure plotting: every function takes plain NumPy arrays (and, for :func:`run_figures`, the
``record`` dict of the figures contract) and returns a :class:`matplotlib.figure.Figure`.
Figures are built with ``matplotlib.figure.Figure`` directly, never through ``pyplot``: no
global figure registry, no interactive backend, nothing to close, safe in worker processes
and on machines without a screen. Saving is the caller's job (``fig.savefig(path)``).

Style shared by all figures: 7 x 4.5 in at 110 dpi, fixed margins, grid, legend,
labelled axes; time axes are in GD steps with a secondary axis ``t = lr * step`` (lr the
effective learning rate, the one the dynamics use); titles carry dataset,
parameterization, activation, depth, width, lr and seed from ``record["meta"]``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator

__all__ = [
    "FIGSIZE",
    "DPI",
    "PNG_SAVE_KWARGS",
    "expected_figure_names",
    "figure_to_png_bytes",
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
DPI = 110
# Keyword arguments for ``fig.savefig(path, **PNG_SAVE_KWARGS)``: zlib level 1 instead of 6
# saves ~15 % of the rendering time of a run's figures for ~6 % larger files.
PNG_SAVE_KWARGS = {"format": "png", "pil_kwargs": {"compress_level": 1}}

# One colour / line style per model, the same in every figure.
_STYLE = {
    "net": dict(color="C0", ls="-", lw=2.2),
    "lin": dict(color="C1", ls="--", lw=1.8),
    "kernel": dict(color="C2", ls=":", lw=2.2),
    "analytic": dict(color="C3", ls="-.", lw=1.8),
    "target": dict(color="0.55", ls="--", lw=1.2),
}
_DATA_STYLE = dict(color="k", marker="o", s=36, zorder=5, edgecolors="w", linewidths=0.8)


# --------------------------------------------------------------------------- helpers


# Fixed margins (fractions of the figure) instead of a layout engine: constrained layout
# measures every tick label twice per savefig and roughly doubles the rendering time of a
# figure, which matters with a dozen figures per run (issue 4: figures < 20 % of a run).
# The content is known (two-line title, short axis labels), so fixed margins fit.
_MARGINS = dict(left=0.115, right=0.97, bottom=0.11, top=0.85)
# Per-step (log-log) figures: room for the secondary "t = lr x step" axis above the plot
# and for wide log tick labels such as 6x10^-1 on the left.
_HISTORY_MARGINS = dict(top=0.77, left=0.13)


def _new_figure(figsize=FIGSIZE, **margins):
    """A pyplot-free Figure with one Axes and the house margins."""
    fig = Figure(figsize=figsize, dpi=DPI)
    fig.subplots_adjust(**{**_MARGINS, **margins})
    return fig, fig.subplots()


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


def _time_axis(ax, lr: float | None) -> None:
    """Secondary x axis on top: t = lr * step (only for a finite positive lr)."""
    if lr is None or not np.isfinite(lr) or lr <= 0:
        return
    lr = float(lr)
    sec = ax.secondary_xaxis("top", functions=(lambda s: s * lr, lambda t: t / lr))
    sec.xaxis.set_minor_locator(NullLocator())  # minor ticks are costly and add nothing here
    sec.set_xlabel(f"t = lr × step  (lr = {lr:g})")


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


def _plot_data(ax, x_train, y_train, x_test=None, y_test=None) -> None:
    """Training points (and the test target curve, where there is one) on a 1-D axis."""
    if x_test is not None and y_test is not None:
        xs = _col(x_test)
        order = np.argsort(xs, kind="stable")
        ax.plot(xs[order], np.asarray(y_test, float)[order], label="target", **_STYLE["target"])
    ax.scatter(_col(x_train), np.asarray(y_train, float), label="training data", **_DATA_STYLE)


def _finish_1d(ax, title: str) -> None:
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def _set_log(ax, *, x: bool = True, y: bool = True) -> None:
    """Log scale(s) with minor ticks at 2x and 5x only: each tick is several artists, so the
    default eight minor ticks per decade cost noticeable rendering time and clutter labels."""
    if x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    if y:
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))


def _no_data(ax, text: str = "no finite values to plot") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def figure_to_png_bytes(fig: Figure, dpi: float | None = None) -> bytes:
    """Render ``fig`` to PNG bytes (Agg canvas, no pyplot, no file)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi or fig.dpi, **PNG_SAVE_KWARGS)
    return buf.getvalue()


# ------------------------------------------------------------------ 1-D (paper) figures


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
    fig, ax = _new_figure()
    xs = _col(x_test)
    order = np.argsort(xs, kind="stable")
    ax.plot(xs[order], np.asarray(f0_test, float)[order], label="network at init", **_STYLE["net"])
    _plot_data(ax, x_train, y_train, x_test, y_test)
    _finish_1d(ax, _title("Data and untrained network (step 0)", meta))
    return fig


def _plot_snapshots(
    x_train, y_train, x_test, f_steps, steps, snapshot_steps, *, lr, y_test, meta, what, label
) -> Figure:
    fig, ax = _new_figure()
    steps = np.asarray(steps)
    f_steps = np.asarray(f_steps, dtype=float)
    xs = _col(x_test)
    order = np.argsort(xs, kind="stable")
    idx = _snapshot_indices(steps, snapshot_steps)
    cmap = colormaps["viridis"]
    for k, i in enumerate(idx):
        colour = cmap(0.9 * k / max(len(idx) - 1, 1))
        step = int(steps[i])
        tag = f"{label} step {step}"
        if lr is not None and np.isfinite(lr) and lr > 0:
            tag += f" (t={lr * step:g})"
        ax.plot(xs[order], f_steps[i][order], color=colour, lw=1.8, label=tag)
    _plot_data(ax, x_train, y_train, x_test, y_test)
    _finish_1d(ax, _title(what, meta, lr))
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
    fig, ax = _new_figure()
    xs = _col(x_test)
    order = np.argsort(xs, kind="stable")
    style = _STYLE["kernel" if kernel == "empirical" else "analytic"]
    name = "initial empirical NTK" if kernel == "empirical" else "analytic NTK"
    ax.plot(xs[order], np.asarray(km_test, float)[order], label=f"kernel machine, {name}", **style)
    _plot_data(ax, x_train, y_train, x_test, y_test)
    _finish_1d(ax, _title(f"Kernel machine with the {name}", meta))
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
    fig, ax = _new_figure()
    xs = _col(x_test)
    order = np.argsort(xs, kind="stable")
    net_label = "trained network" + (f" (step {step})" if step is not None else "")
    ax.plot(xs[order], np.asarray(f_net, float)[order], label=net_label, **_STYLE["net"])
    ax.plot(
        xs[order],
        np.asarray(km_empirical, float)[order],
        label="kernel machine, empirical NTK",
        **_STYLE["kernel"],
    )
    if km_analytic is not None:
        ax.plot(
            xs[order],
            np.asarray(km_analytic, float)[order],
            label="kernel machine, analytic NTK",
            **_STYLE["analytic"],
        )
    _plot_data(ax, x_train, y_train, x_test, y_test)
    _finish_1d(ax, _title("Trained network vs kernel machines", meta))
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
    fig = Figure(figsize=(7.0, 5.6), dpi=DPI)
    fig.subplots_adjust(**{**_MARGINS, "bottom": 0.09, "top": 0.88, "hspace": 0.08})
    ax, dax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    xs = _col(x_test)
    order = np.argsort(xs, kind="stable")
    net = np.asarray(f_net, float)[order]
    curves = [
        ("linearised network", "linearised", "lin", f_lin),
        ("kernel dynamics, empirical NTK", "kernel (emp.)", "kernel", f_kernel),
    ]
    if f_analytic is not None:
        curves.append(
            ("kernel dynamics, analytic NTK", "kernel (analytic)", "analytic", f_analytic)
        )
    ax.plot(xs[order], net, label="network", **_STYLE["net"])
    for label, _, key, f in curves:
        ax.plot(xs[order], np.asarray(f, float)[order], label=label, **_STYLE[key])
    _plot_data(ax, x_train, y_train, x_test, y_test)
    ax.set_ylabel("f(x)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    t = f", t={lr * step:g}" if lr is not None and np.isfinite(lr) and lr > 0 else ""
    ax.set_title(_title(f"Network vs kernel dynamics at step {step}{t}", meta, lr))
    for _, short, key, f in curves:
        diff = np.asarray(f, float)[order] - net
        finite = diff[np.isfinite(diff)]
        mx = f"{np.max(np.abs(finite)):.2g}" if finite.size else "nan"
        dax.plot(xs[order], diff, label=f"{short}: max |diff| {mx}", **{**_STYLE[key], "lw": 1.4})
    dax.axhline(0.0, color="0.3", lw=0.8)
    dax.margins(y=0.45)  # headroom so the one-row legend does not hide the curves
    dax.set_xlabel("x")
    dax.set_ylabel("model − net")
    dax.grid(True, alpha=0.3)
    dax.legend(fontsize="x-small", ncol=len(curves))
    return fig


# --------------------------------------------------------------- per-step diagnostics


def _history_lines(
    ax,
    steps: np.ndarray,
    history: Mapping[str, np.ndarray],
    series: Sequence[tuple[str, str, dict]],
    *,
    positive_only: bool,
) -> int:
    """Plot the named history series present; return how many were drawn with data."""
    steps = np.asarray(steps, dtype=float)
    drawn = 0
    for name, label, style in series:
        if name not in history or history[name] is None:
            continue
        y = np.asarray(history[name], dtype=float)
        if y.shape != steps.shape:
            continue
        keep = np.isfinite(y) & np.isfinite(steps)
        if positive_only:
            keep &= (y > 0) & (steps > 0)
        if not keep.any():
            continue
        ax.plot(steps[keep], y[keep], label=label, marker=".", ms=4, **style)
        drawn += 1
    return drawn


def _finish_history(ax, drawn: int, ylabel: str, title: str, lr) -> None:
    """Log-log axes, labels, legend and the secondary time axis of a per-step figure."""
    ax.set_xlabel("step (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        _set_log(ax)
        ax.legend(fontsize="small")
    else:
        _no_data(ax)
    _time_axis(ax, lr)


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
    fig, ax = _new_figure(**_HISTORY_MARGINS)
    series = [
        ("kernel_drift", "kernel drift, train", dict(color="C0", ls="-")),
        ("kernel_drift_test", "kernel drift, test", dict(color="C1", ls="-")),
        ("kernel_distance", "kernel distance, train", dict(color="C0", ls="--")),
        ("kernel_distance_test", "kernel distance, test", dict(color="C1", ls="--")),
        ("param_movement", "relative parameter movement", dict(color="0.4", ls=":")),
    ]
    drawn = _history_lines(ax, steps, history, series, positive_only=True)
    _finish_history(
        ax,
        drawn,
        "relative change from init",
        _title("NTK drift ‖Θ_t−Θ_0‖/‖Θ_0‖ and distance 1−cos(Θ_t,Θ_0)", meta, lr),
        lr,
    )
    return fig


def plot_losses(
    steps: np.ndarray,
    history: Mapping[str, np.ndarray],
    *,
    lr: float | None = None,
    meta: Mapping | None = None,
) -> Figure:
    """Training loss of network, linearised model and kernel prediction, and test loss, log-log.

    Log-log like the other per-step figures (a symlog step axis would show step 0 but breaks
    the secondary t = lr x step axis, which matplotlib maps linearly). Step 0 and
    non-positive values are dropped; the initial training loss is drawn as a horizontal line.
    """
    fig, ax = _new_figure(**_HISTORY_MARGINS)
    series = [
        ("loss", "network, train", _STYLE["net"]),
        ("loss_lin", "linearised, train", _STYLE["lin"]),
        ("loss_kernel", "kernel dynamics, train", _STYLE["kernel"]),
        ("test_loss", "network, test", dict(color="C4", ls="-", lw=1.6)),
    ]
    drawn = _history_lines(ax, steps, history, series, positive_only=True)
    steps = np.asarray(steps, dtype=float)
    loss = history.get("loss")
    loss = None if loss is None else np.asarray(loss, dtype=float)
    if drawn and loss is not None and loss.shape == steps.shape:
        at0 = loss[(steps == 0) & np.isfinite(loss) & (loss > 0)]
        if at0.size:
            ax.axhline(at0[0], color="0.5", ls=":", lw=1.2, label="network, train, at step 0")
    _finish_history(
        ax,
        drawn,
        "loss (1/2N) Σ(f − y)²",
        _title("Losses", meta, lr),
        lr,
    )
    return fig


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
    fig, ax = _new_figure(**_HISTORY_MARGINS)
    series = [
        ("lin_error_train", "network − linearised, train", dict(color="C1", ls="-")),
        ("lin_error_test", "network − linearised, test", dict(color="C1", ls="--")),
        ("kernel_pred_error_train", "network − kernel (emp.), train", dict(color="C2", ls="-")),
        ("kernel_pred_error_test", "network − kernel (emp.), test", dict(color="C2", ls="--")),
        (
            "analytic_pred_error_test",
            "network − kernel (analytic), test",
            dict(color="C3", ls="--"),
        ),
    ]
    drawn = _history_lines(ax, steps, history, series, positive_only=True)
    _finish_history(
        ax,
        drawn,
        "RMS difference",
        _title("Linearisation error", meta, lr),
        lr,
    )
    return fig


# ------------------------------------------------------------------------ NTK figures


def _sorted_eigs(k: np.ndarray | None) -> np.ndarray | None:
    if k is None:
        return None
    k = np.asarray(k, dtype=float)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or not np.all(np.isfinite(k)):
        return None
    return np.sort(np.linalg.eigvalsh(0.5 * (k + k.T)))[::-1]


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
    be drawn on a log axis and are dropped; the legend says how many.
    """
    fig, ax = _new_figure()
    drawn = 0
    for k, label, style in (
        (ntk_init, "empirical, init", dict(color="C0", ls="-", marker="o")),
        (ntk_final, "empirical, final", dict(color="C1", ls="--", marker="s")),
        (ntk_analytic, "analytic", dict(color="C3", ls="-.", marker="^")),
    ):
        ev = _sorted_eigs(k)
        if ev is None:
            continue
        idx = np.arange(1, ev.size + 1)
        pos = ev > 0
        dropped = int((~pos).sum())
        tag = label + (f" ({dropped} ≤ 0 omitted)" if dropped else "")
        if pos.any():
            if ev.size > 60:  # hundreds of markers cost more than they show
                style = {**style, "marker": None}
            ax.plot(idx[pos], ev[pos], label=tag, ms=3, lw=1.4, **style)
            drawn += 1
    if n_train and lr_effective and np.isfinite(lr_effective) and lr_effective > 0:
        limit = 2.0 * n_train / lr_effective
        ax.axhline(
            limit,
            color="k",
            ls=":",
            lw=1.2,
            label=f"2N/lr = {limit:.3g} (GD unstable above)",
        )
        drawn += 1
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("eigenvalue index (descending)")
    ax.set_ylabel("eigenvalue λ of Θ on the training inputs")
    ax.set_title(_title("NTK spectrum", meta, lr_effective))
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        _set_log(ax, x=False)
        ax.legend(fontsize="small")
    else:
        _no_data(ax)
    return fig


def plot_ntk_heatmaps(
    ntk_init: np.ndarray,
    ntk_final: np.ndarray,
    *,
    meta: Mapping | None = None,
) -> Figure:
    """Empirical NTK on the training inputs at init and at the end (shared colour scale)
    and their difference final − init (own, symmetric diverging colour scale)."""
    fig = Figure(figsize=(12.0, 4.3), dpi=DPI)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.8, wspace=0.3)
    axes = fig.subplots(1, 3)
    k0 = np.asarray(ntk_init, dtype=float)
    k1 = np.asarray(ntk_final, dtype=float)
    diff = k1 - k0
    both = np.concatenate([k0[np.isfinite(k0)], k1[np.isfinite(k1)]])
    vmin, vmax = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 1.0, vmax + 1.0
    fd = diff[np.isfinite(diff)]
    dmax = float(np.max(np.abs(fd))) if fd.size else 0.0
    dmax = dmax if dmax > 0 else 1.0
    kw = dict(interpolation="nearest", aspect="equal")
    panels = (
        (k0, "Θ at init", dict(cmap="viridis", vmin=vmin, vmax=vmax), "Θ(x_i, x_j)"),
        (k1, "Θ at the end", dict(cmap="viridis", vmin=vmin, vmax=vmax), "Θ(x_i, x_j)"),
        (diff, "Θ_end − Θ_init", dict(cmap="RdBu_r", vmin=-dmax, vmax=dmax), "difference"),
    )
    for ax, (mat, name, cm, clabel) in zip(axes, panels, strict=True):
        im = ax.imshow(mat, **cm, **kw)
        ax.set_title(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("training point j")
        ax.set_ylabel("training point i")
        cb = fig.colorbar(im, ax=ax, shrink=0.85)
        cb.set_label(clabel)
    rel = np.linalg.norm(fd) / np.linalg.norm(k0[np.isfinite(k0)]) if fd.size else np.nan
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
    the kernel prediction(s), with the diagonal y = f."""
    fig, ax = _new_figure()
    y = np.asarray(y_test, dtype=float)
    models = [
        ("network", "net", f_net, "o"),
        ("linearised", "lin", f_lin, "s"),
        ("kernel dynamics, empirical NTK", "kernel", f_kernel, "^"),
        ("kernel dynamics, analytic NTK", "analytic", f_analytic, "v"),
    ]
    lo, hi = [], []
    for label, key, f, marker in models:
        if f is None:
            continue
        f = np.asarray(f, dtype=float)
        keep = np.isfinite(f) & np.isfinite(y)
        if not keep.any():
            continue
        rmse = float(np.sqrt(np.mean((f[keep] - y[keep]) ** 2)))
        colour = _STYLE[key]["color"]
        # the network as hollow circles on top, so it stays visible where the models agree
        look = (
            dict(s=40, facecolors="none", edgecolors=colour, linewidths=1.2, zorder=4)
            if key == "net"
            else dict(s=14, color=colour, alpha=0.6, zorder=3)
        )
        ax.scatter(y[keep], f[keep], marker=marker, label=f"{label} (RMSE {rmse:.3g})", **look)
        lo.append(min(y[keep].min(), f[keep].min()))
        hi.append(max(y[keep].max(), f[keep].max()))
    if lo:
        a, b = float(min(lo)), float(max(hi))
        ax.plot([a, b], [a, b], color="k", lw=1.0, ls="--", label="f = y")
        ax.legend(fontsize="small")
    else:
        _no_data(ax)
    ax.set_xlabel("target y")
    ax.set_ylabel("prediction f(x)")
    at = f" at step {step}" if step is not None else ""
    ax.set_title(_title(f"Test predictions vs targets{at}", meta))
    ax.grid(True, alpha=0.3)
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


def run_figures(record: Mapping) -> dict[str, Figure]:
    """All figures for one run (figures contract in the design notes): name -> Figure.

    1-D inputs give the paper's fig1..fig8 (fig4 only with ``km_analytic_test``, fig7 only
    with ``f_analytic_test``); every run gives drift, losses, linearization_error,
    ntk_spectrum and ntk_heatmaps; d > 1 with ``y_test`` adds pred_vs_target. Time axes use
    ``lr_effective`` (the learning rate the dynamics actually use). Exactly the names of
    :func:`expected_figure_names`.
    """
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
    names = set(expected_figure_names(record))
    last = steps.size - 1
    i0 = _step_index(steps, 0)
    common = dict(y_test=y_test, meta=meta)

    figs: dict[str, Figure] = {}
    if "fig1_data_init" in names:
        figs["fig1_data_init"] = plot_data_init(x_train, y_train, x_test, f_test[i0], **common)
        figs["fig2_training"] = plot_training_snapshots(
            x_train, y_train, x_test, f_test, steps, snaps, lr=lr_eff, **common
        )
        figs["fig3_kernel_machine_empirical"] = plot_kernel_machine(
            x_train, y_train, x_test, km_emp, kernel="empirical", **common
        )
        if "fig4_kernel_machine_analytic" in names:
            figs["fig4_kernel_machine_analytic"] = plot_kernel_machine(
                x_train, y_train, x_test, km_an, kernel="analytic", **common
            )
        figs["fig5_net_vs_kernel_machines"] = plot_net_vs_kernel_machines(
            x_train, y_train, x_test, f_test[last], km_emp, km_an, step=int(steps[last]), **common
        )
        figs["fig6_kernel_dynamics_empirical"] = plot_kernel_dynamics(
            x_train,
            y_train,
            x_test,
            f_kernel,
            steps,
            snaps,
            kernel="empirical",
            lr=lr_eff,
            **common,
        )
        if "fig7_kernel_dynamics_analytic" in names:
            figs["fig7_kernel_dynamics_analytic"] = plot_kernel_dynamics(
                x_train,
                y_train,
                x_test,
                f_analytic,
                steps,
                snaps,
                kernel="analytic",
                lr=lr_eff,
                **common,
            )
        i8 = _step_index(steps, int(record.get("fig8_step", steps[last])))
        figs["fig8_net_vs_kernel_dynamics"] = plot_net_vs_kernel_dynamics(
            x_train,
            y_train,
            x_test,
            int(steps[i8]),
            f_test[i8],
            f_lin[i8],
            f_kernel[i8],
            None if f_analytic is None else f_analytic[i8],
            lr=lr_eff,
            **common,
        )
    figs["drift"] = plot_drift(steps, history, lr=lr_eff, meta=meta)
    figs["losses"] = plot_losses(steps, history, lr=lr_eff, meta=meta)
    figs["linearization_error"] = plot_linearization_error(steps, history, lr=lr_eff, meta=meta)
    figs["ntk_spectrum"] = plot_ntk_spectrum(
        record["ntk_init"],
        record["ntk_final"],
        record.get("ntk_analytic"),
        n_train=int(record.get("n_train", np.asarray(x_train).shape[0])),
        lr_effective=lr_eff,
        meta=meta,
    )
    figs["ntk_heatmaps"] = plot_ntk_heatmaps(record["ntk_init"], record["ntk_final"], meta=meta)
    if "pred_vs_target" in names:
        figs["pred_vs_target"] = plot_pred_vs_target(
            y_test,
            f_test[last],
            f_lin[last],
            f_kernel[last],
            None if f_analytic is None else f_analytic[last],
            step=int(steps[last]),
            meta=meta,
        )
    return figs
