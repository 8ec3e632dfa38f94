"""What identifies a run's settings and code: the config's fingerprint (`config_hash`, the tag
a resume and the aggregate's deduplication match on) and the project's git commit."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Config keys that never change results: left out of the fingerprint (and `force` of the params).
NOT_HASHED = ("tracking", "hydra", "force")

# Fields added after runs were first recorded, with the value that reproduces the earlier
# behaviour bit for bit: left out of the fingerprint at that value, so a resume still recognises
# the runs recorded before the field existed.
HASH_NEUTRAL_DEFAULTS = {
    ("model", "alpha"): None,
    ("model", "outputs"): 1,
    ("train", "optimizer"): "gd",
    ("train", "batch_size"): None,
    ("train", "momentum"): 0.9,
    ("train", "loss"): "mse",
    ("train", "kernel_budget_mb"): 256.0,
}


def config_hash(container: Mapping[str, Any]) -> str:
    """sha256 of the resolved config without `tracking`, `hydra` and `force` (a stable
    fingerprint: the same for the same settings, whatever the process, output dir or time);
    fields of `HASH_NEUTRAL_DEFAULTS` at their neutral value are left out too."""
    data = {k: v for k, v in container.items() if k not in NOT_HASHED}
    for (group, key), neutral in HASH_NEUTRAL_DEFAULTS.items():
        section = data.get(group)
        if isinstance(section, Mapping) and key in section and section[key] == neutral:
            data[group] = {k: v for k, v in section.items() if k != key}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_GIT_CACHE: dict[str, str] = {}


def git_commit(path: str | Path | None = None) -> str:
    """The project's git commit (with '-dirty' if it has uncommitted changes), '' if none."""
    where = str(Path(path) if path else Path(__file__).resolve().parents[2])
    if where in _GIT_CACHE:
        return _GIT_CACHE[where]
    commit = ""
    try:
        out = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        commit = ""
    _GIT_CACHE[where] = commit
    return commit
