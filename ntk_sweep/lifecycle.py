"""A run's lifecycle: SIGTERM turned into `Killed` while it trains, signals held back while it
is marked, and its end: FINISHED, FAILED (an error, a full store) or KILLED (Ctrl-C, SIGTERM,
submitit's preemption exit or time limit, the sweep stopping)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ntk_sweep import tracking

log = logging.getLogger(__name__)


class Killed(BaseException):
    """Raised by the SIGTERM handler inside a run (a BaseException, like KeyboardInterrupt)."""


class SweepStopped(Exception):
    """Raised inside a job when its sweep's launching process stopped (`tracking.STOP_FILE`):
    the run is marked KILLED and the job returns, in whatever worker process it runs."""


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


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
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


def run_and_close(
    client, run_id: str, metric_log: tracking.MetricLog, body: Callable[[], RunOutcome]
) -> RunOutcome:
    """Run `body` (log the config, train and record into run `run_id`), then mark the run
    FINISHED / FAILED / KILLED.

    Ctrl-C re-raises KeyboardInterrupt and SIGTERM (inside `sigterm_raises`) exits with
    SystemExit(143), both after marking the run KILLED; so does a SystemExit (submitit's
    requeue on preemption), re-raised. A time limit without requeue (submitit's
    UncompletedJobError) marks it KILLED and returns, so the sweep's launcher ends cleanly. Any
    other exception marks it FAILED with the reason as a tag and propagates. Signals arriving
    while the run is being marked wait until it is (`signals_deferred`).
    """
    try:  # from the first statement: a Ctrl-C right after the run was created marks it KILLED
        outcome = body()
    except BaseException as exc:
        stop = _stop_reason(exc)
        if stop:
            status, reason = "KILLED", f"killed by {stop}"
        elif full := tracking.store_full_reason(exc):
            status, reason = "FAILED", f"tracking store full: {full}"
        else:
            status, reason = "FAILED", f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        try:
            with signals_deferred():
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
    with signals_deferred():
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
def signals_deferred() -> Iterator[None]:
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
