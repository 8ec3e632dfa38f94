"""One run of the sweep app: train a network, its linearisation and the kernel predictions side
by side, measure how far they drift apart, and record everything in MLflow.

`run_experiment(cfg)` is a plain function (run.py's `@hydra.main` only calls it). Order:
`preflight` (validate the config, load the dataset, check the tracking store: all before any
training, each failure a one-line ConfigError/TrackingError); in a multirun, resume (skip the job
if its config fingerprint already FINISHED, mark runs whose heartbeat stopped KILLED); create the
run (a heartbeat thread refreshes tag `ntk_sweep.heartbeat` while it lives), then

1. measure (`core.measure.measure_steps`: the initial kernels and kernel predictions, GD of
   the network and its linearisation, the metrics of docs/metrics.md at every log step),
   sending each log step's metrics in one `log_batch` request as they come;
2. artifacts from the same record: resolved config, Hydra's .hydra files, arrays/ntk.npz,
   figures/*.png.

A NaN/inf loss stops the run, marks it FAILED with `ntk_sweep.failure_reason` and returns
(so a sweep goes on); Ctrl-C or SIGTERM marks it KILLED, keeping what was logged, and exits.

The run's pieces live in modules of their own: `job` (what Hydra knows about the job, its
tags and log file, warning routing), `run_resume` (skip or rerun a multirun job),
`lifecycle` (SIGTERM, the run's end: FINISHED / FAILED / KILLED), `figure_adapter` (the figure
adapter) and `summary` (the summary dict and its end-of-run text).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ntk_sweep import tracking
from ntk_sweep.config import (
    analytic_enabled,
    check_with_data,
    compute_log_steps,
    figure_set,
    kernel_form_of,
    load_data,
    validate,
)
from ntk_sweep.figure_adapter import FigureSettings, record_figures
from ntk_sweep.job import JobContext, job_context, job_log_file, job_tags, log_warnings
from ntk_sweep.lifecycle import RunOutcome, SweepStopped, run_and_close, sigterm_raises
from ntk_sweep.progress import Progress, progress_mode
from ntk_sweep.run_resume import job_run_name, not_run, resume
from ntk_sweep.summary import format_summary, run_summary

# matplotlib is imported once per process, with the app, not inside the first run's figure time

log = logging.getLogger(__name__)

PROGRESS_TICKS = 200  # progress / interrupt granularity, in fractions of the run


def run_experiment(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run one configuration end to end and return a summary dict (see module docstring).

    Raises ConfigError / TrackingError (one line) before creating any run; re-raises
    KeyboardInterrupt, and turns SIGTERM into SystemExit(143), after marking the run KILLED
    (`lifecycle.run_and_close`).

    A multirun job resumes (`run_resume.resume`): if a run with the same config fingerprint
    already FINISHED in the experiment, or is RUNNING with a fresh heartbeat, the job is skipped
    (status "SKIPPED", `run_id` = that run, recorded on the sweep's parent run as tag
    `ntk_sweep.resumed_run.<job num>`), unless `force=true`; RUNNING runs without a heartbeat
    for `tracking.stale_after_s` are marked KILLED (also with `force`) and the job runs anew.
    """
    t_start = time.perf_counter()
    tracking.install_log_redaction()
    cfg = _without_hydra(cfg)
    ctx = job_context(output_dir)
    data, net, uri = preflight(cfg, ctx.launch_dir)
    if ctx.sweeper_params and not ctx.multirun:
        log.warning(
            "this config defines a sweep (hydra.sweeper.params) but runs as a single job: "
            "add -m to run the sweep"
        )
    client, experiment_id = tracking.open_store(
        uri, str(cfg.tracking.experiment), cfg.tracking.artifact_location
    )
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    parent_id = tracking.read_parent_id(ctx.sweep_dir) if ctx.multirun else ""
    run_name = cfg.tracking.run_name or job_run_name(
        int(cfg.model.width), int(cfg.seed), ctx, client, parent_id
    )
    chash = tracking.config_hash(container)
    base_summary = {
        "run_name": run_name,
        "experiment_id": experiment_id,
        "tracking_uri": uri,
        "parent_run_id": parent_id,
        "output_dir": str(ctx.output_dir),
        "config_hash": chash,
    }
    stale_after = float(cfg.tracking.stale_after_s)
    stopped = tracking.stop_requested(ctx.sweep_dir) if ctx.multirun else ""
    if stopped:  # a job launched after its sweep stopped (a submitit task, a queued joblib job)
        log.warning("not started: %s", stopped)
        return {**base_summary, **not_run(f"not started: {stopped}")}
    if ctx.multirun:
        force = bool(cfg.get("force", False))
        with tracking.full_store_is_fatal(uri):
            skipped = resume(
                client, experiment_id, chash, stale_after, parent_id, ctx.job_num, force
            )
        if skipped is not None:
            return {**base_summary, **skipped, "total_time_s": time.perf_counter() - t_start}
    tags = job_tags(ctx, parent_id, chash)
    with sigterm_raises(), tracking.full_store_is_fatal(uri):
        run_id = tracking.create_run(client, experiment_id, run_name, tags, parent_id or None)
        announce = f"MLflow run {run_id} ({run_name or 'unnamed'}) in {tracking.redact_uri(uri)}"
        with tracking.Heartbeat(client, run_id, tracking.heartbeat_interval(stale_after)):
            metric_log = tracking.MetricLog(client, run_id, float(cfg.tracking.metrics_every_s))
            outcome = run_and_close(
                client,
                run_id,
                metric_log,
                lambda: _record_and_train(
                    cfg, data, net, client, run_id, ctx, metric_log, announce
                ),
            )
    summary = run_summary(base_summary, run_id, outcome, t_start)
    text = format_summary(schedule_of(cfg, data), data, net, summary)
    print(tracking.redact_uri(text), flush=True)
    return summary


