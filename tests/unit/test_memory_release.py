"""The rule that hands freed memory back once a busy spell is over (server/memory_release.py),
on made-up clocks, and glibc's release itself on this process."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util

import pytest

from axon.server.allocator import can_release_freed_memory, release_freed_memory
from axon.server.memory_release import (
    IDLE_CPU_SHARE,
    MIN_GROWTH_BYTES,
    IdleMemoryRelease,
    resident_bytes,
    start_idle_memory_release,
)

MiB = 2**20


class Process:
    """A process whose CPU time, wall clock and resident memory the test moves by hand."""

    def __init__(self, resident: int = 100 * MiB) -> None:
        self.cpu = 0.0
        self.wall = 0.0
        self.resident: int | None = resident
        self.released = 0

    def release(self) -> None:
        self.released += 1
        self.resident = 100 * MiB

    def interval(self, seconds: float, busy_share: float, grow_bytes: int = 0) -> None:
        self.wall += seconds
        self.cpu += seconds * busy_share
        if self.resident is not None:
            self.resident += grow_bytes

    def rule(self) -> IdleMemoryRelease:
        return IdleMemoryRelease(5.0, release=self.release, resident=lambda: self.resident,
                                 cpu_seconds=lambda: self.cpu, wall_seconds=lambda: self.wall)


def test_an_idle_interval_after_growth_releases_and_a_busy_one_does_not() -> None:
    process = Process()
    rule = process.rule()
    process.interval(5, busy_share=0.9, grow_bytes=400 * MiB)
    assert not rule.due()  # busy: the memory is being reused
    process.interval(5, busy_share=0.5)
    assert not rule.due()
    process.interval(5, busy_share=IDLE_CPU_SHARE / 2)
    assert rule.due()


def test_it_releases_once_per_growth_not_on_every_idle_interval() -> None:
    process = Process()
    rule = process.rule()
    process.interval(5, busy_share=0.9, grow_bytes=400 * MiB)
    assert not rule.due()
    process.interval(5, busy_share=0.0)
    assert rule.due()
    asyncio.run(rule.release_now())
    assert (process.released, rule.releases) == (1, 1)
    for _ in range(10):  # idle from now on: nothing more to give back
        process.interval(5, busy_share=0.0)
        assert not rule.due()
    process.interval(5, busy_share=0.0, grow_bytes=MIN_GROWTH_BYTES)
    assert rule.due()  # grown again by the minimum


def test_growth_below_the_minimum_is_left_alone() -> None:
    process = Process()
    rule = process.rule()
    process.interval(5, busy_share=0.0, grow_bytes=MIN_GROWTH_BYTES - 1)
    assert not rule.due()


def test_memory_that_fell_on_its_own_lowers_the_floor() -> None:
    process = Process(resident=300 * MiB)
    rule = process.rule()
    process.interval(5, busy_share=0.0, grow_bytes=-200 * MiB)  # a model unloaded, say
    assert not rule.due()
    process.interval(5, busy_share=0.0, grow_bytes=MIN_GROWTH_BYTES)
    assert rule.due()  # measured from 100 MiB, not from the 300 it started at


def test_the_share_is_of_the_interval_not_of_the_process_lifetime() -> None:
    process = Process()
    process.interval(3600, busy_share=0.9)  # an hour of work before the rule starts
    rule = process.rule()
    process.interval(5, busy_share=0.0, grow_bytes=100 * MiB)
    assert rule.due()


def test_without_resident_memory_to_read_it_never_releases() -> None:
    process = Process()
    process.resident = None
    rule = process.rule()
    process.interval(5, busy_share=0.0)
    assert not rule.due()


def test_turned_off_it_starts_no_task() -> None:
    async def start() -> asyncio.Task[None] | None:
        return start_idle_memory_release(0)

    assert asyncio.run(start()) is None


def _glibc() -> bool:
    name = ctypes.util.find_library("c")
    return name is not None and hasattr(ctypes.CDLL(name), "gnu_get_libc_version")


@pytest.mark.skipif(not _glibc(), reason="malloc_trim is glibc's; this C library has none")
def test_glibc_hands_back_memory_freed_inside_the_heap() -> None:
    """Many small blocks freed with one kept at the top: the heap cannot shrink from its end,
    so only malloc_trim's release of whole free pages inside it gives the memory back."""
    assert can_release_freed_memory()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
    block, count = 64 * 1024, 1024  # 64 MiB below the allocator's mmap threshold
    blocks = [libc.malloc(block) for _ in range(count)]
    for address in blocks:
        libc.memset(address, 1, block)  # touched: resident
    before = resident_bytes()
    for address in blocks[:-1]:
        libc.free(address)
    assert release_freed_memory()
    after = resident_bytes()
    libc.free(blocks[-1])
    assert before is not None and after is not None
    assert before - after > 32 * MiB, (before / MiB, after / MiB)
