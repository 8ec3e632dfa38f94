"""Resuming a sweep: the earlier runs with a job's config fingerprint and what the job does
about them (`plan_resume`: skip a FINISHED one or a live RUNNING one, close the dead ones, run
anew). Liveness itself (`death_reason`, SLURM attempts) is `liveness`'s."""

from __future__ import annotations

from dataclasses import dataclass

from ntk_sweep.tracking.liveness import TAKEOVER_REASON, death_reason
from ntk_sweep.tracking.names import CONFIG_HASH_TAG
from ntk_sweep.tracking.store import search_all_runs


def runs_with_hash(client, experiment_id: str, chash: str) -> list:
    """Every (not deleted) run of the experiment whose config fingerprint is `chash`."""
    return search_all_runs(client, experiment_id, f"tags.`{CONFIG_HASH_TAG}` = '{chash}'")


@dataclass(frozen=True)
class ResumePlan:
    """What a sweep job does about earlier runs with its config fingerprint.

    action: "run" (a new run), "finished" (skip: `run_id` FINISHED with this config) or
    "running" (skip: `run_id` is RUNNING and may be alive, maybe elsewhere). `dead`: RUNNING runs
    whose process is over (`death_reason`), to be marked KILLED before running anew; `reasons`,
    one per dead run.
    """

    action: str
    run_id: str = ""
    dead: tuple = ()
    reasons: tuple = ()

    @property
    def taken_over(self) -> tuple:
        """Ids of the `dead` runs left RUNNING by an earlier attempt of this SLURM task."""
        pairs = zip(self.dead, self.reasons, strict=True)
        return tuple(r.info.run_id for r, why in pairs if why == TAKEOVER_REASON)


def plan_resume(
    runs: list, now: float, stale_after_s: float, task: tuple[str, int] = ("", 0)
) -> ResumePlan:
    """Decision (see ResumePlan): FINISHED wins (the newest), then a RUNNING run that may be
    alive; FAILED / KILLED runs and dead RUNNING ones (`death_reason`: an earlier attempt of
    this SLURM `task`, a gone process of this host, a stale heartbeat) are re-run as new runs."""
    newest = sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)
    why = {r.info.run_id: death_reason(r, now, stale_after_s, task) for r in newest}
    dead = tuple(r for r in newest if why[r.info.run_id])
    reasons = tuple(why[r.info.run_id] for r in dead)
    for r in newest:
        if r.info.status == "FINISHED":
            return ResumePlan("finished", r.info.run_id, dead, reasons)
    for r in newest:
        if r.info.status == "RUNNING" and not why[r.info.run_id]:
            return ResumePlan("running", r.info.run_id, dead, reasons)
    return ResumePlan("run", "", dead, reasons)
