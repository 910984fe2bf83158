"""The supervisor's back-off before starting a dead worker again."""

from __future__ import annotations

import itertools

from axon.server.supervisor import (
    FIRST_RESTART_DELAY_S,
    LONGEST_RESTART_DELAY_S,
    STEADY_AFTER_S,
    RestartDelays,
)


def test_a_worker_that_keeps_dying_young_waits_twice_as_long_each_time_up_to_the_longest() -> None:
    delays = RestartDelays()
    waits = [delays.after_death(0, lived_s=1.0) for _ in range(9)]
    assert waits[:4] == [FIRST_RESTART_DELAY_S * 2 ** n for n in range(4)]
    assert waits[-1] == LONGEST_RESTART_DELAY_S
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits))


def test_failed_starts_continue_the_same_back_off() -> None:
    delays = RestartDelays(first_s=1.0, longest_s=5.0)
    assert delays.after_death(0, lived_s=0.1) == 1.0
    assert [delays.after_failed_start(0) for _ in range(3)] == [2.0, 4.0, 5.0]


def test_a_worker_that_served_steadily_is_restarted_after_the_first_delay_again() -> None:
    delays = RestartDelays()
    for _ in range(5):
        delays.after_death(0, lived_s=1.0)
    assert delays.after_death(0, lived_s=STEADY_AFTER_S) == FIRST_RESTART_DELAY_S
    assert delays.after_death(0, lived_s=1.0) == 2 * FIRST_RESTART_DELAY_S


def test_each_worker_has_its_own_back_off() -> None:
    delays = RestartDelays()
    for _ in range(3):
        delays.after_death(0, lived_s=1.0)
    assert delays.after_death(1, lived_s=1.0) == FIRST_RESTART_DELAY_S
