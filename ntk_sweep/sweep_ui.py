"""What a researcher sees of runs and sweeps in MLflow and on the terminal.

- Run names lead with what varies: a sweep's child is `w=100 s=2 lr=0.5 act=erf` (width and seed,
  from the resolved config, then the other overrides that vary across the sweep, abbreviated); a
  single run is `[preset ]w=1000 s=0 <its other overrides>`; a sweep's parent is
  `<preset> 2026-12-03 09:12:01` (`sweep <date> <time>` without a preset).
- The preset (`experiment=NAME`) is the tag `ntk_sweep.preset` of the parent and of every child;
  the parent's tag `ntk_sweep.swept` lists the overridden keys that vary across its jobs, so each
  child names itself by those.
- `sweep_end_line`: the one line that ends a multirun (counts, and the aggregate command).
- `swept_values_comment`: what `python run.py --cfg job` adds for a preset that sweeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ntk_sweep import tracking
from ntk_sweep.names import ALWAYS_SHOWN, SHORT_KEYS, short_names
from ntk_sweep.tracking import PRESET_TAG, SWEPT_TAG

PRESET_KEY = "experiment"
# launch settings that never change results (the config hash leaves them out too)
_NOT_NAMED = ("tracking.", "hydra.", "hydra/", "force")


def split_override(text: str) -> tuple[str, str]:
    """`+model.width=3` -> ("model.width", "3"); `~key` -> ("~key", "")."""
    key, _, value = text.partition("=")
    key = key.strip()
    return (key if key.startswith("~") else key.lstrip("+")), value.strip()


def _named(key: str) -> bool:
    bare = key.lstrip("~")
    return not any(bare == p or bare.startswith(p) for p in _NOT_NAMED) and bare != PRESET_KEY


def run_name(
    overrides: Sequence[str],
    width: int,
    seed: int,
    swept: Iterable[str] | None = None,
    lead: str = "",
) -> str:
    """`[lead ]w=<width> s=<seed> k=v ...`: the job's overrides (only the keys in `swept`, when
    given) without launch settings, width, seed and the preset, abbreviated (SHORT_KEYS, else the
    last dotted component) and ordered as SHORT_KEYS, then alphabetically. Deterministic: the
    same overrides give the same name; jobs of one sweep differ in a swept value, so in name."""
    wanted = None if swept is None else set(swept)
    items = [split_override(o) for o in overrides]
    items = [
        (k, v)
        for k, v in items
        if _named(k) and SHORT_KEYS.get(k) not in ALWAYS_SHOWN and (wanted is None or k in wanted)
    ]
    short = short_names(k for k, _ in items)
    order = list(dict.fromkeys(SHORT_KEYS.values()))

    def rank(item: tuple[str, str]) -> tuple[int, str]:
        s = short[item[0]]
        return (order.index(s) if s in order else len(order), s)

    tokens = [lead] if lead else []
    tokens += [f"w={width}", f"s={seed}"]
    tokens += [short[k] + (f"={v}" if v else "") for k, v in sorted(items, key=rank)]
    return " ".join(tokens)


def preset_of(overrides: Sequence[str], default: str = "") -> str:
    """The preset a job's overrides choose (the last `experiment=NAME`), else `default`."""
    chosen = [v for k, v in map(split_override, overrides) if k == PRESET_KEY]
    value = chosen[-1] if chosen else default
    return "" if value in ("null", "None") else value


def job_run_name(
    overrides: Sequence[str],
    width: int,
    seed: int,
    preset: str,
    parent_tags: Mapping[str, str] | None = None,
) -> str:
    """A job's run name. In a sweep (`parent_tags` of its parent run): the keys the parent lists
    as swept, led by the job's preset only when the parent has another one (presets swept)."""
    if parent_tags is None:
        return run_name(overrides, width, seed, lead=preset)
    swept_text = parent_tags.get(SWEPT_TAG)
    swept = None if swept_text is None else [k for k in swept_text.split(",") if k]
    lead = preset if preset != parent_tags.get(PRESET_TAG, "") else ""
    return run_name(overrides, width, seed, swept=swept, lead=lead)


def run_tags(client, run_id: str) -> dict[str, str]:
    """The tags of a run (a sweep's parent, read by each job to name itself)."""
    return dict(client.get_run(run_id).data.tags)


def sweep_run_name(preset: str, when: datetime) -> str:
    """`width_sweep 2026-12-03 09:12:01`, or `sweep 2026-12-03 09:12:01` without a preset."""
    return f"{preset or 'sweep'} {when:%Y-%m-%d %H:%M:%S}"


def swept_keys(jobs: Sequence[Sequence[str]] | None) -> list[str] | None:
    """The override keys whose value differs between jobs (first-seen order); None if unknown."""
    if jobs is None:
        return None
    values: dict[str, set[str]] = {}
    for job in jobs:
        for key, value in map(split_override, job):
            values.setdefault(key, set()).add(value)
    n = len(jobs)
    counts = {k: sum(any(split_override(o)[0] == k for o in job) for job in jobs) for k in values}
    return [k for k, v in values.items() if len(v) > 1 or counts[k] != n]


