"""Tests for ntk_sweep.figures: pure arrays -> matplotlib Figures, rendered to PNG in memory."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from matplotlib.figure import Figure

from ntk_sweep import figures as F

PAPER_FIGS = {
    "fig1_data_init",
    "fig2_training",
    "fig3_kernel_machine_empirical",
    "fig4_kernel_machine_analytic",
    "fig5_net_vs_kernel_machines",
    "fig6_kernel_dynamics_empirical",
    "fig7_kernel_dynamics_analytic",
    "fig8_net_vs_kernel_dynamics",
}
COMMON_FIGS = {"drift", "losses", "linearization_error", "ntk_spectrum", "ntk_heatmaps"}
WIDTH = 1234


def _psd(rng, n):
    a = rng.normal(size=(n, n + 2))
    return a @ a.T / n + 0.5


def make_record(*, d=1, n=4, m=50, analytic=True, y_test=True, seed=0):
    """A synthetic record following the figures contract (values are arbitrary but shaped)."""
    rng = np.random.default_rng(seed)
    steps = np.array([0, 2, 20, 100, 500, 1000])
    s = steps.size
    x_train = rng.uniform(0, 1, size=(n, d))
    x_test = rng.uniform(0, 1, size=(m, d))  # deliberately unsorted
    y_train = rng.normal(size=n)
    base = np.sin(3 * x_test[:, 0])
    f_test = base[None, :] * np.linspace(0.1, 1.0, s)[:, None]
    k0 = _psd(rng, n)
    k1 = k0 + 0.05 * _psd(rng, n)
    decay = np.exp(-steps / 300.0)
    history = {
        "loss": 0.5 * decay + 1e-3,
        "loss_lin": 0.5 * decay + 2e-3,
        "loss_kernel": 0.5 * decay + 3e-3,
        "test_loss": 0.6 * decay + 1e-2,
        "kernel_drift": 1e-2 * np.sqrt(steps / 1000.0),  # exactly 0 at step 0
        "kernel_drift_test": 2e-2 * np.sqrt(steps / 1000.0),
        "kernel_distance": 1e-4 * steps / 1000.0,
        "kernel_distance_test": 2e-4 * steps / 1000.0,
        "lin_error_train": 1e-3 * steps / 1000.0,
        "lin_error_test": np.r_[np.nan, 1e-3 * steps[1:] / 1000.0],  # NaN-tolerant
        "kernel_pred_error_train": 2e-3 * steps / 1000.0,
        "kernel_pred_error_test": 2e-3 * steps / 1000.0,
        "param_movement": 1e-2 * np.sqrt(steps / 1000.0),
    }
    rec = {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": np.cos(x_test.sum(axis=1)) if y_test else None,
        "steps": steps,
        "snapshot_steps": [2, 20, 100, 500, 1000],
        "fig8_step": 500,
        "f_test": f_test,
        "f_lin_test": f_test + 1e-3,
        "f_kernel_test": f_test - 2e-3,
        "f_analytic_test": f_test + 5e-3 if analytic else None,
        "f_train": rng.normal(size=(s, n)),
        "km_empirical_test": base + 0.1,
        "km_analytic_test": base - 0.1 if analytic else None,
        "history": history,
        "ntk_init": k0,
        "ntk_final": k1,
        "ntk_analytic": k0 * 1.01 if analytic else None,
        "lr": 0.1,
        "lr_effective": 0.1,
        "n_train": n,
        "meta": {
            "width": WIDTH,
            "depth": 1,
            "lr": 0.1,
            "seed": 7,
            "activation": "relu",
            "parameterization": "ntk",
            "dataset": "paper_toy" if d == 1 else "teacher",
            "sigma_b": 1.0,
        },
    }
    if analytic:
        rec["history"]["analytic_pred_error_test"] = 3e-3 * steps / 1000.0
    return rec


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def _main_axes(fig: Figure):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _check_figure(name: str, fig: Figure) -> None:
    assert isinstance(fig, Figure), name
    w, h = _png_size(F.figure_to_png_bytes(fig))
    assert 400 <= w <= 2000 and 300 <= h <= 1200, (name, w, h)
    axes = _main_axes(fig)
    assert axes, name
    for ax in axes:
        assert ax.get_ylabel(), (name, "ylabel")
    assert any(ax.get_xlabel() for ax in axes), (name, "xlabel")
    titles = [fig.get_suptitle()] + [ax.get_title() for ax in axes]
    assert any(f"width={WIDTH}" in t for t in titles), (name, titles)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(d=1, analytic=True), PAPER_FIGS | COMMON_FIGS),
        (
            dict(d=1, analytic=False),
            PAPER_FIGS - {"fig4_kernel_machine_analytic", "fig7_kernel_dynamics_analytic"}
            | COMMON_FIGS,
        ),
        (dict(d=3, analytic=True), COMMON_FIGS | {"pred_vs_target"}),
        (dict(d=3, analytic=False), COMMON_FIGS | {"pred_vs_target"}),
    ],
    ids=["1d-analytic", "1d-no-analytic", "3d-analytic", "3d-no-analytic"],
)
def test_run_figures_key_sets_and_render(kwargs, expected):
    rec = make_record(**kwargs)
    figs = F.run_figures(rec)
    assert set(figs) == expected
    assert set(F.expected_figure_names(rec)) == expected
    for name, fig in figs.items():
        _check_figure(name, fig)


def test_pred_vs_target_needs_y_test():
    figs = F.run_figures(make_record(d=3, y_test=False))
    assert set(figs) == COMMON_FIGS


def test_fig8_lines_equal_inputs_at_fig8_step():
    rec = make_record(d=1, analytic=True)
    i = int(np.flatnonzero(rec["steps"] == rec["fig8_step"])[0])
    fig = F.run_figures(rec)["fig8_net_vs_kernel_dynamics"]
    ax = fig.axes[0]
    order = np.argsort(rec["x_test"][:, 0])
    lines = [ln for ln in ax.get_lines() if ln.get_label() != "target"]
    expected = [
        rec["f_test"][i],
        rec["f_lin_test"][i],
        rec["f_kernel_test"][i],
        rec["f_analytic_test"][i],
    ]
    assert len(lines) == len(expected)
    for ln, want in zip(lines, expected, strict=True):
        xd, yd = ln.get_data()
        np.testing.assert_array_equal(xd, rec["x_test"][order, 0])
        np.testing.assert_array_equal(yd, want[order])
    assert f"step {rec['fig8_step']}" in ax.get_title()
    # the difference panel draws each model minus the network
    dlines = fig.axes[1].get_lines()[: len(expected) - 1]
    for ln, want in zip(dlines, expected[1:], strict=True):
        np.testing.assert_allclose(ln.get_ydata(), (want - rec["f_test"][i])[order])


def test_fig8_unlogged_step_uses_nearest_logged_step():
    rec = make_record(d=1)
    rec["fig8_step"] = 480  # nearest logged step is 500
    ax = F.run_figures(rec)["fig8_net_vs_kernel_dynamics"].axes[0]
    assert "step 500" in ax.get_title()


def test_one_d_plots_are_sorted_by_x():
    rec = make_record(d=1)
    fig = F.run_figures(rec)["fig2_training"]
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label() != "target"]
    assert len(lines) == len(rec["snapshot_steps"])
    for ln in lines:
        assert np.all(np.diff(ln.get_xdata()) >= 0)


def test_heatmap_difference_panel():
    rec = make_record(d=1)
    fig = F.plot_ntk_heatmaps(rec["ntk_init"], rec["ntk_final"], meta=rec["meta"])
    axes = _main_axes(fig)
    assert len(axes) == 3
    np.testing.assert_array_equal(axes[0].get_images()[0].get_array(), rec["ntk_init"])
    np.testing.assert_array_equal(axes[1].get_images()[0].get_array(), rec["ntk_final"])
    diff_im = axes[2].get_images()[0]
    np.testing.assert_array_equal(diff_im.get_array(), rec["ntk_final"] - rec["ntk_init"])
    vmin, vmax = diff_im.get_clim()
    assert vmin == -vmax and vmax == pytest.approx(np.abs(rec["ntk_final"] - rec["ntk_init"]).max())


def test_spectrum_marks_stability_limit_and_drops_nonpositive():
    rec = make_record(d=1)
    k_singular = np.full((4, 4), 1.5)  # rank 1: three eigenvalues ~0 (round-off, any sign)
    fig = F.plot_ntk_spectrum(
        rec["ntk_init"], k_singular, rec["ntk_analytic"], n_train=4, lr_effective=0.1
    )
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    limit = [ln for ln in ax.get_lines() if ln.get_label().startswith("2N/lr")]
    assert len(limit) == 1
    np.testing.assert_allclose(limit[0].get_ydata(), [80.0, 80.0])
    for ln in ax.get_lines():
        assert np.all(np.asarray(ln.get_ydata()) > 0)
    init = [ln for ln in ax.get_lines() if ln.get_label().startswith("empirical, init")][0]
    np.testing.assert_allclose(
        init.get_ydata(), np.sort(np.linalg.eigvalsh(rec["ntk_init"]))[::-1], rtol=1e-12
    )


def test_drift_log_log_drops_step_zero():
    rec = make_record(d=1)
    ax = F.plot_drift(rec["steps"], rec["history"], lr=0.1, meta=rec["meta"]).axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = ax.get_lines()
    assert lines
    for ln in lines:
        assert np.all(np.asarray(ln.get_xdata()) > 0)
        assert np.all(np.asarray(ln.get_ydata()) > 0)


def test_nan_and_empty_history_still_render():
    rec = make_record(d=1)
    rec["history"] = {k: np.full_like(v, np.nan) for k, v in rec["history"].items()}
    rec["f_test"] = rec["f_test"].copy()
    rec["f_test"][-1, :5] = np.nan
    rec["ntk_final"] = np.full_like(rec["ntk_final"], np.nan)
    figs = F.run_figures(rec)
    for name in ("drift", "losses", "linearization_error", "ntk_spectrum", "ntk_heatmaps"):
        _check_figure(name, figs[name])
    _check_figure("fig5_net_vs_kernel_machines", figs["fig5_net_vs_kernel_machines"])
    # no history at all
    rec["history"] = {}
    _check_figure("losses", F.run_figures(rec)["losses"])


def test_png_is_readable_image():
    import matplotlib.image as mpimg

    fig = F.run_figures(make_record(d=3))["pred_vs_target"]
    img = mpimg.imread(io.BytesIO(F.figure_to_png_bytes(fig)), format="png")
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.std() > 0  # not blank


# ------------------------------------------------------- huge, infinite and NaN values


def _diverging(steps, top):
    """Geometric growth from 0.5 at step 0 to `top` at the last step."""
    s = np.asarray(steps, dtype=float)
    with np.errstate(over="ignore"):
        out = 0.5 * 10.0 ** (np.log10(min(top, 1e307) / 0.5) * s / s[-1])
    out[-1] = top
    return out


def _drawn_y(ax):
    """The y values of the data lines of an axes (tick and grid collections are not lines)."""
    return [np.asarray(ln.get_ydata(), dtype=float) for ln in ax.get_lines()]


def test_losses_of_a_diverging_linearised_model_render():
    """Regression: matplotlib's log tick labels raised OverflowError for a loss of ~1e291
    (standard parameterization, lr=0.01: the linearised model diverges)."""
    rec = make_record(d=1)
    rec["history"]["loss_lin"] = _diverging(rec["steps"], 1e291)
    fig = F.plot_losses(rec["steps"], rec["history"], lr=0.1, meta=rec["meta"])
    _check_figure("losses", fig)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert 0 < lo < hi < 1e306 and hi >= 1e291
    assert all(np.all(y[np.isfinite(y)] <= F.BOUND) for y in _drawn_y(ax))


@pytest.mark.parametrize("top", [1e291, 1e300, 1e305, 1.7e308, np.inf])
def test_every_figure_renders_with_runaway_values(top):
    for d in (1, 3):
        rec = make_record(d=d)
        s = rec["steps"].size
        for key in ("loss_lin", "lin_error_train", "lin_error_test", "kernel_drift"):
            rec["history"][key] = _diverging(rec["steps"], top)
        rec["history"]["loss_kernel"] = np.full(s, 1e-310)  # below the drawable range
        runaway = _diverging(rec["steps"], top)[:, None] * np.ones_like(rec["f_test"])
        rec["f_lin_test"] = runaway
        rec["f_analytic_test"] = -runaway
        rec["km_analytic_test"] = np.full_like(rec["km_analytic_test"], top)
        rec["ntk_final"] = rec["ntk_final"] * 1e298
        figs = F.run_figures(rec)
        for name, fig in figs.items():
            _check_figure(name, fig)
            for ax in _main_axes(fig):
                for y in _drawn_y(ax):
                    finite = y[np.isfinite(y)]
                    assert np.all(np.abs(finite) <= F.BOUND), name
                for lim in (ax.get_xlim(), ax.get_ylim()):
                    assert np.all(np.isfinite(lim)), (name, lim)


def test_clipped_values_are_noted_in_the_legend():
    rec = make_record(d=1)
    rec["history"]["loss_lin"] = _diverging(rec["steps"], np.inf)  # inf at the last step
    ax = F.plot_losses(rec["steps"], rec["history"], lr=0.1, meta=rec["meta"]).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    lin = [t for t in labels if t.startswith("linearised, train")]
    assert len(lin) == 1 and "inf or beyond" in lin[0], labels
    net = [t for t in labels if t.startswith("network, train")]
    assert net and all("[" not in t for t in net)  # nothing clipped: no note


def test_runaway_model_does_not_flatten_the_one_d_plot():
    rec = make_record(d=1)
    i = int(np.flatnonzero(rec["steps"] == rec["fig8_step"])[0])
    rec["f_lin_test"] = rec["f_lin_test"].copy()
    rec["f_lin_test"][i] = 1e291
    rec["f_kernel_test"] = rec["f_kernel_test"].copy()
    rec["f_kernel_test"][i, :3] = np.nan
    ax = F.run_figures(rec)["fig8_net_vs_kernel_dynamics"].axes[0]
    lo, hi = ax.get_ylim()
    net = rec["f_test"][i]
    assert lo <= min(net.min(), rec["y_train"].min()) and hi >= max(net.max(), rec["y_train"].max())
    assert hi - lo < 100  # the data and the network stay readable
    labels = {t.get_text().split(" [")[0]: t.get_text() for t in ax.get_legend().get_texts()}
    assert "leaves the plot" in labels["linearised network"]
    assert "3 NaN omitted" in labels["kernel dynamics, empirical NTK"]
    assert "[" not in labels["network"]


def test_all_nan_and_all_inf_inputs_render():
    rec = make_record(d=3)
    for key in ("f_test", "f_lin_test", "f_kernel_test", "f_analytic_test"):
        rec[key] = np.full_like(rec[key], np.nan)
    rec["history"] = {k: np.full_like(v, np.inf) for k, v in rec["history"].items()}
    rec["ntk_init"] = np.full_like(rec["ntk_init"], np.inf)
    rec["ntk_final"] = np.full_like(rec["ntk_final"], -np.inf)
    for name, fig in F.run_figures(rec).items():
        _check_figure(name, fig)


@pytest.mark.parametrize(
    ("lo", "hi"), [(1e-300, 1e300), (1e-305, 1e305), (0.31, 0.33), (1.0, 3000.0), (7e-5, 7e-5)]
)
def test_log_axis_limits_and_ticks_stay_in_range(lo, hi):
    lim = F._log_limits(lo, hi)
    assert 0 < lim[0] <= lo and hi <= lim[1] < np.inf
    ticks = F._log_ticks(*lim)
    assert 2 <= len(ticks) <= 8
    assert all(lim[0] <= t <= lim[1] for t in ticks)
    labels = [F._tick_label(t) for t in ticks]
    assert len(set(labels)) == len(labels) and not any("$" in s for s in labels)


# --------------------------------------------------------------------- fast rendering


def test_savefig_writes_a_valid_png_identical_to_pillows(tmp_path):
    """``fig.savefig(path)`` (the app's call) uses the module's fast PNG writer; the image is
    pixel-identical to Matplotlib's own (Pillow) output."""
    import matplotlib.image as mpimg

    fig = F.run_figures(make_record(d=1))["fig2_training"]
    fig.savefig(tmp_path / "fast.png")
    F.save_png(fig, tmp_path / "helper.png")
    fig.savefig(tmp_path / "pillow.png", pil_kwargs={})
    fast = mpimg.imread(tmp_path / "fast.png")
    assert fast.shape == (405, 630, 4)
    np.testing.assert_array_equal(fast, mpimg.imread(tmp_path / "pillow.png"))
    np.testing.assert_array_equal(fast, mpimg.imread(tmp_path / "helper.png"))


def test_text_caching_renderer_draws_what_matplotlib_draws():
    """The figures' canvas caches text layouts and glyph bitmaps; the pixels must be exactly
    those of Matplotlib's own Agg canvas (text at several sizes and angles included)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rec = make_record(d=1)
    for name in ("fig8_net_vs_kernel_dynamics", "losses", "ntk_heatmaps"):
        for _ in range(2):  # the second time from the caches
            ours = F.figure_builders(rec)[name]()
            ours.text(0.5, 0.5, "Θ−λ ‖x‖ 10⁻³", rotation=30, fontsize=13)
            ours.canvas.draw()
            plain = F.figure_builders(rec)[name]()
            plain.text(0.5, 0.5, "Θ−λ ‖x‖ 10⁻³", rotation=30, fontsize=13)
            FigureCanvasAgg(plain).draw()
            a = np.asarray(ours.canvas.buffer_rgba())
            np.testing.assert_array_equal(a, np.asarray(plain.canvas.buffer_rgba()), name)
