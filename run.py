"""ntk-sweep: `python run.py [overrides]` runs one configuration, `python run.py -m ...` a sweep.

Examples:
    python run.py experiment=paper
    python run.py -m width=100,1000,10000 seed=0,1,2
    python run.py --cfg job dataset=sine          # show the composed config
    python run.py --cfg job experiment=width_sweep # ... and, as comments, the swept values

Invalid configs (bad values, unknown options, wrong types, unreachable tracking store) stop
before any training with one line on stderr and exit code 2. A single run whose loss diverges
is recorded as FAILED and exits with code 1 (in a multirun the sweep goes on); Ctrl-C marks the
run KILLED with one line and exits with code 130, without a traceback. A multirun resumes:
jobs whose config already FINISHED in the experiment are skipped (`force=true` reruns them);
parallel or cluster sweeps: `hydra/launcher=joblib`, `hydra/launcher=slurm` (conf/hydra/launcher),
`hydra/launcher=submitit_local`. The work is done by
`ntk_sweep.experiment.run_experiment`; see docs/metrics.md for what is logged. `--help` lists
the groups, presets and shortcuts (conf/hydra/help/ntk_sweep.yaml).
"""

from __future__ import annotations

import atexit
import gc
import os
import sys

import hydra
from omegaconf import DictConfig

from ntk_sweep.config import ConfigError, describe_hydra_error

EXIT_CONFIG_ERROR = 2
EXIT_RUN_FAILED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's code for Ctrl-C
# Python's cyclic garbage collector, for this process only (benchmarks/README.md, section 4):
# the start-up of a run (Hydra, MLflow with SQLAlchemy and its migrations, Matplotlib, numba)
# creates some 500 000 long-lived objects, and the default thresholds (700, 10, 10) traverse
# them in ~1 100 young and 8 full collections, 1.7-1.9 s of CPU for the mission's three jobs
# (300 steps, no figures); with a young generation of 10 000 objects, 0.6 s and no full
# collection. Cycles are still collected.
GC_THRESHOLDS = (10_000, 10, 10)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    try:  # run_experiment validates the config first (preflight)
        from ntk_sweep.experiment import run_experiment

        summary = run_experiment(cfg)
    except ConfigError as exc:  # raised before any run exists: one line, exit 2
        _config_error(exc)
    if summary["status"] != "FINISHED" and not summary["parent_run_id"]:
        sys.exit(EXIT_RUN_FAILED)  # a single run that diverged; a sweep goes on instead
    return summary


def _config_error(exc: BaseException) -> None:
    from ntk_sweep.tracking import redact_uri

    print(f"error: {redact_uri(describe_hydra_error(exc))}", file=sys.stderr, flush=True)
    sys.exit(EXIT_CONFIG_ERROR)


def cli() -> None:
    """Run `main`, turning configuration errors into one stderr line and exit code 2."""
    gc.set_threshold(*GC_THRESHOLDS)
    # At exit, after the exit handlers registered later (the sweep callback's, MLflow's): the
    # interpreter's final collections would traverse every object left (0.5 s after a bare
    # `import mlflow`, 2-4 s after the mission sweep on a loaded machine) to free memory that
    # the process is about to return anyway.
    atexit.register(gc.freeze)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Let Hydra's errors reach us instead of being printed (multi-line) by Hydra itself.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    from ntk_sweep.tracking import install_log_redaction

    install_log_redaction()  # no password of a tracking.uri in any log line
    try:
        main()
    except (ConfigError, HydraException, OmegaConfBaseException) as exc:
        _config_error(exc)
    except KeyboardInterrupt:
        # Ctrl-C: a run in progress has logged its one line and is marked KILLED; no traceback
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        from ntk_sweep.callbacks import sweep_launched

        if not sweep_launched():  # a single run's bug keeps its traceback
            raise
        # The launcher gave up (a joblib worker or a submitit task died, ...): one line; the
        # sweep callback's exit hook records what ran and tells the user how to finish it.
        from ntk_sweep.tracking import redact_uri

        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        what = " ".join(f"{type(exc).__name__}: {first}".split())
        print(f"error: the sweep stopped: {redact_uri(what)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_RUN_FAILED)
    from ntk_sweep.sweep_ui import print_swept_values, shows_job_config

    if shows_job_config(sys.argv[1:]):
        print_swept_values()


if __name__ == "__main__":
    cli()
