"""Which figures a run draws (``tracking.figures``) and the functions that draw them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from ntk_sweep.figures.common import _array_or_none, _step_index
from ntk_sweep.figures.diagnostics import (
    plot_linearization_error,
    plot_losses,
    plot_ntk_heatmaps,
    plot_ntk_spectrum,
)
from ntk_sweep.figures.paper import (
    plot_data_init,
    plot_drift,
    plot_kernel_dynamics,
    plot_kernel_machine,
    plot_net_vs_kernel_dynamics,
    plot_net_vs_kernel_machines,
    plot_pred_vs_target,
    plot_training_snapshots,
)

FIGURE_SETS = ("paper", "all", "none")
# The `paper` set: the paper's figures 1-8 (1-D inputs), the kernel drift (the paper's claim,
# measured) and, for d > 1 where the 1-D figures do not exist, predictions vs targets.
PAPER_FIGURES = (
    "fig1_data_init",
    "fig2_training",
    "fig3_kernel_machine_empirical",
    "fig4_kernel_machine_analytic",
    "fig5_net_vs_kernel_machines",
    "fig6_kernel_dynamics_empirical",
    "fig7_kernel_dynamics_analytic",
    "fig8_net_vs_kernel_dynamics",
    "drift",
    "pred_vs_target",
)


# ------------------------------------------------------------------------- the run set


def _check_which(which: str) -> None:
    if which not in FIGURE_SETS:
        raise ValueError(f"which={which!r} is invalid: expected one of {', '.join(FIGURE_SETS)}")


def expected_figure_names(record: Mapping, which: str = "all") -> list[str]:
    """Names (no ``.png``) :func:`run_figures` produces for ``record`` (figures contract) and
    the figure set ``which`` (one of :data:`FIGURE_SETS`)."""
    _check_which(which)
    if which == "none":
        return []
    d = np.asarray(record["x_train"]).reshape(len(record["x_train"]), -1).shape[1]
    names: list[str] = []
    if d == 1 and int(record.get("outputs", 1)) == 1:  # the paper's f(x) curves: one output
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
    if which == "paper":
        names = [n for n in names if n in PAPER_FIGURES]
    return names


@dataclass(frozen=True)
class _Series:
    """What the figures of one record draw, as float arrays (see :func:`figure_builders`)."""

    data: tuple  # (x_train, y_train, x_test)
    common: dict  # y_test and meta, the keyword arguments of every 1-D figure
    meta: dict
    steps: np.ndarray
    snaps: Sequence[int] | None
    lr_eff: float | None
    f_test: np.ndarray
    f_lin: np.ndarray
    f_kernel: np.ndarray
    f_analytic: np.ndarray | None
    km_emp: np.ndarray
    km_an: np.ndarray | None
    i0: int  # index of step 0 in steps
    i8: int  # index of the step of figure 8
    last: int  # index of the last step


def _series(record: Mapping) -> _Series:
    meta = dict(record.get("meta") or {})
    steps = np.asarray(record["steps"])
    lr_eff = record.get("lr_effective", record.get("lr"))
    lr_eff = None if lr_eff is None else float(lr_eff)
    meta.setdefault("lr_effective", lr_eff)  # every title says lr_eff where it differs
    last = steps.size - 1
    return _Series(
        data=(record["x_train"], record["y_train"], record["x_test"]),
        common=dict(y_test=record.get("y_test"), meta=meta),
        meta=meta,
        steps=steps,
        snaps=record.get("snapshot_steps"),
        lr_eff=lr_eff,
        f_test=np.asarray(record["f_test"], dtype=float),
        f_lin=np.asarray(record["f_lin_test"], dtype=float),
        f_kernel=np.asarray(record["f_kernel_test"], dtype=float),
        f_analytic=_array_or_none(record.get("f_analytic_test")),
        km_emp=np.asarray(record["km_empirical_test"], dtype=float),
        km_an=_array_or_none(record.get("km_analytic_test")),
        i0=_step_index(steps, 0),
        i8=_step_index(steps, int(record.get("fig8_step", steps[last]))),
        last=last,
    )


def _paper_builders(s: _Series) -> dict[str, Callable[[], Figure]]:
    """The paper's 1-D figures 1-8 (functions of x on the test inputs)."""
    data, common, lr = s.data, s.common, s.lr_eff
    an8 = None if s.f_analytic is None else s.f_analytic[s.i8]
    return {
        "fig1_data_init": lambda: plot_data_init(*data, s.f_test[s.i0], **common),
        "fig2_training": lambda: plot_training_snapshots(
            *data, s.f_test, s.steps, s.snaps, lr=lr, **common
        ),
        "fig3_kernel_machine_empirical": lambda: plot_kernel_machine(
            *data, s.km_emp, kernel="empirical", **common
        ),
        "fig4_kernel_machine_analytic": lambda: plot_kernel_machine(
            *data, s.km_an, kernel="analytic", **common
        ),
        "fig5_net_vs_kernel_machines": lambda: plot_net_vs_kernel_machines(
            *data, s.f_test[s.last], s.km_emp, s.km_an, step=int(s.steps[s.last]), **common
        ),
        "fig6_kernel_dynamics_empirical": lambda: plot_kernel_dynamics(
            *data, s.f_kernel, s.steps, s.snaps, kernel="empirical", lr=lr, **common
        ),
        "fig7_kernel_dynamics_analytic": lambda: plot_kernel_dynamics(
            *data, s.f_analytic, s.steps, s.snaps, kernel="analytic", lr=lr, **common
        ),
        "fig8_net_vs_kernel_dynamics": lambda: plot_net_vs_kernel_dynamics(
            *data,
            int(s.steps[s.i8]),
            s.f_test[s.i8],
            s.f_lin[s.i8],
            s.f_kernel[s.i8],
            an8,
            lr=lr,
            **common,
        ),
    }


