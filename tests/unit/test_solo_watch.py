"""The live check on the solo session: pure, driven by the times it is given."""

from __future__ import annotations

import logging

import pytest

from axon.server.solo_watch import (
    CHECK_FROM_SHARE,
    CHECK_INTERVAL_NS,
    CHECK_RUNS,
    MIN_RUNS,
    RETRY_AFTER_NS,
    SoloWatch,
)
from tests.support.solo_watch_runs import EXPECTED_NS, ITEMS, run_check, set_aside


def test_a_solo_session_that_saves_a_tenth_or_more_is_never_checked() -> None:
    watch = SoloWatch()
    for run in range(4 * MIN_RUNS):
        assert watch.choose_solo()
        watch.record_solo(ITEMS, round(CHECK_FROM_SHARE * EXPECTED_NS), EXPECTED_NS, run)
    assert watch.usable and not watch.checking
    assert watch.share == pytest.approx(CHECK_FROM_SHARE)


def test_one_that_saves_less_is_checked_against_one_thread_live_then_set_aside_and_retried(
        caplog: pytest.LogCaptureFixture) -> None:
    watch = SoloWatch("net")
    slow = round(1.06 * EXPECTED_NS)  # the calling thread ran the batch alone
    for run in range(MIN_RUNS - 1):
        watch.record_solo(ITEMS, slow, EXPECTED_NS, run)
    assert not watch.checking, "a check before MIN_RUNS executions"
    watch.record_solo(ITEMS, slow, EXPECTED_NS, MIN_RUNS)
    assert watch.checking and watch.usable
    with caplog.at_level(logging.INFO, "axon.server.solo_watch"):
        choices = run_check(watch, slow, slow, now_ns=1_000)
    # Turn about, the solo session first, until each side has run CHECK_RUNS times.
    assert choices == [True, False] * CHECK_RUNS
    assert not watch.usable and not watch.checking
    assert "net: live, the solo session took 1.00 of one thread's time" in caplog.text
    assert not watch.choose_solo()
    watch.tick(1_000 + RETRY_AFTER_NS - 1)
    assert not watch.usable
    watch.tick(1_000 + RETRY_AFTER_NS)
    assert watch.usable and watch.share is None  # the try starts from fresh samples
    assert watch.choose_solo()


def test_a_check_that_finds_one_thread_slower_live_too_keeps_the_solo_session() -> None:
    """Live, one thread takes 1.6 times the profile's time as well: the solo session still
    saves a third, and from then on the check's one-thread time is what it is held to."""
    watch = SoloWatch()
    for run in range(MIN_RUNS):
        watch.record_solo(ITEMS, round(1.06 * EXPECTED_NS), EXPECTED_NS, run)
    run_check(watch, 1.06 * EXPECTED_NS, 1.6 * EXPECTED_NS)
    assert watch.usable and not watch.checking
    for run in range(4 * MIN_RUNS):
        watch.record_solo(ITEMS, round(1.06 * EXPECTED_NS), EXPECTED_NS, run)
    assert not watch.checking
    assert watch.share == pytest.approx(1.06 / 1.6)


def test_a_check_that_finds_a_small_saving_keeps_the_solo_session_and_the_next_waits(
        ) -> None:
    """Saving 7 %: under the bar that starts a check, but not enough to set the session aside
    on a few noisy runs. The next check waits CHECK_INTERVAL_NS, however the runs read."""
    watch = SoloWatch()
    for run in range(MIN_RUNS):
        watch.record_solo(ITEMS, round(1.06 * EXPECTED_NS), EXPECTED_NS, run)
    run_check(watch, 0.93 * EXPECTED_NS, EXPECTED_NS, now_ns=1_000)
    assert watch.usable and not watch.checking
    for run in range(2 * MIN_RUNS):
        watch.record_solo(ITEMS, round(EXPECTED_NS), EXPECTED_NS, 1_000 + run)
    assert not watch.checking
    watch.record_solo(ITEMS, round(EXPECTED_NS), EXPECTED_NS, 1_000 + CHECK_INTERVAL_NS)
    assert watch.checking


def test_recent_runs_weigh_most() -> None:
    """A busy spell after a quiet one starts a check within a few executions; one slow run
    among many good ones does not."""
    watch = SoloWatch()
    for run in range(50):
        watch.record_solo(ITEMS, round(0.6 * EXPECTED_NS), EXPECTED_NS, run)
    watch.record_solo(ITEMS, round(1.5 * EXPECTED_NS), EXPECTED_NS, 50)
    assert not watch.checking
    for run in range(51, 53):
        watch.record_solo(ITEMS, round(1.2 * EXPECTED_NS), EXPECTED_NS, run)
    assert watch.checking


def test_runs_with_nothing_to_compare_with_and_one_thread_runs_outside_a_check_do_not_count(
        ) -> None:
    watch = SoloWatch()
    for run in range(2 * MIN_RUNS):
        watch.record_solo(ITEMS, 10 * round(EXPECTED_NS), None, run)
        watch.record_one_thread(ITEMS, round(EXPECTED_NS), run)
    assert watch.usable and not watch.checking and watch.share is None
    set_aside(watch)
    assert not watch.usable
