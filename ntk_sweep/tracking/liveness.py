"""Whether a run's process is alive, and closing the runs whose process is over.

A running job records where it runs (`host_tags`: host, pid, process identity, SLURM task) and
refreshes a heartbeat tag (`Heartbeat`). A RUNNING run is dead (`death_reason`) when an earlier
attempt of the same SLURM task left it, when its process on this host is gone, or when its
heartbeat is older than its staleness threshold; such runs are marked KILLED (`mark_dead`,
`close_dead_runs`, `close_gone_children`, `settle_children`). The files of a sweep's folder that
coordinate its processes live here too: the parent run's id and the stop request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ntk_sweep.tracking.names import (
    FAILURE_TAG,
    HEARTBEAT_TAG,
    HOST_TAG,
    PARENT_TAG,
    PID_TAG,
    PROCESS_TAG,
    SLURM_JOB_TAG,
    SLURM_RESTART_TAG,
    STALE_PARAM,
)
from ntk_sweep.tracking.store import one_line, retry, search_all_runs, set_tag

log = logging.getLogger(__name__)

PARENT_ID_FILE = "mlflow_parent_run_id"
# Written into the sweep folder when the launching process stops before the sweep's end (a
# signal, a launcher error): jobs in other processes (joblib workers, submitit tasks) read it at
# their start and at every progress tick, and stop (KILLED) instead of running on unrecorded.
STOP_FILE = "sweep_stopped"
DEAD_REASON = "no heartbeat: process died"
TAKEOVER_REASON = "requeued: the same SLURM task started again and took the run over"
HEARTBEAT_EVERY_S = 30.0  # a running job refreshes its heartbeat at least this often


# --------------------------------------------------------------------------- the sweep folder


def write_parent_id(sweep_dir: str | Path, run_id: str) -> Path:
    path = Path(sweep_dir) / PARENT_ID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return path


def read_parent_id(sweep_dir: str | Path | None) -> str:
    if not sweep_dir:
        return ""
    path = Path(sweep_dir) / PARENT_ID_FILE
    return path.read_text().strip() if path.is_file() else ""


def request_stop(sweep_dir: str | Path, reason: str) -> None:
    """Ask every job of the sweep in `sweep_dir` to stop (see STOP_FILE)."""
    with contextlib.suppress(OSError):
        (Path(sweep_dir) / STOP_FILE).write_text(reason + "\n")


def stop_requested(sweep_dir: str | Path | None) -> str:
    """Why the sweep in `sweep_dir` was stopped, '' if it was not."""
    if not sweep_dir:
        return ""
    try:
        return (Path(sweep_dir) / STOP_FILE).read_text().strip() or "the sweep was stopped"
    except OSError:
        return ""


# --------------------------------------------------------------------------- heartbeat


def heartbeat_tags() -> dict[str, str]:
    return {HEARTBEAT_TAG: f"{time.time():.3f}"}


def heartbeat_interval(stale_after_s: float) -> float:
    """How often a job refreshes its heartbeat: every 30 s, more often for a tiny threshold."""
    return max(0.2, min(HEARTBEAT_EVERY_S, float(stale_after_s) / 4))


class Heartbeat:
    """Context manager: a daemon thread sets the heartbeat tag of `run_id` every `every_s`
    seconds while the block runs (so slow steps such as a huge kernel still show life). The
    thread is stopped and joined on exit: nothing outlives the job in a reused worker."""

    def __init__(
        self, client, run_id: str, every_s: float, also: Callable[[], object] | None = None
    ) -> None:
        """`also`: called at each beat too (a sweep's parent closes its dead jobs)."""
        self.client, self.run_id, self.every_s, self.also = client, run_id, every_s, also
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, heartbeat_tags()[HEARTBEAT_TAG])
                if self.also is not None:
                    self.also()
            except Exception as exc:  # noqa: BLE001 - a missed beat is not an error
                log.debug("heartbeat of run %s failed: %s", self.run_id, one_line(exc))

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-{self.run_id[:8]}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def last_heartbeat(run) -> float:
    """Unix time of a run's latest heartbeat (its start time if it never sent one)."""
    try:
        return float(run.data.tags[HEARTBEAT_TAG])
    except (KeyError, TypeError, ValueError):
        return (run.info.start_time or 0) / 1000.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_identity(pid: int | None = None) -> str:
    """`<boot id>:<start time>` of process `pid` (this one by default) on this machine, '' where
    /proc cannot tell (not Linux, or no such process). A pid reused by a later process has
    another start time; a reboot gives another boot id."""
    boot = _boot_id()
    try:
        stat = Path(f"/proc/{os.getpid() if pid is None else pid}/stat").read_text()
    except OSError:
        return ""
    # field 22 (starttime); the command name in field 2 may hold spaces and ')' itself
    return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}" if boot else ""


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def process_gone(tags: Mapping[str, str]) -> str:
    """Why the process recorded in a run's tags is certainly dead, or '' where it may be alive
    or this machine cannot tell: it ran on this host (same host name and boot) and its pid no
    longer exists, or belongs to another process (another start time)."""
    if tags.get(HOST_TAG) != socket.gethostname():
        return ""
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return ""
    recorded = tags.get(PROCESS_TAG, "")
    if recorded and recorded.split(":")[0] != _boot_id():
        return ""  # rebooted since, or another machine with this host name: the heartbeat tells
    where = f"pid {pid} on host {tags[HOST_TAG]}"
    if not _pid_exists(pid):
        return f"process died: {where} no longer exists"
    now = process_identity(pid)
    if recorded and now and now != recorded:
        return f"process died: {where} is another process now"
    return ""


