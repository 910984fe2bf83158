"""How many CPUs this process may really use: its affinity, and its cgroup's CPU quota.

``os.cpu_count()`` counts the machine's CPUs; a container limited to 2 CPUs on a 64-core host
would otherwise start 64 of everything. The quota is read from cgroup v2 (``cpu.max``) or v1
(``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) and rounded up: 1.5 CPUs of quota is 2 CPUs to
spread work over, never 0.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path | None = None) -> int:
    """CPUs this process may run on at once (at least 1)."""
    cpus = affinity()
    allowed = len(cpus) if cpus is not None else os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_self_cgroup or Path("/proc/self/cgroup"))
    if quota is not None:
        allowed = min(allowed, max(1, math.ceil(quota)))
    return max(1, allowed)


def affinity() -> frozenset[int] | None:
    """The CPUs this thread may run on (None: the platform does not say)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


def worker_cpus(index: int, count: int, cpus: Collection[int]) -> frozenset[int] | None:
    """The CPUs worker ``index`` of a group of ``count`` keeps to: the ``index``-th of
    ``count`` equal, disjoint shares of ``cpus`` in order (one CPU each when there are as
    many workers as CPUs). None when they do not divide evenly among two or more workers: the
    worker then runs anywhere in ``cpus``."""
    if count < 2 or not cpus or len(cpus) % count:
        return None
    ordered = sorted(cpus)
    size = len(ordered) // count
    return frozenset(ordered[index * size:(index + 1) * size])


class _Before(NamedTuple):
    cpus: frozenset[int]
    usable: int


class _Kept:
    before: _Before | None = None
    """Where this process could run before ``keep_to`` (None: it was not kept to fewer
    CPUs)."""


_kept = _Kept()


def keep_to(cpus: frozenset[int]) -> None:
    """Keep every thread of this process, and every thread it starts later (they inherit
    it), on ``cpus``; ``run_anywhere`` lets a thread out again. Raises OSError (a CPU taken
    offline since ``cpus`` was read, say)."""
    before = _Before(affinity() or frozenset(), usable_cpus())
    try:
        threads = [int(thread) for thread in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for thread in threads:
        os.sched_setaffinity(thread, cpus)
    _kept.before = before


def spread_cpus() -> int:
    """CPUs for work that spreads over cores (image decoding): ``usable_cpus`` as it was
    before ``keep_to``, so that such work is not confined with the rest."""
    before = _kept.before
    return usable_cpus() if before is None else before.usable


def run_anywhere() -> None:
    """Let the calling thread run on every CPU the process could before ``keep_to`` (a
    thread pool's initializer)."""
    before = _kept.before
    if before is not None and before.cpus:
        os.sched_setaffinity(0, before.cpus)


def cpus_label() -> str:
    """The CPUs as a benchmark's report names them: "2 CPUs", or "2 of 16 CPUs" when the
    affinity or the cgroup's quota leaves fewer usable than the machine has (``taskset``, a
    container's CPU limit)."""
    usable, machine = usable_cpus(), os.cpu_count() or 1
    unit = "CPU" if machine == 1 else "CPUs"
    return f"{usable} {unit}" if usable == machine else f"{usable} of {machine} {unit}"


def cgroup_cpu_quota(root: Path, proc_self_cgroup: Path) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (None: unlimited or unknown)."""
    v2, v1 = _cgroup_paths(proc_self_cgroup)
    for folder in _candidates(root, v2):
        quota = _read_v2(folder / "cpu.max")
        if quota is not None:
            return quota
    for base in (root / "cpu", root / "cpu,cpuacct"):
        for folder in _candidates(base, v1):
            quota = _read_v1(folder)
            if quota is not None:
                return quota
    return None


def _cgroup_paths(proc_self_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup v2 path and v1 ``cpu`` controller path ("/" when unknown)."""
    v2 = v1 = "/"
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _candidates(base: Path, cgroup_path: str) -> list[Path]:
    """The cgroup's own folder (when visible from here), then the mount's root: inside a
    container the cgroup is usually mounted as the root itself."""
    own = base / cgroup_path.lstrip("/")
    return [own, base] if own != base else [base]


def _read_v2(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def _read_v1(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period
