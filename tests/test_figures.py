"""Tests for ntk_sweep.figures: pure arrays -> matplotlib Figures, rendered to PNG in memory."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from matplotlib.figure import Figure

from ntk_sweep import figures as F
from ntk_sweep.figure_style import text_outside

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
        # the kernel diagnostics (docs/metrics.md): velocity is undefined at step 0
        "kernel_lambda_max": 3.0 - steps / 1000.0,
        "kernel_velocity": np.r_[np.nan, 1e-2 / (1.0 + steps[1:])],
        "kernel_alignment": 0.5 + 0.2 * steps / 1000.0,
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


def _check_figure(name: str, fig: Figure, width: int = WIDTH) -> None:
    assert isinstance(fig, Figure), name
    w, h = _png_size(F.figure_to_png_bytes(fig))  # draws the figure on its canvas
    assert 400 <= w <= 2000 and 300 <= h <= 1200, (name, w, h)
    assert not text_outside(fig), (name, text_outside(fig))
    axes = _main_axes(fig)
    assert axes, name
    for ax in axes:
        assert ax.get_ylabel(), (name, "ylabel")
    assert any(ax.get_xlabel() for ax in axes), (name, "xlabel")
    titles = [fig.get_suptitle()] + [ax.get_title() for ax in axes]
    assert any(f"width={width}" in t for t in titles), (name, titles)


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
def test_run_figures_key_sets(kwargs, expected):
    """The names; every figure of these sets is drawn and checked (_check_figure) by
    test_every_figure_renders_inside_for_any_parameterization."""
    rec = make_record(**kwargs)
    figs = F.run_figures(rec)
    assert set(figs) == expected and all(isinstance(f, Figure) for f in figs.values())
    assert set(F.expected_figure_names(rec)) == expected


@pytest.mark.parametrize("parameterization", ["ntk", "standard", "mean_field"])
def test_every_figure_renders_inside_for_any_parameterization(parameterization):
    """Every figure passes _check_figure (PNG size, labels, nothing drawn outside the
    figure), titles included for mean_field and standard, whose metadata lines are longest
    (lr_eff = lr * width for mean_field, MATH.md s.1). With long
    values everywhere, nothing drawn (titles, suptitle, labels, tick labels, legends) may
    extend outside the figure; the long metadata wraps onto more title lines. ntk draws the
    sets with the analytic NTK (figs. 4 and 7 exist for it only), the others without; d = 3
    draws its whole set for ntk and mean_field (standard: pred_vs_target, the only figure of
    its own)."""
    width, lr = 1_000_000, 0.000123
    lr_eff = lr * width if parameterization == "mean_field" else lr
    for d in (1, 3):
        rec = make_record(d=d, analytic=parameterization == "ntk")
        rec["meta"].update(
            parameterization=parameterization, width=width, depth=12, lr=lr, seed=12345,
            sigma_b=0.123456, activation="relu", dataset="paper_toy" if d == 1 else "teacher",
        )  # fmt: skip
        rec["lr"], rec["lr_effective"] = lr, lr_eff
        names = F.expected_figure_names(rec)
        if d == 3 and parameterization == "standard":
            names = ["pred_vs_target"]
        for name, build in F.figure_builders(rec).items():
            if name not in names:
                continue
            fig = build()
            _check_figure(name, fig, width)  # draws it; nothing outside the figure
            titles = "\n".join([fig.get_suptitle()] + [ax.get_title() for ax in fig.axes])
            assert f"width={width}" in titles and "seed=12345" in titles, (name, titles)
            if parameterization == "mean_field":
                assert f"lr_eff={lr_eff:g}" in titles, (name, titles)
            assert max(len(line) for line in titles.splitlines()) <= 2 * F._TITLE_CHARS


def test_text_outside_detects_a_clipped_title():
    """The clipping check itself: a title wider than the figure is reported."""
    fig = F.figure_builders(make_record(d=1))["fig1_data_init"]()
    fig.axes[0].set_title("x" * 400)
    fig.canvas.draw()
    assert any(s.startswith("'xxxx") for s in text_outside(fig))


@pytest.mark.parametrize("d", [1, 3])
def test_figure_sets(d):
    """tracking.figures: "all" is every figure, "paper" the paper's figures and drift (and
    pred_vs_target for d > 1), "none" nothing; anything else is refused."""
    rec = make_record(d=d)
    every = set(F.expected_figure_names(rec))
    paper = set(F.expected_figure_names(rec, "paper"))
    if d == 1:
        assert paper == PAPER_FIGS | {"drift"}
    else:
        assert paper == {"drift", "pred_vs_target"}
    assert paper < every and F.expected_figure_names(rec, "none") == []
    assert set(F.figure_builders(rec, "paper")) == paper
    assert set(F.run_figures(rec, "none")) == set()
    with pytest.raises(ValueError, match="which='some' is invalid: expected one of paper, all"):
        F.expected_figure_names(rec, "some")


def test_pred_vs_target_needs_y_test():
    figs = F.run_figures(make_record(d=3, y_test=False))
    assert set(figs) == COMMON_FIGS


def test_fig8_lines_equal_inputs_at_fig8_step():
    rec = make_record(d=1, analytic=True)
    i = int(np.flatnonzero(rec["steps"] == rec["fig8_step"])[0])
    fig = F.figure_builders(rec)["fig8_net_vs_kernel_dynamics"]()
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
    ax = F.figure_builders(rec)["fig8_net_vs_kernel_dynamics"]().axes[0]
    assert "step 500" in ax.get_title()


def test_one_d_plots_are_sorted_by_x():
    rec = make_record(d=1)
    fig = F.figure_builders(rec)["fig2_training"]()
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
    builders = F.figure_builders(rec)
    for name in (*COMMON_FIGS, "fig5_net_vs_kernel_machines"):
        _check_figure(name, builders[name]())
    # no history at all
    rec["history"] = {}
    _check_figure("losses", F.figure_builders(rec)["losses"]())


def test_png_is_readable_image():
    import matplotlib.image as mpimg

    fig = F.figure_builders(make_record(d=3))["pred_vs_target"]()
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


# figures that draw none of the runaway values below (network, data, empirical kernel machine
# and kernel dynamics stay finite): drawn with them by the other tests
NOT_RUNAWAY = {
    "fig1_data_init",
    "fig2_training",
    "fig3_kernel_machine_empirical",
    "fig6_kernel_dynamics_empirical",
}


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
        builders = F.figure_builders(rec)
        # d > 1: the other figures draw the same histories and kernels as for d = 1
        names = ["pred_vs_target"] if d > 1 else set(builders) - NOT_RUNAWAY
        for name in names:
            fig = builders[name]()
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
    ax = F.figure_builders(rec)["fig8_net_vs_kernel_dynamics"]().axes[0]
    lo, hi = ax.get_ylim()
    net = rec["f_test"][i]
    assert lo <= min(net.min(), rec["y_train"].min()) and hi >= max(net.max(), rec["y_train"].max())
    assert hi - lo < 100  # the data and the network stay readable
    labels = {t.get_text().split("\n[")[0]: t.get_text() for t in ax.get_legend().get_texts()}
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


def _labelled_ticks(axis, lo: float, hi: float) -> list[tuple[float, str]]:
    """(position, label) of the ticks an axis draws within [lo, hi] that carry a label."""
    out = []
    for locator, formatter in (
        (axis.get_major_locator(), axis.get_major_formatter()),
        (axis.get_minor_locator(), axis.get_minor_formatter()),
    ):
        locs = [t for t in locator() if lo <= t <= hi]
        out += [(t, s) for t, s in zip(locs, formatter.format_ticks(locs), strict=True) if s]
    return out


@pytest.mark.parametrize(
    ("lo", "hi"), [(1e-300, 1e300), (1e-305, 1e305), (0.31, 0.33), (1.0, 3000.0), (7e-5, 7e-5)]
)
def test_log_axis_limits_and_ticks_stay_in_range(lo, hi):
    """A loss history spanning [lo, hi]: the log axis shows all of it within finite limits,
    with 2 to 8 distinct labelled ticks inside the limits (no overflow near 1e300)."""
    steps = np.array([1, 10, 100, 1000])
    history = {"loss": np.geomspace(lo, hi, steps.size)}
    fig = F.plot_losses(steps, history, lr=0.1)
    fig.canvas.draw()
    ax = fig.axes[0]
    y0, y1 = ax.get_ylim()
    assert 0 < y0 <= lo and hi <= y1 < np.inf
    ticks = _labelled_ticks(ax.yaxis, y0, y1)
    assert 2 <= len(ticks) <= 8, ticks
    assert len({s for _, s in ticks}) == len(ticks)
    assert all(np.isfinite(t) and t > 0 for t, _ in ticks)


# -------------------------------------------------------------------------- PNG output


def test_savefig_and_helpers_write_the_same_valid_png(tmp_path):
    """``fig.savefig(path)`` (Matplotlib's own writer), :func:`save_png` and
    :func:`figure_to_png_bytes` give the same 630 x 405 image; metadata become text chunks."""
    import matplotlib.image as mpimg

    fig = F.figure_builders(make_record(d=1))["fig2_training"]()
    fig.savefig(tmp_path / "plain.png")
    F.save_png(fig, tmp_path / "helper.png", metadata={"Title": "fig2_training"})
    data = F.figure_to_png_bytes(fig)
    plain = mpimg.imread(tmp_path / "plain.png")
    assert plain.shape == (405, 630, 4) and plain.std() > 0.01
    np.testing.assert_array_equal(plain, mpimg.imread(tmp_path / "helper.png"))
    np.testing.assert_array_equal(plain, mpimg.imread(io.BytesIO(data), format="png"))
    assert b"tEXtTitle\x00fig2_training" in (tmp_path / "helper.png").read_bytes()