def sweep_presets(jobs: Sequence[Sequence[str]] | None, default: str) -> str:
    """The sweep's preset tag: the one preset of all jobs, or their distinct presets joined."""
    if not jobs:
        return default
    return ",".join(dict.fromkeys(preset_of(job, default) for job in jobs))


# --------------------------------------------------------------------------- end of a sweep


def _child_statuses(client, parent_id: str, resumed: Iterable[str]) -> list[str]:
    """One status per job: a SLURM task requeued (preempted, timed out) counts once, by its
    last attempt; the attempts it replaced (KILLED) are not jobs of their own."""
    experiment_id = client.get_run(parent_id).info.experiment_id
    children = f"tags.`{tracking.PARENT_TAG}` = '{parent_id}'"
    runs = tracking.search_all_runs(client, experiment_id, children)
    last: dict[tuple[str, str], Any] = {}
    for r in runs:
        tags = r.data.tags
        if tags.get(tracking.ROLE_TAG) != "job":
            continue
        task = tags.get(tracking.SLURM_JOB_TAG, "")
        key = (task, tags.get(tracking.CONFIG_HASH_TAG, "")) if task else ("", r.info.run_id)
        attempt = int(tags.get(tracking.SLURM_RESTART_TAG, "0") or 0)
        if key not in last or attempt > last[key][0]:
            last[key] = (attempt, r.info.status)
    statuses = [status for _, status in last.values()]
    return statuses + [client.get_run(run_id).info.status for run_id in resumed]


def sweep_end_line(client, parent_id: str, uri: str, launch_dir: str) -> str:
    """`sweep <name>: 9/9 finished, 0 failed, 0 killed; aggregate: ntk-aggregate --sweep ID;
    MLflow UI search: tags.mlflow.parentRunId = 'ID'` (:func:`runs_filter`)
    (jobs reused from earlier runs by a resume count with their run's status; `--tracking-uri`
    is added when `uri` is not the store ntk-aggregate would open from `launch_dir`)."""
    parent = client.get_run(parent_id)
    tags = parent.data.tags
    resumed = [v for k, v in sorted(tags.items()) if k.startswith(tracking.RESUMED_RUN_TAG)]
    statuses = _child_statuses(client, parent_id, resumed)
    try:
        n_jobs = max(int(tags.get(tracking.N_JOBS_TAG, "0")), len(statuses))
    except ValueError:
        n_jobs = len(statuses)
    count = {s: statuses.count(s) for s in ("FINISHED", "FAILED", "KILLED", "RUNNING")}
    name = str(parent.info.run_name)
    text = f"{'' if name.startswith('sweep') else 'sweep '}{name}: "
    text += f"{count['FINISHED']}/{n_jobs} finished"
    if resumed:
        text += f" ({len(resumed)} reused from earlier runs)"
    text += f", {count['FAILED']} failed, {count['KILLED']} killed"
    if count["RUNNING"]:
        text += f", {count['RUNNING']} still running"
    command = f"ntk-aggregate --sweep {parent_id}"
    if tracking.resolve_tracking_uri(None, launch_dir) != uri:  # not the CLI's default store
        command += f" --tracking-uri {tracking.redact_uri(uri)}"
    return f"{text}; aggregate: {command}; MLflow UI search: {runs_filter(parent_id)}"


def runs_filter(parent_id: str) -> str:
    """The MLflow UI search (runs table) that shows a sweep's runs: its children."""
    return f"tags.mlflow.parentRunId = '{parent_id}'"


# --------------------------------------------------------------------------- --cfg job


def swept_values_comment(sweeper_params: Mapping[str, Any] | None, n_jobs: int | None) -> str:
    """YAML comment lines listing a preset's `hydra.sweeper.params` ('' if it sweeps nothing),
    printed after `--cfg job`, which shows one job's config only."""
    if not sweeper_params:
        return ""
    jobs = f" ({n_jobs} jobs)" if n_jobs else ""
    lines = [
        f"# This config is a sweep{jobs}: as a multirun it runs one job per combination of",
        "# these values (hydra.sweeper.params), each replacing the value shown above:",
    ]
    lines += [f"#   {key}: {value}" for key, value in sweeper_params.items()]
    return "\n".join(lines)


def shows_job_config(argv: list[str]) -> bool:
    """Whether the command line asks Hydra for `--cfg job` (`-c job`, `--cfg=job`)."""
    pairs = zip(argv, [*argv[1:], ""], strict=True)
    return any(
        a in ("--cfg=job", "-c=job") or (a in ("--cfg", "-c") and b == "job") for a, b in pairs
    )


def print_swept_values() -> None:
    """After `--cfg job` (one job's config), list the values a sweeping preset sweeps over."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from ntk_sweep.callbacks import expand_sweep

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    params = OmegaConf.select(hydra_cfg, "sweeper.params")
    if not params:
        return
    jobs = expand_sweep(OmegaConf.create({"hydra": hydra_cfg}))
    print(swept_values_comment(OmegaConf.to_container(params), None if jobs is None else len(jobs)))
