"""What the benchmarks read of a server of several processes: its supervisor and every worker.

Real processes: a parent that holds little and a child that holds 64 MiB and burns CPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from axon.benchmarks.bench import process_cpu_seconds, process_rss_bytes

MIB = 1024 * 1024
CHILD = """
import sys, time
held = b"x" * (64 * 1024 * 1024)   # touched: resident
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("ready", flush=True)
time.sleep(60)
"""
PARENT = f"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], stdout=subprocess.PIPE, text=True)
print(child.pid, child.stdout.readline().strip(), flush=True)
child.wait()
"""


def own_rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in status.splitlines()
                if line.startswith("VmRSS:"))


def test_memory_and_cpu_count_the_children_too() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid, ready = parent.stdout.readline().split()
    child = int(child_pid)
    try:
        assert ready == "ready"
        time.sleep(0.1)
        tree = process_rss_bytes(parent.pid)
        assert tree >= own_rss_bytes(parent.pid) + 64 * MIB
        assert abs(tree - own_rss_bytes(parent.pid) - own_rss_bytes(child)) < 4 * MIB
        assert process_cpu_seconds(parent.pid) >= 0.3
    finally:
        os.kill(child, signal.SIGKILL)
        parent.wait(10)
