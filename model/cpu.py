"""How many CPUs this process may really use (CPU affinity, capped by a cgroup quota)."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_budget() -> int:
    """CPUs this process may really use: its CPU affinity, capped by a cgroup CPU quota (containers).

    TensorFlow would otherwise size its pool from the host's core count, and a
    container limited to 2 CPUs on a 64-core host would run 64 threads on 2 CPUs.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, quota) if quota else cpus)


def _cgroup_cpu_quota() -> int | None:
    """The cgroup v2 (cpu.max) or v1 (cfs_quota_us) CPU limit, rounded up; None when unlimited."""
    candidates = (
        ("/sys/fs/cgroup/cpu.max", None),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    )
    for first, second in candidates:
        try:
            text = Path(first).read_text().split()
            if second is None:
                quota, period = text[0], text[1]
            else:
                quota, period = text[0], Path(second).read_text().strip()
        except (OSError, IndexError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            return max(1, -(-int(quota) // int(period)))
        except (ValueError, ZeroDivisionError):
            return None
    return None