def build_network(cfg: DictConfig, input_dim: int):
    from ntk_sweep.core.network import MLP

    m = cfg.model
    return MLP(
        input_dim=input_dim,
        width=int(m.width),
        depth=int(m.depth),
        activation=str(m.activation),
        parameterization=str(m.parameterization),
        sigma_w=float(m.sigma_w),
        sigma_b=float(m.sigma_b),
        dtype=str(m.dtype),
        alpha=None if m.get("alpha") is None else float(m.alpha),
        outputs=int(m.outputs),
    )


def preflight(cfg: DictConfig, launch_dir: str | None = None):
    """Every check that must pass before anything is recorded or trained, in order: the config's
    fields (`validate`), the dataset (`load_data`), the network, the tracking URI (malformed ->
    ConfigError) and the store (unreachable / unwritable -> TrackingError). Each failure is one
    line; nothing is created in the store (an SQLite database's folder at most).

    Returns (dataset, network, absolute tracking URI). run.py, sweep validation and the tests
    all go through here.
    """
    base = launch_dir or os.getcwd()
    cfg = _without_hydra(cfg)
    validate(cfg)
    data = load_data(cfg, base_dir=base)
    check_with_data(cfg, data)
    net = build_network(cfg, data.input_dim)
    uri = tracking.resolve_tracking_uri(cfg.tracking.uri, base)
    tracking.check_tracking_uri(uri)
    tracking.check_artifact_location(cfg.tracking.artifact_location, base)
    return data, net, uri


