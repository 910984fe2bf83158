"""glibc's allocator, told to keep the memory a busy server reuses.

By default glibc serves an allocation above its mmap threshold (128 KiB, rising with use) with
fresh pages from the kernel and hands back free memory at the top of the heap beyond its trim
threshold. A server that allocates and frees request-sized buffers over and over (a 64-image
request is 200 KB; its batch, several times that) then faults in new pages for nearly every
request: measured 12-20 page faults per 64-image request against 4 for a naive server, and
about 6 % of throughput (docs/performance.md). Raising both thresholds keeps that
memory in the process, which costs resident memory up to the largest working set seen, bounded
by the queue limits, until ``release_freed_memory`` hands it back (server/memory_release.py
calls it once a busy spell is over).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""Allocations below this come from the heap (glibc's own ceiling for its moving threshold)."""
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024
"""Free memory at the top of the heap kept before any is handed back."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Set the thresholds (glibc only); False where there is no glibc to tell."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)  # musl and others have none
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not done:
        log.info("the C library refused the allocator thresholds; serving with its defaults")
    return done


def can_release_freed_memory() -> bool:
    """Whether ``release_freed_memory`` can do anything here (glibc's ``malloc_trim``)."""
    return getattr(_libc(), "malloc_trim", None) is not None


def release_freed_memory() -> bool:
    """Hand the free memory of every allocator arena back to the kernel: the top of each heap
    and the free whole pages within it (glibc's ``malloc_trim(0)``). Other threads may go on
    allocating; each arena is locked while it is trimmed. True when memory was released,
    False when there was none to release or no glibc."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return bool(trim(0))
