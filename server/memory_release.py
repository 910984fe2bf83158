"""Memory a busy spell left behind, handed back to the kernel once the process is idle.

server/allocator.py keeps freed memory in the process, so that under load request-sized buffers
are reused rather than faulted in afresh for every request. The price shows after a burst: 20 s
of 64-image requests at twice the capacity took two workers from 119 and 118 MiB to 541 and 775
MiB, and they still held all of it 30 s after the last answer; glibc's ``malloc_trim(0)`` then
brought them to 193 and 186 MiB (docs/reliability-security.md, "Memory after a burst"). So,
once the process has used next to no CPU for a while and its resident memory has grown since
the last release, it releases what its allocator holds free. A process serving steady traffic
never counts as idle and keeps its memory for reuse.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from axon.server.allocator import can_release_freed_memory, release_freed_memory

log = logging.getLogger(__name__)

IDLE_CPU_SHARE = 0.02
"""At most this share of one CPU used over a whole interval counts as idle. An idle server
uses about 0.1 % (measured: gRPC's timers, the worker group's checks); a single-image request
a second adds about 0.08 % (some 800 µs of CPU each on the AVX2 machine), a 64-image one about
0.2 %."""
MIN_GROWTH_BYTES = 16 * 1024 * 1024
"""Resident memory must have grown by this much since the last release (or the start) before
an idle interval releases again: a release costs a few milliseconds of a thread, and the page
faults that refill the memory afterwards."""


def resident_bytes() -> int | None:
    """This process's resident memory, from ``/proc`` (None where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


@dataclass
class IdleMemoryRelease:
    """Every ``interval_s`` seconds: when the interval was idle (``IDLE_CPU_SHARE``) and
    resident memory has grown by ``MIN_GROWTH_BYTES`` since the last release, release.

    The clocks and the release are parameters so that the rule can be tested without waiting
    or allocating; the defaults are the real ones."""

    interval_s: float
    release: Callable[[], object] = release_freed_memory
    resident: Callable[[], int | None] = resident_bytes
    cpu_seconds: Callable[[], float] = time.process_time
    wall_seconds: Callable[[], float] = time.monotonic
    min_growth_bytes: int = MIN_GROWTH_BYTES

    def __post_init__(self) -> None:
        self._floor = self.resident()
        self._cpu = self.cpu_seconds()
        self._wall = self.wall_seconds()
        self.releases = 0

    def due(self) -> bool:
        """Whether to release now; called once per interval, it also starts the next one."""
        cpu, wall, resident = self.cpu_seconds(), self.wall_seconds(), self.resident()
        busy_share = (cpu - self._cpu) / max(wall - self._wall, 1e-9)
        self._cpu, self._wall = cpu, wall
        if resident is None or self._floor is None:
            return False
        # Lower when the allocator released memory itself, or a model was unloaded.
        self._floor = min(self._floor, resident)
        return busy_share <= IDLE_CPU_SHARE and resident - self._floor >= self.min_growth_bytes

    async def release_now(self) -> None:
        """Release on a thread (the event loop goes on serving meanwhile), then log what it
        gave back and count from the new resident memory."""
        before = self.resident()
        started = time.perf_counter()
        await asyncio.to_thread(self.release)
        took_ms = (time.perf_counter() - started) * 1e3
        after = self.resident()
        self._floor = after
        self._cpu, self._wall = self.cpu_seconds(), self.wall_seconds()
        self.releases += 1
        if before is not None and after is not None:
            log.info("idle after a busy spell: handed %.0f MiB of freed memory back to the "
                     "system in %.1f ms (resident %.0f -> %.0f MiB)",
                     (before - after) / 2**20, took_ms, before / 2**20, after / 2**20)

    async def run(self) -> None:
        """Check every interval until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            if self.due():
                await self.release_now()


def start_idle_memory_release(interval_s: float) -> asyncio.Task[None] | None:
    """The release task on the running loop; None when turned off (``interval_s`` 0) or where
    there is nothing to call (no glibc) or no resident memory to read (no ``/proc``)."""
    if interval_s <= 0 or not can_release_freed_memory() or resident_bytes() is None:
        return None
    return asyncio.get_running_loop().create_task(IdleMemoryRelease(interval_s).run(),
                                                  name="idle memory release")
