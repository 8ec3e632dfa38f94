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
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ntk_sweep import sweep_ui, tracking
from ntk_sweep.config import (
    analytic_enabled,
    check_with_data,
    compute_log_steps,
    figure_set,
    kernel_form_of,
    load_data,
    nearest_step,
    validate,
)
from ntk_sweep.progress import Progress, progress_mode

# matplotlib is imported once per process, with the app, not inside the first run's figure time

log = logging.getLogger(__name__)

PROGRESS_TICKS = 200  # progress / interrupt granularity, in fractions of the run


class Killed(BaseException):
    """Raised by the SIGTERM handler inside a run (a BaseException, like KeyboardInterrupt)."""


class SweepStopped(Exception):
    """Raised inside a job when its sweep's launching process stopped (`tracking.STOP_FILE`):
    the run is marked KILLED and the job returns, in whatever worker process it runs."""


# --------------------------------------------------------------------------- job context


@dataclass
class JobContext:
    output_dir: Path
    launch_dir: str
    multirun: bool = False
    sweep_dir: str | None = None
    job_num: int = 0
    overrides: list[str] = field(default_factory=list)
    hydra_files: Path | None = None
    sweeper_params: dict[str, Any] = field(default_factory=dict)
    preset: str = ""  # the experiment preset chosen (`experiment=NAME`), "" for none


