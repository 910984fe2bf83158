"""glibc's allocator, told to keep the memory a busy server reuses.

By default glibc serves an allocation above its mmap threshold (128 KiB, rising with use) with
fresh pages from the kernel and hands back free memory at the top of the heap beyond its trim
threshold. A server that allocates and frees request-sized buffers over and over (a 64-image
request is 200 KB; its batch, several times that) then faults in new pages for nearly every
request: measured 12-20 page faults per 64-image request against 4 for a naive server, and
about 6 % of throughput (docs/performance.md). Raising both thresholds keeps that
memory in the process, which costs resident memory up to the largest working set seen, bounded
by the queue limits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""Allocations below this come from the heap (glibc's own ceiling for its moving threshold)."""
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024
"""Free memory at the top of the heap kept before any is handed back."""


def keep_freed_memory() -> bool:
    """Set the thresholds (glibc only); False where there is no glibc to tell."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not done:
        log.info("the C library refused the allocator thresholds; serving with its defaults")
    return done