def stale_after_of(run, default: float) -> float:
    """The run's own `tracking.stale_after_s` param, else `default`."""
    try:
        return float(run.data.params.get(STALE_PARAM, default))
    except ValueError:
        return default


def death_reason(run, now: float, stale_after_s: float, task: tuple[str, int] = ("", 0)) -> str:
    """Why a RUNNING run's process is over ('' if it is not RUNNING or may still be alive): an
    earlier attempt of this SLURM `task` (see `slurm_task`), a process of this host that is gone
    (`process_gone`), or, from any host, no heartbeat for `stale_after_s`."""
    if run.info.status != "RUNNING":
        return ""
    if is_earlier_attempt(run, task):
        return TAKEOVER_REASON
    gone = process_gone(run.data.tags)
    if gone:
        return gone
    return DEAD_REASON if now - last_heartbeat(run) > stale_after_s else ""


# --------------------------------------------------------------------------- SLURM attempts


def slurm_task(env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """(`<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>` for a task of a job array, else
    `SLURM_JOB_ID`, or '' outside SLURM; the attempt, SLURM_RESTART_COUNT or 0)."""
    env = os.environ if env is None else env
    array, task = env.get("SLURM_ARRAY_JOB_ID", ""), env.get("SLURM_ARRAY_TASK_ID", "")
    job = f"{array}_{task}" if array and task else env.get("SLURM_JOB_ID", "")
    try:
        restart = int(env.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        restart = 0
    return job, restart


def is_earlier_attempt(run, task: tuple[str, int]) -> bool:
    """A RUNNING run started by an earlier attempt of this very SLURM task (the task can only
    run once at a time, so that attempt is over: preempted or requeued)."""
    job, restart = task
    tags = run.data.tags
    if run.info.status != "RUNNING" or not job or tags.get(SLURM_JOB_TAG) != job:
        return False
    try:
        return int(tags.get(SLURM_RESTART_TAG, "0")) < restart
    except ValueError:
        return False


# --------------------------------------------------------------------------- closing dead runs


def mark_dead(client, run, reason: str = DEAD_REASON) -> None:
    """Mark a RUNNING run whose process died KILLED (end time = its last heartbeat), tagging why.
    Nothing it logged is changed."""
    set_tag(client, run.info.run_id, FAILURE_TAG, reason)
    retry(
        client.set_terminated,
        run.info.run_id,
        status="KILLED",
        end_time=int(last_heartbeat(run) * 1000),
    )


def running_runs(client, experiment_id: str, parent_id: str = "") -> list:
    """The RUNNING runs of the experiment (only the children of `parent_id` if given)."""
    clauses = ["attributes.status = 'RUNNING'"]
    if parent_id:
        clauses.append(f"tags.`{PARENT_TAG}` = '{parent_id}'")
    return search_all_runs(client, experiment_id, " and ".join(clauses))


def close_dead_runs(client, experiment_id: str, stale_after_s: float) -> list[tuple[str, str]]:
    """Mark KILLED every RUNNING run of the experiment, sweep parents included, whose process is
    over (`death_reason`; a job's own `tracking.stale_after_s` param wins over
    `stale_after_s`). Returns (run id, reason) of each."""
    closed, now = [], time.time()
    for run in running_runs(client, experiment_id):
        reason = death_reason(run, now, stale_after_of(run, stale_after_s))
        if reason:
            mark_dead(client, run, reason)
            closed.append((run.info.run_id, reason))
    return closed


def close_gone_children(client, parent_id: str, note: str = "") -> list:
    """Mark KILLED the RUNNING jobs of sweep `parent_id` whose process is certainly gone
    (`process_gone`: this host only), the reason followed by `note`; returns the jobs still
    RUNNING. A job killed without a chance to mark itself (SIGKILL after SLURM's KillWait, the
    OOM killer) is closed by its sweep's launcher, not left RUNNING until the next sweep."""
    experiment_id = client.get_run(parent_id).info.experiment_id
    left = []
    for run in running_runs(client, experiment_id, parent_id):
        reason = process_gone(run.data.tags)
        if reason:
            mark_dead(client, run, reason + note)
            log.warning(
                "run %s stopped without a word (%s): marked KILLED", run.info.run_id, reason
            )
        else:
            left.append(run)
    return left


def settle_children(client, parent_id: str, wait_s: float) -> list[str]:
    """After a sweep stopped early: wait up to `wait_s` for its RUNNING jobs on this host to end
    (they mark themselves KILLED, see STOP_FILE), marking KILLED those whose process is gone.
    Returns the ids of the runs still RUNNING then (alive, or on other hosts)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = close_gone_children(client, parent_id, " (the sweep stopped)")
        local = [r for r in left if r.data.tags.get(HOST_TAG) == socket.gethostname()]
        if not local or time.monotonic() > deadline:
            return [r.info.run_id for r in left]
        time.sleep(0.25)


def host_tags() -> dict[str, str]:
    """Where the job runs (shown when a resume finds it still RUNNING; on this host, a gone
    process is known for certain, see `process_gone`)."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    identity = process_identity()
    if identity:
        tags[PROCESS_TAG] = identity
    job, restart = slurm_task()
    if job:
        tags.update({SLURM_JOB_TAG: job, SLURM_RESTART_TAG: str(restart)})
    return tags
