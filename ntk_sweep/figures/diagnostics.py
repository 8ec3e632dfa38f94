"""The diagnostic figures of a run: losses, linearisation error, the NTK's spectrum and
heatmaps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ntk_sweep.figure_style import (
    DPI,
    MARGIN_BOTTOM,
    TITLE_LINE,
    TITLE_PAD,
    TOP_AIR,
    fit_margins,
    new_figure,
    text_lines,
)
from ntk_sweep.figures.common import (
    _C,
    _STYLE,
    _TITLE_CHARS,
    _clean,
    _figure,
    _finite_range,
    _history_figure,
    _legend,
    _log_scale,
    _no_data,
    _on_own_lines,
    _positive_lr,
    _set_title,
    _title,
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
    fit_margins(fig)
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
    fig, axes, caxes = _heatmap_axes(text_lines(suptitle), max(text_lines(p[1]) for p in panels))
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
    fig.suptitle(suptitle, fontsize="medium", y=1 - TOP_AIR / fig.get_figheight(), va="top")
    return fig


def _heatmap_axes(suptitle_lines: int, title_lines: int, size=(12.0, 4.3)):
    """Figure, three square image axes in a row and two colour-bar axes (after the second
    and the third), placed at fixed positions in inches: room left of every image for its
    tick labels and y label, right of each colour bar for its labels."""
    fig = new_figure(size, DPI)
    width, height = size
    top = 2 * TOP_AIR + (suptitle_lines + title_lines) * TITLE_LINE + TITLE_PAD
    ylabels, gap, bar, bar_labels = 0.85, 0.12, 0.15, 0.8
    side = min(
        height - top - MARGIN_BOTTOM,
        (width - 3 * ylabels - 2 * (gap + bar + bar_labels)) / 3,
    )
    bottom = MARGIN_BOTTOM + 0.5 * (height - top - MARGIN_BOTTOM - side)

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
