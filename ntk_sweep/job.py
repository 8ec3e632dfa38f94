"""What a job knows about itself: its Hydra context (`JobContext`: output dir, sweep dir, job
number, overrides, preset), the tags its run carries, its log file, and the routing of the
numerical core's warnings to the job's log."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ntk_sweep import tracking

log = logging.getLogger(__name__)


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


def job_tags(ctx: JobContext, parent_id: str, chash: str) -> dict[str, str]:
    """The tags a job's run is created with (its sweep, commit, host, heartbeat, ...)."""
    return {
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


def job_log_file(ctx: JobContext) -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    path = Path(ctx.output_dir) / f"{HydraConfig.get().job.name}.log"
    return path if path.is_file() and path.stat().st_size > 0 else None


FLOATING_WARNING = re.compile(r"(overflow|invalid value|divide by zero|underflow) encountered")


@contextlib.contextmanager
def log_warnings() -> Iterator[None]:
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
