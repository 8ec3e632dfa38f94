"""A multirun job's resume, on the run's side (`tracking.resume` plans it from the store): its
run name, whether it runs at all (skipped if its config already FINISHED or still RUNNING with
a fresh heartbeat; dead runs marked KILLED), and the summary of a job that runs nothing."""

from __future__ import annotations

import logging
import time
from typing import Any

from ntk_sweep import sweep_ui, tracking
from ntk_sweep.job import JobContext

log = logging.getLogger(__name__)


def job_run_name(width: int, seed: int, ctx: JobContext, client, parent_id: str) -> str:
    """`w=100 s=2 ...` (see `ntk_sweep.sweep_ui`); a sweep's child names itself by the keys its
    parent run lists as swept."""
    parent_tags = sweep_ui.run_tags(client, parent_id) if parent_id else None
    return sweep_ui.job_run_name(ctx.overrides, width, seed, ctx.preset, parent_tags)


def resume(
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
    return {**not_run(message), "run_id": plan.run_id}


def not_run(reason: str) -> dict[str, Any]:
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
