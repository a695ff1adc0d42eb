"""`[runtime] cpu_affinity`: pin the daemon to a set of CPUs at start.

Applied on the main thread before any other thread exists (Linux gives each
thread its own mask, and a new thread inherits its creator's), so every
actor, stream and venue thread runs on those CPUs. Why pin at all: the
quote path is a chain of hand-offs between threads; on one CPU a hand-off
wakes a thread on the same core, with warm caches, instead of an idle core
out of its sleep state.
"""

from __future__ import annotations

import os

from stockade.config.settings import SettingsError


def apply_cpu_affinity(cpus: tuple[int, ...]) -> frozenset[int] | None:
    """Pin this process to `cpus` (empty: leave it alone, returns None); returns the CPUs now in force.

    SettingsError (exit 2) names the setting when a CPU is not one this
    process may use (absent, offline, or outside its cgroup or unit's CPUAffinity=).
    """
    if not cpus:
        return None
    allowed = os.sched_getaffinity(0)
    missing = sorted(set(cpus) - allowed)
    if missing:
        raise SettingsError(
            f"settings: runtime.cpu_affinity = {list(cpus)}: CPU {', '.join(map(str, missing))} "
            f"not available to this process (it may use {_ranges(allowed)})"
        )
    os.sched_setaffinity(0, cpus)
    return frozenset(os.sched_getaffinity(0))


def _ranges(cpus: set[int]) -> str:
    """`0-3,6` for {0, 1, 2, 3, 6}, as /proc's Cpus_allowed_list writes it."""
    out: list[str] = []
    for cpu in sorted(cpus):
        if out and int(out[-1].split("-")[-1]) == cpu - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{cpu}"
        else:
            out.append(str(cpu))
    return ",".join(out)
