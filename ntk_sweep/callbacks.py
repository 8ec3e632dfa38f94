"""Hydra callback that prepares MLflow for a multirun, in the launching process, before any job.

`on_multirun_start`:
1. composes and validates every job of the sweep (BasicSweeper expansion of the command line
   and `hydra.sweeper.params`), so a bad value anywhere stops the sweep with one line before
   anything is created or trained;
2. checks the tracking store, creates the database and the experiment (so parallel jobs never
   race on creating them) and the sweep's parent run (tag `ntk_sweep.role=sweep`, name
   `<preset> <date> <time>` or `sweep <date> <time>`, tags `ntk_sweep.preset` and
   `ntk_sweep.swept`, see `ntk_sweep.sweep_ui`), and writes its id to
   `<hydra.sweep.dir>/mlflow_parent_run_id`, where each job reads it.

`on_multirun_end` marks the parent FINISHED (and runs `ntk_sweep.aggregate.aggregate_sweep` if
`tracking.aggregate_on_end=true`), then prints one line: `sweep <name>: 9/9 finished, 0 failed,
0 killed; aggregate: ntk-aggregate --sweep <parent id>`. If the process exits without reaching
it (Ctrl-C, SIGTERM during a job, a job's exception), an exit hook marks the parent KILLED.

Works with any launcher: the basic one (jobs in this process), joblib (jobs in reused worker
processes) and submitit (local processes or SLURM tasks): the callback object is pickled into
them without its store client, and each job finds the parent id in the sweep folder. Resume
(skipping jobs whose config already FINISHED) is decided by each job, see
`ntk_sweep.experiment.run_experiment`; the parent lists reused runs as `ntk_sweep.resumed_run.*`.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ntk_sweep.config import ConfigError

log = logging.getLogger(__name__)

EXIT_CONFIG_ERROR = 2
# How long a stopped sweep waits for its jobs in other processes to mark their runs KILLED
STOP_WAIT_S = 10.0
_launched_here: list[str] = []  # parent run ids of the sweeps this process launched


def sweep_launched() -> bool:
    """Whether this process launched a sweep (`-m`, or a preset with `hydra.mode: MULTIRUN`)
    whose parent run exists: a launcher's error then ends that sweep, not a single run."""
    return bool(_launched_here)


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def expand_sweep(config: DictConfig) -> list[list[str]] | None:
    """The task overrides of every job of the sweep, or None if the sweeper is not Hydra's
    basic sweeper (then each job validates itself)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER:
        return None
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()]
    arguments += list(OmegaConf.select(config, "hydra.overrides.task") or [])
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for job in BasicSweeper.split_arguments(overrides, None)[0]]


def validate_sweep(config: DictConfig) -> int:
    """Compose and validate each job's config (its fields, and against its dataset: loss,
    batch size, memory); load each distinct dataset once.

    Raises ConfigError naming the field and the job. Returns the number of jobs checked.
    """
    from hydra import compose

    from ntk_sweep.config import check_with_data, describe_hydra_error, load_data, validate

    jobs = expand_sweep(config)
    if jobs is None:
        return 0
    base = str(OmegaConf.select(config, "hydra.runtime.cwd") or os.getcwd())
    datasets: dict[str, Any] = {}
    for num, job in enumerate(jobs):
        where = f"[job {num}: {','.join(job)}]"
        try:
            cfg = compose(config_name=config.hydra.job.config_name, overrides=job)
            validate(cfg)
            key = OmegaConf.to_yaml(cfg.dataset, resolve=True)
            if key not in datasets:
                datasets[key] = load_data(cfg, base_dir=base)
            check_with_data(cfg, datasets[key])  # the loss, batch size and memory of this job
        except ConfigError as exc:
            raise ConfigError(f"{exc} {where}") from None
        except Exception as exc:  # composition errors are reported by Hydra's sweeper too
            raise ConfigError(f"{describe_hydra_error(exc)} {where}") from None
    return len(jobs)


def _preset_tags(config: DictConfig) -> dict[str, str]:
    """The parent's `ntk_sweep.preset` (the jobs' preset; several joined by commas if swept) and
    `ntk_sweep.swept` (the overridden keys that vary across jobs; absent if unknown)."""
    from ntk_sweep import sweep_ui, tracking

    jobs = expand_sweep(config)
    chosen = str(OmegaConf.select(config, "hydra.runtime.choices.experiment", default="") or "")
    tags = {tracking.PRESET_TAG: sweep_ui.sweep_presets(jobs, sweep_ui.preset_of([], chosen))}
    swept = sweep_ui.swept_keys(jobs)
    if swept is not None:
        tags[tracking.SWEPT_TAG] = ",".join(swept)
    return tags


class MlflowSweepCallback(Callback):
    """Creates DB, experiment and the sweep's parent run before any job; closes it at the end."""

    def __init__(self) -> None:
        self.client: Any = None
        self.parent_id: str | None = None
        self.uri: str | None = None
        self.sweep_dir: Path | None = None
        self.ended = False
        self.heartbeat: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # Launchers (joblib, submitit) pickle the Hydra context, callbacks included, into their
        # worker processes: send no client (a live store connection), and the jobs never need it.
        state = dict(self.__dict__)
        state["client"] = None
        state["heartbeat"] = None  # a thread of the launching process
        return state

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exceptions into warnings and goes on with the sweep, so a
        # bad config or store must stop the process here: one line on stderr, exit code 2.
        from ntk_sweep.tracking import install_log_redaction, redact_uri

        install_log_redaction()  # Hydra's launchers log each job's overrides
        try:
            self._start(config)
        except ConfigError as exc:
            print(f"error: {redact_uri(str(exc))}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_CONFIG_ERROR) from None
        except Exception:
            log.exception("could not prepare MLflow for the sweep")
            raise SystemExit(1) from None

    def _start(self, config: DictConfig) -> None:
        from ntk_sweep import sweep_ui, tracking
        from ntk_sweep.config import validate

        validate(config)  # the base config: fails fast even for a non-basic sweeper
        n_jobs = validate_sweep(config)
        cwd = str(config.hydra.runtime.cwd)
        uri = tracking.resolve_tracking_uri(config.tracking.uri, cwd)
        tracking.check_tracking_uri(uri)
        tracking.check_artifact_location(config.tracking.artifact_location, cwd)
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        if "Slurm" in launcher and tracking.sqlite_path(uri) is not None:
            log.warning(
                "the SQLite store %s is for one machine only and must never be on a network "
                "file system: for SLURM jobs, track into a server (tracking.uri=http://HOST:PORT)",
                tracking.sqlite_path(uri),
            )
        self.client, experiment_id = tracking.open_store(
            uri, str(config.tracking.experiment), config.tracking.artifact_location
        )
        stale_after = float(config.tracking.stale_after_s)
        for run_id, reason in tracking.close_dead_runs(self.client, experiment_id, stale_after):
            log.warning("run %s was left RUNNING (%s): marked KILLED", run_id, reason)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_absolute():
            sweep_dir = Path(cwd) / sweep_dir
        tags = {
            tracking.ROLE_TAG: "sweep",
            tracking.SWEEP_DIR_TAG: str(sweep_dir),
            tracking.OVERRIDES_TAG: " ".join(config.hydra.overrides.task),
            tracking.GIT_COMMIT_TAG: tracking.git_commit(),
            tracking.N_JOBS_TAG: str(n_jobs),
            tracking.FORCE_TAG: str(bool(OmegaConf.select(config, "force", default=False))),
            **tracking.host_tags(),
            **tracking.heartbeat_tags(),
        }
        tags.update(_preset_tags(config))
        name = sweep_ui.sweep_run_name(tags[tracking.PRESET_TAG], datetime.now())
        self._claim(sweep_dir)
        with tracking.full_store_is_fatal(uri):
            self.parent_id = tracking.create_run(self.client, experiment_id, name, tags)
        tracking.write_parent_id(sweep_dir, self.parent_id)
        self.uri, self.sweep_dir = uri, sweep_dir
        self.ended = False
        _launched_here.append(self.parent_id)
        # the launching process shows life like a job, so a dead one is seen from anywhere
        every = tracking.heartbeat_interval(stale_after)
        # ... and closes its jobs on this host that die without marking themselves (SIGKILL)
        self.heartbeat = tracking.Heartbeat(
            self.client,
            self.parent_id,
            every,
            also=lambda: tracking.close_gone_children(self.client, self.parent_id),
        ).__enter__()
        atexit.register(self._abandoned)
        self._exit_on_sigterm()
        log.info(
            "MLflow parent run %s (%s, %d jobs) in %s",
            self.parent_id,
            name,
            n_jobs,
            tracking.redact_uri(uri),
        )

    def _claim(self, sweep_dir: Path) -> None:
        """A sweep folder holds one sweep's parent id: refuse one whose sweep is still RUNNING
        (another sweep launched with the same `hydra.sweep.dir`), replace a finished one's."""
        from ntk_sweep import tracking

        earlier = tracking.read_parent_id(sweep_dir)
        if not earlier:
            return
        (sweep_dir / tracking.STOP_FILE).unlink(missing_ok=True)
        try:
            status = self.client.get_run(earlier).info.status
        except Exception:  # noqa: BLE001 - another store or deleted: that sweep is not ours
            status = "unknown"
        if status == "RUNNING":
            raise ConfigError(
                f"hydra.sweep.dir={sweep_dir} is in use by sweep {earlier}, still RUNNING: "
                "choose another hydra.sweep.dir (the default is unique per launch)"
            )
        log.warning(
            "hydra.sweep.dir=%s held sweep %s (%s): its parent id is replaced by the new sweep's",
            sweep_dir,
            earlier,
            status,
        )

    def _exit_on_sigterm(self) -> None:
        """SIGTERM of the launching process (e.g. `kill`, or SLURM ending the job it runs in)
        exits through Python, so the exit hook marks the parent KILLED instead of leaving it
        RUNNING. Jobs of the basic launcher install their own handler while they run."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

            def handler(signum, frame):  # noqa: ARG001
                raise SystemExit(128 + signum)

            signal.signal(signal.SIGTERM, handler)

    def _stop_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.__exit__(None, None, None)
            self.heartbeat = None

    def _abandoned(self) -> None:
        """At exit without on_multirun_end (Ctrl-C, SIGTERM, a launcher's error such as a dead
        worker): the sweep did not complete. Its jobs in other processes are told to stop
        (`tracking.STOP_FILE`) and given a few seconds to mark their runs KILLED; runs of
        this host whose process is gone are marked KILLED here; then the parent is marked
        KILLED and the end line printed, with what is left to do."""
        from ntk_sweep import sweep_ui, tracking

        if self.ended or self.client is None or self.parent_id is None:
            return
        self.ended = True
        self._stop_heartbeat()
        reason = "the sweep stopped before all its jobs had run"
        try:
            if self.sweep_dir is not None:
                tracking.request_stop(self.sweep_dir, f"sweep {self.parent_id} stopped")
            tracking.settle_children(self.client, self.parent_id, STOP_WAIT_S)
            tracking.set_tag(self.client, self.parent_id, tracking.FAILURE_TAG, reason)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
        tracking.end_run(self.client, self.parent_id, "KILLED")
        try:
            line = sweep_ui.sweep_end_line(self.client, self.parent_id, self.uri, os.getcwd())
            line = line.split("; aggregate:")[0]
            print(f"{line}; {reason}: run the same command again to finish it", flush=True)
        except Exception:  # noqa: BLE001 - information only
            pass

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from ntk_sweep import tracking

        if self.client is None or self.parent_id is None:
            return
        self._stop_heartbeat()
        tracking.end_run(self.client, self.parent_id, "FINISHED")
        self.ended = True
        try:
            tags = self.client.get_run(self.parent_id).data.tags
            reused = sum(k.startswith(tracking.RESUMED_RUN_TAG) for k in tags)
            if reused:
                log.info(
                    "resumed sweep: %d job(s) skipped, their earlier runs are part of sweep %s",
                    reused,
                    self.parent_id,
                )
        except Exception:  # noqa: BLE001 - information only
            pass
        if OmegaConf.select(config, "tracking.aggregate_on_end", default=False):
            try:
                from ntk_sweep.aggregate import aggregate_sweep

                aggregate_sweep(
                    tracking_uri=self.uri,
                    experiment=str(config.tracking.experiment),
                    sweep_id=self.parent_id,
                    out_dir=self.sweep_dir / "aggregate",
                )
            except Exception as exc:  # the sweep itself succeeded; report and go on
                log.error("aggregation after the sweep failed: %s", exc)
        self._print_end_line(config)

    def _print_end_line(self, config: DictConfig) -> None:
        from ntk_sweep import sweep_ui

        try:
            cwd = str(OmegaConf.select(config, "hydra.runtime.cwd") or os.getcwd())
            line = sweep_ui.sweep_end_line(self.client, self.parent_id, self.uri, cwd)
        except Exception as exc:  # noqa: BLE001 - information only; the sweep is recorded
            log.warning("could not summarise sweep %s: %s", self.parent_id, exc)
            return
        print(line, flush=True)
