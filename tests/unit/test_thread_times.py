"""The per-thread readings of benchmarks/thread_times.py, on this process's own threads."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from axon.benchmarks.thread_times import LOOP_THREAD, report, thread_times, usage_between


class _NamedThread:
    """A thread that names itself (its kernel ``comm``), waits for ``go``, then spins until it
    has used ``cpu_s`` of CPU or sleeps ``naps`` times 2 ms, and stays alive until
    ``release``: readings taken before that see all its work."""

    def __init__(self, name: str, *, cpu_s: float = 0.0, naps: int = 0) -> None:
        self.go = threading.Event()
        self.done = threading.Event()
        self.release = threading.Event()
        named = threading.Event()

        def run() -> None:
            Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(name)
            named.set()
            self.go.wait()
            while time.thread_time() < cpu_s:
                pass
            for _ in range(naps):
                time.sleep(0.002)
            self.done.set()
            self.release.wait()

        self.thread = threading.Thread(target=run)
        self.thread.start()
        named.wait()

    def finish(self) -> None:
        self.release.set()
        self.thread.join()


def test_every_live_thread_is_read_with_its_role_and_ended_ones_are_left_out() -> None:
    waiter = _NamedThread("waiter")
    alive = thread_times(os.getpid())
    tid = next(tid for tid, times in alive.items() if times.role == "waiter")
    waiter.go.set()
    waiter.finish()
    deadline = time.monotonic() + 2
    while Path(f"/proc/self/task/{tid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # join returns a moment before the kernel lets go of the thread
    after = thread_times(os.getpid())
    assert {LOOP_THREAD, "waiter"} <= {times.role for times in alive.values()}
    assert alive[os.getpid()].role == LOOP_THREAD
    assert "waiter" not in {times.role for times in after.values()}


def test_usage_between_two_readings_sums_each_role() -> None:
    spinner = _NamedThread("spinner", cpu_s=0.1)
    sleeper = _NamedThread("sleeper", naps=30)
    before = thread_times(os.getpid())
    for thread in (spinner, sleeper):
        thread.go.set()
        thread.done.wait()
    after = thread_times(os.getpid())
    for thread in (spinner, sleeper):
        thread.finish()
    used = usage_between(before, after)
    spinner_cpu = used["spinner"][0]
    sleeper_cpu, _, sleeper_voluntary, _ = used["sleeper"]
    assert spinner_cpu >= 0.09e9  # 0.1 s in all, a little of it before the first reading
    assert sleeper_cpu < spinner_cpu / 4
    assert sleeper_voluntary >= 30  # each sleep gives up the CPU


def test_report_gives_per_request_figures_and_sums_the_small_threads() -> None:
    usage = {"axon": {LOOP_THREAD: [2e9, 1e9, 1_000, 4_000], "event_engine": [5e8, 0, 0, 0],
                      "tiny": [6e5, 0, 3, 0], "tinier": [1e5, 0, 1, 0]}}
    text = report(usage, {"axon": 1_000}, "heading")
    lines = text.splitlines()
    assert lines[0] == "heading"
    loop_row = next(line for line in lines if LOOP_THREAD in line)
    assert "| 2,000 |" in loop_row and "| 1,000 |" in loop_row and "| 4.00 |" in loop_row
    assert "| 500 |" in next(line for line in lines if "event_engine" in line)
    assert "| 1 |" in next(line for line in lines if "other threads" in line)  # 0.7 µs
    assert "**2,501**" in next(line for line in lines if "all threads" in line)
    assert "tiny" not in text
    quiet = report({"naive": {LOOP_THREAD: [1e9, 0, 0, 0], "tiny": [1e5, 0, 0, 0]}},
                   {"naive": 1_000}, "heading")
    assert "other threads" not in quiet  # 0.1 µs a request: not worth a row