def _record_and_train(
    cfg, data, net, client, run_id: str, ctx: JobContext, metric_log, announce: str = ""
) -> RunOutcome:
    """Log `announce`, the run's params, resolved config and Hydra files, then train and record
    (`_train_and_record`); `lifecycle.run_and_close` marks the run however this ends."""
    if announce:
        log.info("%s", announce)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    container.pop("force", None)  # how to launch, not what was run
    tracking.log_params(client, run_id, tracking.flatten(container))
    tracking.log_text(client, run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
    if ctx.hydra_files is not None and ctx.hydra_files.is_dir():
        tracking.log_artifacts(client, run_id, ctx.hydra_files, "hydra")
    return _train_and_record(cfg, data, net, client, run_id, ctx, metric_log)


def _without_hydra(cfg: DictConfig) -> DictConfig:
    if "hydra" not in cfg:
        return cfg
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return cfg


def kernel_form(cfg: DictConfig, data) -> str:
    """`config.kernel_form_of` the dataset's sizes: "full" or "mean" (K > 1 outputs)."""
    return kernel_form_of(cfg, data.n_train, data.n_test)


def schedule_of(cfg: DictConfig, data):
    """The measurement schedule (`core.measure.Schedule`) of a config: train.* and the
    progress ticks the app wants to see between log steps."""
    from ntk_sweep.core.measure import Schedule

    steps = int(cfg.train.steps)
    log_steps = compute_log_steps(steps, int(cfg.train.n_log_points), cfg.train.snapshot_steps)
    ticks = {int(round(steps * k / PROGRESS_TICKS)) for k in range(PROGRESS_TICKS)}
    return Schedule(
        lr=float(cfg.train.lr),
        steps=steps,
        log_steps=tuple(log_steps),
        progress_steps=tuple(sorted(ticks - set(log_steps))),
        test_kernel_points=int(cfg.train.test_kernel_points),
        analytic=analytic_enabled(cfg),
        backend=str(cfg.train.backend),
        optimizer=str(cfg.train.optimizer),
        loss=str(cfg.train.loss),
        batch_size=None if cfg.train.batch_size is None else int(cfg.train.batch_size),
        momentum=float(cfg.train.momentum),
        kernel_form=kernel_form(cfg, data),
    )


def figure_settings(cfg: DictConfig) -> FigureSettings:
    """What the figure adapter takes from a config: the figure set, train.* and the seed."""
    return FigureSettings(
        which=figure_set(cfg),
        steps=int(cfg.train.steps),
        snapshot_steps=tuple(int(s) for s in cfg.train.snapshot_steps),
        fig8_step=int(cfg.train.fig8_step),
        seed=int(cfg.seed),
    )


def _warn_about_init(init: dict[str, float], rows: int, lr: float, lr_scale: float) -> None:
    """The warnings a run's initial kernel (`rows` x `rows`) calls for, before any GD step."""
    lr_eff, lr_max = init["lr_effective"], init["lr_max_stable"]
    if lr_eff >= lr_max:
        log.warning("%s", _unstable_lr_message(lr, lr_eff, lr_max, lr_scale))
    if init["ntk_rank"] < rows:
        log.warning(
            "the initial NTK is singular (rank %d of %d, condition number %s): kernel "
            "predictions use the spectral limit and the kernel machine a pseudo-inverse "
            "(MATH.md s.3; the paper's sigma_b=0 setting is degenerate)",
            int(init["ntk_rank"]),
            rows,
            init["ntk_condition_number"],
        )


class _Closer:
    """Ends the progress bar's line however the training loop exits."""

    def __init__(self, progress: Progress, step) -> None:
        self.progress, self.step = progress, step

    def close(self) -> None:
        self.progress.close(self.step())


def _measure_and_log(
    cfg, data, net, run_id: str, metric_log: tracking.MetricLog, sweep_dir: str | None = None
):
    """Run `core.measure.measure_steps`, streaming its metrics to `metric_log` and the progress
    bar; returns the record. Raises SweepStopped at the first progress tick after the sweep in
    `sweep_dir` was stopped."""
    from ntk_sweep.core.measure import measure_steps

    schedule = schedule_of(cfg, data)
    progress = Progress(
        schedule.steps,
        f"train {run_id[:8]}",
        progress_mode(cfg.tracking.progress),
        len(schedule.log_steps),
    )
    compiling = False  # set by the first event: a kernel compiles in the first GD steps
    steps = measure_steps(net, data, schedule, int(cfg.seed))
    last_step, started = 0, False
    with contextlib.closing(_Closer(progress, lambda: last_step)):
        while True:
            # the initial kernels' warnings (e.g. overflow in the kernel predictions) are
            # logged before training; above 2N/lambda_max `_warn_about_init` says it once
            with contextlib.nullcontext() if started else log_warnings():
                warnings.filterwarnings("ignore", UNSTABLE_WARNING, RuntimeWarning)
                try:
                    event = next(steps)
                except StopIteration as done:
                    return done.value
            last_step, started = event.step, True
            compiling = compiling or event.compiling
            stopped = tracking.stop_requested(sweep_dir)
            if stopped:
                raise SweepStopped(stopped)
            if compiling and event.step > 0:  # the first GD steps compiled the fused kernel
                compiling = False
                progress.restart_rate(event.step)
            progress.update(event.step)
            if event.init is not None:
                rows = data.n_train * (net.outputs if schedule.kernel_form == "full" else 1)
                _warn_about_init(event.init, rows, schedule.lr, net.lr_scale)
            if event.metrics:
                metric_log.log(
                    {**event.init, **event.metrics} if event.init else event.metrics, event.step
                )
            if event.seconds:
                progress.log_step_done(event.seconds)
            if compiling and event.step == 0:
                progress.status("compiling (once)")


def _train_and_record(
    cfg, data, net, client, run_id: str, ctx: JobContext, metric_log: tracking.MetricLog
) -> RunOutcome:
    """Measure (`_measure_and_log`), then record the arrays and figures of the record."""
    t0 = time.perf_counter()
    record = _measure_and_log(cfg, data, net, run_id, metric_log, ctx.sweep_dir)
    train_time = time.perf_counter() - t0
    phases = {tracking.PHASE_NET_TAG: record.phase_net, tracking.PHASE_LIN_TAG: record.phase_lin}
    tags = {**tracking.heartbeat_tags(), **phases}
    if net.outputs > 1:  # which K-output kernel the kernel metrics use (docs/metrics.md)
        tags[tracking.KERNEL_FORM_TAG] = record.kernel_form
    metric_log.flush(tags=tags)
    last_step = record.final_step
    if record.failure:
        log.error("run %s FAILED: %s", run_id, record.failure)
        tracking.set_tag(client, run_id, tracking.FAILURE_TAG, record.failure)
        metric_log.log({"train_time_s": train_time, "final_step": last_step}, last_step)
        metric_log.flush()
        return RunOutcome(
            "FAILED",
            last_step,
            record.final,
            record.init,
            record.failure,
            train_time,
            phases=phases,
        )

    out = Path(ctx.output_dir)
    (out / "arrays").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "arrays" / "ntk.npz", **record.arrays(data))
    tracking.log_artifact(client, run_id, out / "arrays" / "ntk.npz", "arrays")

    figures_time = 0.0
    names: list[str] = []
    settings = figure_settings(cfg)
    if settings.which != "none":
        t_fig = time.perf_counter()
        names = record_figures(settings, data, net, record, client, run_id, out / "figures")
        figures_time = time.perf_counter() - t_fig

    metric_log.log(
        {"train_time_s": train_time, "final_step": last_step, "figures_time_s": figures_time},
        last_step,
    )
    metric_log.flush()
    log_file = job_log_file(ctx)
    if log_file is not None:
        tracking.log_artifact(client, run_id, log_file, "logs")
    return RunOutcome(
        "FINISHED",
        last_step,
        record.final,
        record.init,
        "",
        train_time,
        figures_time,
        names,
        phases,
    )


UNSTABLE_WARNING = r"lr=.* >= 2N/lambda_max=.*: gradient descent diverges"


def _unstable_lr_message(lr: float, lr_eff: float, lr_max: float, lr_scale: float) -> str:
    """The one warning line before training when lr_effective >= 2N / lambda_max(Theta_0)."""
    stable = float(f"{0.5 * lr_max / lr_scale:.2g}")
    return (
        f"lr={lr:g} (lr_effective={lr_eff:g}) is {lr_eff / lr_max:.3g}x the stable bound "
        f"2N/lambda_max={lr_max:g} of the initial NTK: gradient descent will catapult, collapse "
        f"or diverge (MATH.md s.4); a stable choice is lr={stable:g}"
    )