def job_context(output_dir: str | Path | None = None) -> JobContext:
    """What Hydra knows about this job; outside Hydra, `output_dir` (or a temp dir) and cwd."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hc = HydraConfig.get()
        out = Path(output_dir or hc.runtime.output_dir)
        cwd = str(hc.runtime.cwd)
        sweep_dir = str(hc.sweep.dir) if hc.sweep.dir else None
        if sweep_dir and not os.path.isabs(sweep_dir):
            sweep_dir = os.path.join(cwd, sweep_dir)
        # a multirun job: its output dir lies in the sweep dir where the callback left the id
        multirun = bool(
            sweep_dir
            and Path(out).resolve().is_relative_to(Path(sweep_dir).resolve())
            and (Path(sweep_dir) / tracking.PARENT_ID_FILE).is_file()
        )
        subdir = hc.output_subdir
        params = OmegaConf.select(hc, "sweeper.params", default=None)
        return JobContext(
            output_dir=out,
            launch_dir=cwd,
            multirun=multirun,
            sweep_dir=sweep_dir if multirun else None,
            job_num=int(OmegaConf.select(hc, "job.num", default=0) or 0),
            overrides=list(hc.overrides.task),
            hydra_files=(out / subdir) if subdir else None,
            sweeper_params=OmegaConf.to_container(params) if params else {},
            preset=str(OmegaConf.select(hc, "runtime.choices.experiment", default="") or ""),
        )
    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="ntk-sweep-"))
    return JobContext(output_dir=out, launch_dir=os.getcwd())


# --------------------------------------------------------------------------- helpers


FLOATING_WARNING = re.compile(r"(overflow|invalid value|divide by zero|underflow) encountered")


@contextlib.contextmanager
def _log_warnings() -> Iterator[None]:
    """Route warnings of the numerical core to this module's log, once per message."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen: dict[str, None] = {}  # insertion-ordered set
    floating: dict[str, None] = {}
    for w in caught:
        msg = str(w.message)
        # NumPy's floating-point warnings ("overflow encountered in power", ...): one line
        (floating if FLOATING_WARNING.search(msg) else seen)[msg] = None
    for msg in seen:
        log.warning("%s", msg)
    if floating:
        log.warning(
            "numerical overflow / NaN (%s): values beyond the float range, expected where "
            "lr_effective exceeds 2N/lambda_max; the affected metrics are inf or NaN",
            "; ".join(floating),
        )


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into a `Killed` exception for the duration of a run (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise Killed(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Closer:
    """Ends the progress bar's line however the training loop exits."""

    def __init__(self, progress: Progress, step) -> None:
        self.progress, self.step = progress, step

    def close(self) -> None:
        self.progress.close(self.step())


# --------------------------------------------------------------------------- the run


@dataclass
class RunOutcome:
    status: str  # FINISHED or FAILED
    final_step: int
    final_metrics: dict[str, float]
    init_metrics: dict[str, float]
    failure_reason: str = ""
    train_time_s: float = 0.0
    figures_time_s: float = 0.0
    figure_names: list[str] = field(default_factory=list)
    phases: dict[str, str] = field(default_factory=dict)  # tag -> lazy / catapult / ...


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


def run_experiment(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run one configuration end to end and return a summary dict (see module docstring).

    Raises ConfigError / TrackingError (one line) before creating any run; re-raises
    KeyboardInterrupt, and turns SIGTERM into SystemExit(143), after marking the run KILLED.

    A multirun job resumes: if a run with the same config fingerprint already FINISHED in the
    experiment, or is RUNNING with a fresh heartbeat, the job is skipped (status "SKIPPED",
    `run_id` = that run, recorded on the sweep's parent run as tag
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
    run_name = cfg.tracking.run_name or _job_run_name(cfg, ctx, client, parent_id)
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
        return {**base_summary, **_not_run(f"not started: {stopped}")}
    if ctx.multirun:
        force = bool(cfg.get("force", False))
        with tracking.full_store_is_fatal(uri):
            skipped = _resume(
                client, experiment_id, chash, stale_after, parent_id, ctx.job_num, force
            )
        if skipped is not None:
            return {**base_summary, **skipped, "total_time_s": time.perf_counter() - t_start}
    tags = {
        tracking.ROLE_TAG: "job",
        tracking.SWEEP_ID_TAG: parent_id,
        tracking.GIT_COMMIT_TAG: tracking.git_commit(),
        tracking.JOB_NUM_TAG: str(ctx.job_num),
        tracking.OUTPUT_DIR_TAG: str(Path(ctx.output_dir).resolve()),
        tracking.OVERRIDES_TAG: " ".join(ctx.overrides),
        tracking.CONFIG_HASH_TAG: chash,
        tracking.PRESET_TAG: ctx.preset,
        **tracking.host_tags(),
        **tracking.heartbeat_tags(),
    }
    with _sigterm_raises(), tracking.full_store_is_fatal(uri):
        run_id = tracking.create_run(client, experiment_id, run_name, tags, parent_id or None)
        announce = f"MLflow run {run_id} ({run_name or 'unnamed'}) in {tracking.redact_uri(uri)}"
        with tracking.Heartbeat(client, run_id, tracking.heartbeat_interval(stale_after)):
            outcome = _run_and_close(cfg, data, net, client, run_id, ctx, announce)
    status = outcome.status

    summary = {
        **base_summary,
        "run_id": run_id,
        "status": status,
        "final_step": outcome.final_step,
        "failure_reason": outcome.failure_reason,
        "metrics": {**outcome.init_metrics, **outcome.final_metrics},
        "train_time_s": outcome.train_time_s,
        "figures_time_s": outcome.figures_time_s,
        "total_time_s": time.perf_counter() - t_start,
        "phase_net": outcome.phases.get(tracking.PHASE_NET_TAG, ""),
        "phase_lin": outcome.phases.get(tracking.PHASE_LIN_TAG, ""),
    }
    print(tracking.redact_uri(format_summary(cfg, data, net, summary)), flush=True)
    return summary


def _job_run_name(cfg: DictConfig, ctx: JobContext, client, parent_id: str) -> str:
    """`w=100 s=2 ...` (see `ntk_sweep.sweep_ui`); a sweep's child names itself by the keys its
    parent run lists as swept."""
    parent_tags = sweep_ui.run_tags(client, parent_id) if parent_id else None
    width, seed = int(cfg.model.width), int(cfg.seed)
    return sweep_ui.job_run_name(ctx.overrides, width, seed, ctx.preset, parent_tags)


def _resume(
    client,
    experiment_id: str,
    chash: str,
    stale_after_s: float,
    parent_id: str,
    job_num: int,
    force: bool = False,
) -> dict[str, Any] | None:
    """Apply `tracking.plan_resume` for this job: mark dead runs KILLED; if the job is to be
    skipped (never with `force`), record the reused run on the parent and return the (partial)
    summary, else None."""
    runs = tracking.runs_with_hash(client, experiment_id, chash)
    task = tracking.slurm_task()
    plan = tracking.plan_resume(runs, time.time(), stale_after_s, task)
    for run, reason in zip(plan.dead, plan.reasons, strict=True):
        tracking.mark_dead(client, run, reason)
        if reason == tracking.TAKEOVER_REASON:
            log.warning(
                "run %s was left RUNNING by an earlier attempt of SLURM task %s (preempted or "
                "requeued): marked KILLED, running it again",
                run.info.run_id,
                task[0],
            )
        else:
            log.warning("run %s was left RUNNING (%s): marked KILLED", run.info.run_id, reason)
    if plan.action == "run" or force:
        if force and plan.action != "run":
            log.info("force=true: running again although run %s has this config", plan.run_id)
        return None
    if plan.action == "finished":
        message = f"skipped: finished run {plan.run_id} has this config"
        log.info("%s (force=true runs it again)", message)
    else:
        where = next(r for r in runs if r.info.run_id == plan.run_id).data.tags
        message = (
            f"skipped: run {plan.run_id} with this config is still RUNNING (heartbeat within "
            f"{stale_after_s:g}s; host {where.get(tracking.HOST_TAG, '?')}, pid "
            f"{where.get(tracking.PID_TAG, '?')}): not started twice"
        )
        log.warning("%s", message)
    if parent_id:
        tracking.set_tag(client, parent_id, f"{tracking.RESUMED_RUN_TAG}{job_num}", plan.run_id)
    return {**_not_run(message), "run_id": plan.run_id}


def _not_run(reason: str) -> dict[str, Any]:
    """The summary of a job that runs nothing (`reason` says why)."""
    return {
        "run_id": "",
        "status": "SKIPPED",
        "skipped_reason": reason,
        "final_step": 0,
        "failure_reason": "",
        "metrics": {},
        "train_time_s": 0.0,
        "figures_time_s": 0.0,
    }


def _run_and_close(
    cfg, data, net, client, run_id: str, ctx: JobContext, announce: str = ""
) -> RunOutcome:
    """Log `announce`, train and record into run `run_id`, then mark it FINISHED / FAILED /
    KILLED.

    Ctrl-C re-raises KeyboardInterrupt and SIGTERM (inside `_sigterm_raises`) exits with
    SystemExit(143), both after marking the run KILLED; so does a SystemExit (submitit's
    requeue on preemption), re-raised. A time limit without requeue (submitit's
    UncompletedJobError) marks it KILLED and returns, so the sweep's launcher ends cleanly. Any
    other exception marks it FAILED with the reason as a tag and propagates. Signals arriving
    while the run is being marked wait until it is (`_signals_deferred`).
    """
    metric_log = tracking.MetricLog(client, run_id, float(cfg.tracking.metrics_every_s))
    try:  # from the first statement: a Ctrl-C right after the run was created marks it KILLED
        if announce:
            log.info("%s", announce)
        container = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(container, dict)
        container.pop("force", None)  # how to launch, not what was run
        tracking.log_params(client, run_id, tracking.flatten(container))
        tracking.log_text(
            client, run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml"
        )
        if ctx.hydra_files is not None and ctx.hydra_files.is_dir():
            tracking.log_artifacts(client, run_id, ctx.hydra_files, "hydra")
        outcome = _train_and_record(cfg, data, net, client, run_id, ctx, metric_log)
    except BaseException as exc:
        stop = _stop_reason(exc)
        if stop:
            status, reason = "KILLED", f"killed by {stop}"
        elif full := tracking.store_full_reason(exc):
            status, reason = "FAILED", f"tracking store full: {full}"
        else:
            status, reason = "FAILED", f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        try:
            with _signals_deferred():
                _flush_quietly(metric_log)
                _mark_quietly(client, run_id, status, reason[:500])
                if stop:
                    log.error("run %s interrupted (%s): marked KILLED", run_id, stop)
        except Killed:  # a SIGTERM came while marking: the run is marked, now stop
            raise SystemExit(128 + signal.SIGTERM) from None
        if isinstance(exc, Killed):
            raise SystemExit(128 + signal.SIGTERM) from None
        if _time_limit_error(exc) is not None or isinstance(exc, SweepStopped):
            return RunOutcome("KILLED", 0, {}, {}, reason[:500])
        raise
    with _signals_deferred():
        tracking.end_run(client, run_id, outcome.status)
    return outcome


def _stop_reason(exc: BaseException) -> str:
    """Why the process is being stopped ('' if `exc` is an error of the run itself)."""
    if isinstance(exc, Killed):
        return "SIGTERM"
    if isinstance(exc, SweepStopped):
        return f"the sweep stopping ({exc})"
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt (Ctrl-C)"
    if isinstance(exc, SystemExit):  # submitit exits this way after requeueing a preempted job
        return f"SystemExit({exc.code}): preempted or requeued"
    timeout = _time_limit_error(exc)
    if timeout is not None:
        return f"time limit ({' '.join(str(timeout).split())})"
    return ""


def _time_limit_error(exc: BaseException | None) -> BaseException | None:
    """submitit's UncompletedJobError (time limit, no requeue left), raised by its signal
    handler wherever the run was, so maybe wrapped by the store client (MlflowException)."""
    for _ in range(8):
        if exc is None:
            return None
        if type(exc).__name__ == "UncompletedJobError":
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _mark_quietly(client, run_id: str, status: str, reason: str) -> None:
    try:
        tracking.set_tag(client, run_id, tracking.FAILURE_TAG, reason)
    except Exception as exc:  # pragma: no cover - store vanished mid-run
        log.error("could not tag run %s: %s", run_id, tracking.one_line(exc))
    tracking.end_run(client, run_id, status)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGTERM, SIGINT and SIGUSR2 back while a run is being marked (main thread only):
    SLURM's requeue SIGTERM right after submitit's preemption exit must not leave the run
    RUNNING. Those that arrived are delivered, to the handlers as they were, on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    signums = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2]
    previous = {
        s: signal.signal(s, lambda signum, frame: pending.append(signum))
        for s in signums
        if signal.getsignal(s) is not None  # None: a handler not set from Python, left alone
    }
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)


def _flush_quietly(metric_log: tracking.MetricLog) -> None:
    """Keep what a dying run measured; a store that fails now must not hide the real error."""
    try:
        metric_log.flush()
    except Exception as exc:  # pragma: no cover - store vanished mid-run
        log.error("could not send the last metrics: %s", tracking.one_line(exc))


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
            with contextlib.nullcontext() if started else _log_warnings():
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
    if figure_set(cfg) != "none":
        t_fig = time.perf_counter()
        names = _record_figures(cfg, data, net, record, client, run_id, out / "figures")
        figures_time = time.perf_counter() - t_fig

    metric_log.log(
        {"train_time_s": train_time, "final_step": last_step, "figures_time_s": figures_time},
        last_step,
    )
    metric_log.flush()
    log_file = _job_log_file(ctx)
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


def figure_inputs(cfg: DictConfig, data, net, record) -> dict[str, Any]:
    """What `figures.figure_builders` draws: the record, the data and the run's settings."""
    log_steps = [int(s) for s in record.steps]
    snaps = [s for s in cfg.train.snapshot_steps if s <= int(cfg.train.steps)] or log_steps

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
        "fig8_step": nearest_step(log_steps, int(cfg.train.fig8_step)),
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
            "seed": int(cfg.seed),
            "activation": net.activation,
            "parameterization": net.parameterization,
            "dataset": data.name,
            "sigma_b": net.sigma_b,
            "alpha": net.alpha,
        },
    }


