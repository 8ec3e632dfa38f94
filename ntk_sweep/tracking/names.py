"""Every MLflow tag and param name the project writes or reads, defined once.

These names are the public MLflow contract of DESIGN.md: the app writes them, the aggregate and
the sweep's run names read them, and users filter on them in the MLflow UI
(``tags.`ntk_sweep.preset` = 'width_sweep'``). Only names live here, no logic.
"""

from __future__ import annotations

TAG = "ntk_sweep."  # the prefix of every tag of the project

# --------------------------------------------------------------------------- every run

ROLE_TAG = TAG + "role"  # "sweep" (a sweep's parent), "job", "aggregate"
FAILURE_TAG = TAG + "failure_reason"
CONFIG_HASH_TAG = TAG + "config_hash"  # the config's fingerprint (fingerprint.config_hash)
GIT_COMMIT_TAG = TAG + "git_commit"
OVERRIDES_TAG = TAG + "overrides"  # the command line's overrides, space-separated
PRESET_TAG = TAG + "preset"  # the preset (`experiment=NAME`) of a sweep's parent and its jobs
HEARTBEAT_TAG = TAG + "heartbeat"  # unix time (s) of the job's latest sign of life
# Where a job (or a sweep's launching process) runs: host name, pid and, on Linux, the process's
# identity `<boot id>:<start time in clock ticks>`, so that on the same host a dead process is
# known for certain (its pid is gone, or is another process now) instead of after a stale heartbeat.
HOST_TAG = TAG + "host"
PID_TAG = TAG + "pid"
PROCESS_TAG = TAG + "process"
# The SLURM task a run belongs to (`<array job>_<task>` or the job id) and its attempt
# (SLURM_RESTART_COUNT): a requeued task (preemption, submitit's timeout requeue) keeps the id
# and counts up, so it recognises its own earlier run and takes it over.
SLURM_JOB_TAG = TAG + "slurm_job"
SLURM_RESTART_TAG = TAG + "slurm_restart"

# --------------------------------------------------------------------------- a sweep's parent

SWEEP_DIR_TAG = TAG + "sweep_dir"
N_JOBS_TAG = TAG + "n_jobs"
FORCE_TAG = TAG + "force"
SWEPT_TAG = TAG + "swept"  # keys (comma-separated) that vary across the sweep's jobs
# On a resumed sweep's parent run, one tag per job that reused an earlier run:
# `ntk_sweep.resumed_run.<job_num>` = that run's id (aggregate_sweep includes those runs).
RESUMED_RUN_TAG = TAG + "resumed_run."

# --------------------------------------------------------------------------- a sweep's job

SWEEP_ID_TAG = TAG + "sweep_id"  # the parent run's id ('' for a single run)
JOB_NUM_TAG = TAG + "job_num"
OUTPUT_DIR_TAG = TAG + "output_dir"
PHASE_NET_TAG = TAG + "phase_net"  # the run's learning-rate phase, network and linearisation
PHASE_LIN_TAG = TAG + "phase_lin"
KERNEL_FORM_TAG = TAG + "kernel_form"
FIGURES_FAILED_TAG = TAG + "figures_failed"

# --------------------------------------------------------------------------- the aggregate

VERDICT_TAG = TAG + "verdict"  # the headline, on the run the aggregate logs to
AGGREGATE_FILTER_TAG = TAG + "aggregate_filter"  # on an `aggregate` run: its filter string

# --------------------------------------------------------------------------- params

STALE_PARAM = "tracking.stale_after_s"  # a run's own staleness threshold, as logged

# --------------------------------------------------------------------------- MLflow's own

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"  # the run's description (MLflow UI: Overview)
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # what MLflow's log_table records: the UI's tables
# A new experiment is a model-training one for the MLflow UI (3.4+ asks for the type otherwise).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
