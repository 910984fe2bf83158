"""Usable CPUs: affinity and the cgroup CPU quota, read from fake cgroup trees; the workers'
shares of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from axon.cpus import affinity, cgroup_cpu_quota, usable_cpus, worker_cpus


def cgroup_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


def test_cgroup_v2_quota_of_the_process_own_group(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    (root / "kubepods" / "pod1").mkdir(parents=True)
    (root / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")
    (root / "cpu.max").write_text("max 100000\n")
    proc = cgroup_file(tmp_path, "0::/kubepods/pod1\n")
    assert cgroup_cpu_quota(root, proc) == 1.5
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(root, proc) == min(affinity, 2)  # 1.5 CPUs of quota: 2 to spread over


def test_cgroup_v2_inside_a_container_reads_the_mount_root(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    root.mkdir()
    (root / "cpu.max").write_text("100000 100000\n")
    proc = cgroup_file(tmp_path, "0::/\n")
    assert cgroup_cpu_quota(root, proc) == 1.0
    assert usable_cpus(root, proc) == 1


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    group = root / "cpu,cpuacct" / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("300000\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    proc = cgroup_file(tmp_path, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    assert cgroup_cpu_quota(root, proc) == 3.0


@pytest.mark.parametrize("content", ["max 100000\n", "garbage\n"])
def test_no_quota_or_an_unreadable_one_means_the_affinity(tmp_path: Path, content: str) -> None:
    root = tmp_path / "fs"
    root.mkdir()
    (root / "cpu.max").write_text(content)
    proc = cgroup_file(tmp_path, "0::/\n")
    assert cgroup_cpu_quota(root, proc) is None
    assert usable_cpus(root, proc) == len(os.sched_getaffinity(0))


def test_v1_unlimited_quota_is_none(tmp_path: Path) -> None:
    group = tmp_path / "fs" / "cpu"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("-1\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path / "fs", cgroup_file(tmp_path, "2:cpu:/\n")) is None


def test_reports_name_the_usable_cpus_and_the_machine_s_when_fewer_are_usable() -> None:
    """A benchmark pinned with ``taskset`` to one CPU said "16 CPUs" on a 16-CPU machine."""
    pinned = subprocess.run(
        [sys.executable, "-c", "import os; from axon.cpus import cpus_label; "
         "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); print(cpus_label())"],
        capture_output=True, text=True, check=True).stdout.strip()
    machine = os.cpu_count() or 1
    assert pinned == (f"1 of {machine} CPUs" if machine > 1 else "1 CPU")


def test_as_many_workers_as_cpus_get_one_cpu_each_in_order() -> None:
    assert [worker_cpus(index, 2, {5, 2}) for index in range(2)] == [frozenset({2}), frozenset({5})]


def test_workers_that_divide_the_cpus_evenly_get_equal_disjoint_shares() -> None:
    shares = [worker_cpus(index, 3, range(6)) for index in range(3)]
    assert shares == [frozenset({0, 1}), frozenset({2, 3}), frozenset({4, 5})]


@pytest.mark.parametrize(("count", "cpus"), [
    (1, {0, 1}),      # one process: nothing to share
    (3, {0, 1}),      # more workers than CPUs
    (2, {0, 1, 2}),   # not evenly
    (2, set()),       # the platform does not say
])
def test_no_share_where_the_cpus_do_not_divide_among_two_or_more_workers(
        count: int, cpus: set[int]) -> None:
    assert all(worker_cpus(index, count, cpus) is None for index in range(count))


def test_affinity_is_the_set_the_kernel_reports() -> None:
    assert affinity() == frozenset(os.sched_getaffinity(0))


KEEP_AND_START_THREADS = """
import os, threading
from concurrent.futures import ThreadPoolExecutor
from axon.cpus import keep_to, run_anywhere, spread_cpus, usable_cpus
everywhere = os.sched_getaffinity(0)
usable = usable_cpus()
keep_to(frozenset({min(everywhere)}))
seen = {}
thread = threading.Thread(target=lambda: seen.update(plain=os.sched_getaffinity(0)))
thread.start(); thread.join()
with ThreadPoolExecutor(1, initializer=run_anywhere) as pool:
    seen["anywhere"] = pool.submit(os.sched_getaffinity, 0).result()
print(os.sched_getaffinity(0) == {min(everywhere)}, seen["plain"] == {min(everywhere)},
      seen["anywhere"] == everywhere, spread_cpus() == usable)
"""


def test_kept_threads_and_their_children_stay_and_run_anywhere_lets_one_out() -> None:
    completed = subprocess.run([sys.executable, "-c", KEEP_AND_START_THREADS],
                               capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["True"] * 4, completed.stdout + completed.stderr