def _record_figures(cfg, data, net, record, client, run_id: str, folder: Path) -> list[str]:
    """Draw and log the figures of `tracking.figures`; a plotting bug tags the run
    (`ntk_sweep.figures_failed`) but never fails a finished experiment."""
    names: list[str] = []
    try:
        names, failed = _save_figures(
            figure_inputs(cfg, data, net, record), folder, figure_set(cfg)
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


UNSTABLE_WARNING = r"lr=.* >= 2N/lambda_max=.*: gradient descent diverges"


def _unstable_lr_message(lr: float, lr_eff: float, lr_max: float, lr_scale: float) -> str:
    """The one warning line before training when lr_effective >= 2N / lambda_max(Theta_0)."""
    stable = float(f"{0.5 * lr_max / lr_scale:.2g}")
    return (
        f"lr={lr:g} (lr_effective={lr_eff:g}) is {lr_eff / lr_max:.3g}x the stable bound "
        f"2N/lambda_max={lr_max:g} of the initial NTK: gradient descent will catapult, collapse "
        f"or diverge (MATH.md s.4); a stable choice is lr={stable:g}"
    )


def _save_figures(
    record: dict[str, Any], folder: Path, which: str = "all"
) -> tuple[list[str], list[str]]:
    """Render the figures of set `which` (`tracking.figures`: paper, all) to `folder`, one at
    a time; returns (saved names, failed names). A figure that cannot be drawn (e.g. values
    near the float range) is skipped with a logged error."""
    # Matplotlib (~0.5 s to import) only for the runs that draw: tracking.figures=none never
    from ntk_sweep.figures import figure_builders, save_png

    folder.mkdir(parents=True, exist_ok=True)
    saved, failed = [], []
    with _log_warnings():
        for name, build in figure_builders(record, which).items():
            try:
                save_png(build(), folder / f"{name}.png", metadata={"Title": name})
                saved.append(name)
            except Exception as exc:  # noqa: BLE001 - one bad figure must not stop the others
                log.error("figure %s could not be drawn: %s: %s", name, type(exc).__name__, exc)
                failed.append(name)
    return sorted(saved), sorted(failed)


def _job_log_file(ctx: JobContext) -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    path = Path(ctx.output_dir) / f"{HydraConfig.get().job.name}.log"
    return path if path.is_file() and path.stat().st_size > 0 else None


# --------------------------------------------------------------------------- summary


def _g(value: Any, fmt: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(float(value), fmt)


def _optimizer_text(train: DictConfig) -> str:
    """`GD`, `SGD (batch 32)`, `momentum 0.9 (batch 32)`, `Adam` ... and a non-MSE loss."""
    name = {"gd": "GD", "sgd": "SGD", "momentum": f"momentum {float(train.momentum):g}"}
    text = name.get(str(train.optimizer), "Adam")
    if train.get("batch_size") is not None:
        text += f" (batch {int(train.batch_size)})"
    return text if str(train.loss) == "mse" else f"{text} {train.loss}"


def format_summary(cfg: DictConfig, data, net, s: dict[str, Any]) -> str:
    """The one-screen end-of-run summary."""
    mt = s["metrics"]

    def g(key: str) -> str:
        return _g(mt.get(key))

    lines = [
        f"=== ntk-sweep run {s['status']}: {s['run_name'] or '(no overrides)'} ===",
        f"model     {net.activation} MLP, {net.parameterization} parameterization, depth "
        f"{net.depth}, width {net.width}, sigma_w {net.sigma_w:g}, sigma_b {net.sigma_b:g} "
        f"({net.dtype})" + (f", {net.outputs} outputs" if net.outputs > 1 else ""),
        f"data      {data.name}: {data.n_train} train / {data.n_test} test points, "
        f"d={data.input_dim}",
        f"training  {s['final_step']}/{cfg.train.steps} {_optimizer_text(cfg.train)} steps, lr "
        f"{float(cfg.train.lr):g} "
        f"(effective {g('lr_effective')}; 2N/lambda_max {g('lr_max_stable')}), "
        f"{s['train_time_s']:.1f}s",
        f"phase     network {s['phase_net'] or '-'}, linearised {s['phase_lin'] or '-'} "
        f"(lr_effective / lr_max_stable {g('lr_over_lr_max_stable')})",
        f"NTK init  lambda_max {g('ntk_lambda_max')}, lambda_min {g('ntk_lambda_min')}, "
        f"condition {g('ntk_condition_number')}, analytic vs empirical "
        f"{g('ntk_analytic_vs_empirical')}",
    ]
    if s["status"] == "FAILED":
        lines.append(f"FAILED    {s['failure_reason']}")
    else:
        lines += [
            f"loss      network {g('loss')} | linearised {g('loss_lin')} | kernel "
            f"{g('loss_kernel')} | test {g('test_loss')}",
            f"kernel    drift {g('kernel_drift')} (test {g('kernel_drift_test')}), distance "
            f"{g('kernel_distance')} (test {g('kernel_distance_test')})",
            f"net vs    linearised RMS {g('lin_error_train')} train / {g('lin_error_test')} "
            f"test; kernel prediction {g('kernel_pred_error_test')} test; analytic "
            f"{g('analytic_pred_error_test')} test",
            f"params    moved {g('param_movement')} of their initial norm",
        ]
        if "test_accuracy" in mt:
            lines.append(
                f"accuracy  test: network {g('test_accuracy')} | linearised "
                f"{g('test_accuracy_lin')} | kernel {g('test_accuracy_kernel')}; train "
                f"{g('train_accuracy')}"
            )
    lines += [
        f"outputs   {s['output_dir']}",
        f"tracking  {s['tracking_uri']} (experiment id {s['experiment_id']}, run {s['run_id']})",
    ]
    if s["tracking_uri"].startswith("sqlite:"):
        lines.append(f"view      mlflow ui --backend-store-uri {s['tracking_uri']}")
    return "\n".join(lines)
