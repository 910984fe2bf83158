"""Feeding ``SoloWatch`` the executions a batcher would, for its tests and the batcher's."""

from __future__ import annotations

from axon.server.solo_watch import MIN_RUNS, SoloWatch

EXPECTED_NS = 1_000_000.0
"""What one thread is expected to take for a batch of ``ITEMS`` (the profile's time)."""
ITEMS = 128


def run_check(watch: SoloWatch, solo_ns: float, one_thread_ns: float,
              now_ns: int = 0) -> list[bool]:
    """Feed a check's executions as the batcher would, each where ``choose_solo`` sends it; the
    choices made."""
    choices = []
    while watch.checking:
        on_solo = watch.choose_solo()
        choices.append(on_solo)
        if on_solo:
            watch.record_solo(ITEMS, round(solo_ns), EXPECTED_NS, now_ns)
        else:
            watch.record_one_thread(ITEMS, round(one_thread_ns), now_ns)
    return choices


def set_aside(watch: SoloWatch, now_ns: int = 0) -> None:
    """Solo executions as slow as one thread's, live: the watch sets the session aside."""
    for _ in range(MIN_RUNS):
        watch.record_solo(ITEMS, round(1.06 * EXPECTED_NS), EXPECTED_NS, now_ns)
    run_check(watch, 1.06 * EXPECTED_NS, 1.06 * EXPECTED_NS, now_ns)
