"""The loop ticker: once per loop iteration while waited on, and whether the loop was idle."""

from __future__ import annotations

import asyncio

from axon.server.loop_idle import LoopTicker, ticker_for


class Recorder:
    def __init__(self, ticks_wanted: int) -> None:
        self.seen: list[bool] = []
        self._wanted = ticks_wanted

    def decide(self, loop_idle: bool) -> bool:
        self.seen.append(loop_idle)
        return len(self.seen) >= self._wanted


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
