"""The loop ticker: once per loop iteration while waited on, and whether the loop was idle."""

from __future__ import annotations

import asyncio
import logging

import pytest

from axon.server.loop_idle import LoopTicker, ticker_for


class Recorder:
    def __init__(self, ticks_wanted: int) -> None:
        self.seen: list[bool] = []
        self._wanted = ticks_wanted

    def decide(self, loop_idle: bool) -> bool:
        self.seen.append(loop_idle)
        return len(self.seen) >= self._wanted

    def decision_failed(self, exc: Exception) -> None:
        raise AssertionError(f"a decision that did not raise failed: {exc!r}")


def test_an_idle_loop_is_reported_idle_and_ticks_stop_when_nobody_waits() -> None:
    async def scenario() -> list[bool]:
        recorder = Recorder(ticks_wanted=3)
        ticker_for(asyncio.get_running_loop()).wait(recorder)
        await asyncio.sleep(0.01)  # a timer: nothing ready meanwhile
        return recorder.seen

    assert asyncio.run(scenario()) == [True, True, True]


def test_a_loop_with_work_ready_is_reported_busy() -> None:
    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        recorder = Recorder(ticks_wanted=2)
        ticker = LoopTicker(loop)
        ticker.wait(recorder)
        for _ in range(5):  # more work queued behind the first tick
            loop.call_soon(lambda: None)
        await asyncio.sleep(0.01)
        return recorder.seen

    seen = asyncio.run(scenario())
    assert seen[0] is False  # the five callbacks were ready when it ticked
    assert seen[-1] is True and len(seen) == 2


def test_one_ticker_per_loop() -> None:
    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        return ticker_for(loop) is ticker_for(loop)

    assert asyncio.run(scenario())


class FailingWaiter:
    def __init__(self, *, failing_to_fail: bool = False) -> None:
        self.calls = 0
        self.failures: list[Exception] = []
        self._failing_to_fail = failing_to_fail

    def decide(self, loop_idle: bool) -> bool:
        self.calls += 1
        raise RuntimeError("boom")

    def decision_failed(self, exc: Exception) -> None:
        self.failures.append(exc)
        if self._failing_to_fail:
            raise RuntimeError("boom again")


@pytest.mark.parametrize("failing_to_fail", [False, True],
                         ids=["told of its fault", "failing that too"])
def test_a_waiter_that_fails_to_decide_is_told_once_and_does_not_stop_the_others_ticks(
        failing_to_fail: bool, caplog: pytest.LogCaptureFixture) -> None:
    """One model's fault must not stall another's batches on the same loop, nor leave its
    own requests waiting: it hears of it once, to fail them."""
    async def scenario() -> tuple[FailingWaiter, list[bool]]:
        ticker = LoopTicker(asyncio.get_running_loop())
        failing, recorder = FailingWaiter(failing_to_fail=failing_to_fail), \
            Recorder(ticks_wanted=3)
        ticker.wait(failing)
        ticker.wait(recorder)
        await asyncio.sleep(0.01)
        return failing, recorder.seen

    with caplog.at_level(logging.ERROR, logger="axon.server.loop_idle"):
        failing, seen = asyncio.run(scenario())
    assert seen == [True, True, True]
    assert failing.calls == 1  # not asked again: a fault that repeats would spin the loop
    assert [str(exc) for exc in failing.failures] == ["boom"]
    logged = any("failed to decide" in r.getMessage() for r in caplog.records)
    assert logged is failing_to_fail  # otherwise logging it is the waiter's
