"""The figure adapter: a run's record, data and settings turned into what
`figures.figure_builders` draws (`figure_inputs`), the figures drawn to PNGs one at a time
(`save_figures`) and logged to the run (`record_figures`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ntk_sweep import tracking
from ntk_sweep.config import nearest_step
from ntk_sweep.job import log_warnings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FigureSettings:
    """What the figures take from the config (`experiment.figure_settings` builds it)."""

    which: str  # the figure set (`config.figure_set`): paper, all or none
    steps: int  # train.steps
    snapshot_steps: tuple[int, ...]  # train.snapshot_steps
    fig8_step: int  # train.fig8_step
    seed: int


def figure_inputs(settings: FigureSettings, data, net, record) -> dict[str, Any]:
    """What `figures.figure_builders` draws: the record, the data and the run's settings."""
    log_steps = [int(s) for s in record.steps]
    snaps = [s for s in settings.snapshot_steps if s <= settings.steps] or log_steps

    def f_of(a: np.ndarray | None) -> np.ndarray | None:
        """K > 1 outputs: every (input, output) pair is one point of the prediction figures."""
        return a if a is None or net.outputs == 1 else a.reshape(*a.shape[:-2], -1)

    return {
        "x_train": data.x_train,
        "y_train": data.y_train,
        "x_test": data.x_test,
        "y_test": f_of(data.y_test),
        "outputs": net.outputs,
        "steps": record.steps,
        "snapshot_steps": snaps,
        "fig8_step": nearest_step(log_steps, settings.fig8_step),
        "f_train": f_of(record.f_train),
        "f_test": f_of(record.f_test),
        "f_lin_test": f_of(record.f_lin_test),
        "f_kernel_test": f_of(record.f_kernel_test),
        "f_analytic_test": f_of(record.f_analytic_test),
        "km_empirical_test": record.km_empirical_test,
        "km_analytic_test": record.km_analytic_test,
        "history": record.history,
        "ntk_init": record.ntk_init,
        "ntk_final": record.ntk_final,
        "ntk_analytic": record.ntk_analytic,
        "lr": record.lr,
        "lr_effective": record.lr_effective,
        "lr_max_stable": record.lr_max_stable,
        "lr_over_lr_max_stable": record.lr_effective / record.lr_max_stable,
        "phase_net": record.phase_net,
        "phase_lin": record.phase_lin,
        "n_train": data.n_train,
        "meta": {
            "width": net.width,
            "depth": net.depth,
            "lr": record.lr,
            "seed": settings.seed,
            "activation": net.activation,
            "parameterization": net.parameterization,
            "dataset": data.name,
            "sigma_b": net.sigma_b,
            "alpha": net.alpha,
        },
    }


def record_figures(
    settings: FigureSettings, data, net, record, client, run_id: str, folder: Path
) -> list[str]:
    """Draw and log the figures of `tracking.figures`; a plotting bug tags the run
    (`ntk_sweep.figures_failed`) but never fails a finished experiment."""
    names: list[str] = []
    try:
        names, failed = save_figures(
            figure_inputs(settings, data, net, record), folder, settings.which
        )
        tracking.log_artifacts(client, run_id, folder, "figures")
        if failed:
            tracking.set_tag(client, run_id, tracking.FIGURES_FAILED_TAG, ",".join(failed))
    except Exception as exc:  # a plotting bug must not fail a finished experiment
        if tracking.store_full_reason(exc):
            raise  # nor hide a full store: the run cannot be recorded
        log.exception("figures failed: %s", exc)
        tracking.set_tag(client, run_id, tracking.FIGURES_FAILED_TAG, repr(exc)[:500])
    return names


def save_figures(
    record: dict[str, Any], folder: Path, which: str = "all"
) -> tuple[list[str], list[str]]:
    """Render the figures of set `which` (`tracking.figures`: paper, all) to `folder`, one at
    a time; returns (saved names, failed names). A figure that cannot be drawn (e.g. values
    near the float range) is skipped with a logged error."""
    # Matplotlib (~0.5 s to import) only for the runs that draw: tracking.figures=none never
    from ntk_sweep.figures import figure_builders, save_png

    folder.mkdir(parents=True, exist_ok=True)
    saved, failed = [], []
    with log_warnings():
        for name, build in figure_builders(record, which).items():
            try:
                save_png(build(), folder / f"{name}.png", metadata={"Title": name})
                saved.append(name)
            except Exception as exc:  # noqa: BLE001 - one bad figure must not stop the others
                log.error("figure %s could not be drawn: %s: %s", name, type(exc).__name__, exc)
                failed.append(name)
    return sorted(saved), sorted(failed)