def _run_builders(record: Mapping, s: _Series) -> dict[str, Callable[[], Figure]]:
    """The figures of every run: histories over the log steps, the kernels, and predictions
    against targets."""
    history = record.get("history") or {}
    n_train = int(record.get("n_train", np.asarray(record["x_train"]).shape[0]))
    lr, meta, last = s.lr_eff, s.meta, s.last
    return {
        "drift": lambda: plot_drift(s.steps, history, lr=lr, meta=meta),
        "losses": lambda: plot_losses(s.steps, history, lr=lr, meta=meta),
        "linearization_error": lambda: plot_linearization_error(s.steps, history, lr=lr, meta=meta),
        "ntk_spectrum": lambda: plot_ntk_spectrum(
            record["ntk_init"],
            record["ntk_final"],
            record.get("ntk_analytic"),
            n_train=n_train,
            lr_effective=lr,
            meta=meta,
        ),
        "ntk_heatmaps": lambda: plot_ntk_heatmaps(
            record["ntk_init"], record["ntk_final"], meta=meta
        ),
        "pred_vs_target": lambda: plot_pred_vs_target(
            s.common["y_test"],
            s.f_test[last],
            s.f_lin[last],
            s.f_kernel[last],
            None if s.f_analytic is None else s.f_analytic[last],
            step=int(s.steps[last]),
            meta=meta,
        ),
    }


def figure_builders(record: Mapping, which: str = "all") -> dict[str, Callable[[], Figure]]:
    """name -> zero-argument function drawing that figure, for exactly the names of
    :func:`expected_figure_names` (lets a caller build, save and release the figures one at
    a time, or time them; :func:`run_figures` calls them all)."""
    names = expected_figure_names(record, which)
    s = _series(record)
    table = {**_paper_builders(s), **_run_builders(record, s)}
    return {name: table[name] for name in names}


def run_figures(record: Mapping, which: str = "all") -> dict[str, Figure]:
    """The figures of one run (figures contract in the design notes): name -> Figure.

    ``which="all"``: 1-D inputs give the paper's fig1..fig8 (fig4 only with
    ``km_analytic_test``, fig7 only with ``f_analytic_test``); every run gives drift, losses,
    linearization_error, ntk_spectrum and ntk_heatmaps; d > 1 with ``y_test`` adds
    pred_vs_target. ``"paper"`` keeps those in :data:`PAPER_FIGURES`, ``"none"`` none. Time
    axes use ``lr_effective`` (the learning rate the dynamics actually use). Exactly the
    names of :func:`expected_figure_names`. Each Figure has its own Agg canvas.
    """
    return {name: build() for name, build in figure_builders(record, which).items()}
