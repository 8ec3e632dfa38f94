"""How much memory this machine has for a run (the app layer: it reads /proc, the cgroup files and
the environment, which the numerical core never does). `config.check_memory` compares
`core.memory.peak_bytes` with it."""

from __future__ import annotations

import os

MEMORY_ENV = "NTK_SWEEP_MEMORY_GIB"


def machine_memory() -> tuple[int, str]:
    """(bytes a run may use, how that was found): $NTK_SWEEP_MEMORY_GIB if set, else the
    kernel's MemAvailable (/proc/meminfo; total physical memory where there is none), capped
    by the cgroup's limit less its usage (containers)."""
    override = os.environ.get(MEMORY_ENV, "").strip()
    if override:
        try:
            return int(float(override) * 2**30), f"(set by {MEMORY_ENV})"
        except ValueError:
            pass
    available, source = _meminfo_available()
    limit = _cgroup_room()
    if limit is not None and limit < available:
        return limit, "available to this container"
    return available, source


def _meminfo_available() -> tuple[int, str]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available"
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "in all"


def _cgroup_room() -> int | None:
    """cgroup v2 memory.max - memory.current (None without a limit)."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            return max(int(text) - int(f.read().strip()), 0)
    except (OSError, ValueError):
        return None
