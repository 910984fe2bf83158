"""Streams answered concurrently: completion order, flow control, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field

import pytest
from google.protobuf.message import DecodeError

from axon.server.errors import InvalidInputError
from axon.server.servicers.streams import answer_concurrently

TIMEOUT = 5.0


@dataclass
class Sender:
    """A client's request stream that notes how far it was read; can stay open after."""

    items: Iterable[int]
    stay_open: bool = False
    read: int = 0
    closed: bool = False
    _never: asyncio.Event = field(default_factory=asyncio.Event)

    async def stream(self) -> AsyncIterator[int]:
        try:
            for item in self.items:
                self.read += 1
                yield item
            if self.stay_open:
                await self._never.wait()
        finally:
            self.closed = True


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.001)


def test_answers_come_in_completion_order() -> None:
    release_order = [2, 0, 3, 1]

    async def scenario() -> list[str]:
        gates = {i: asyncio.Event() for i in release_order}

        async def answer(request: int) -> str:
            await gates[request].wait()
            return f"answer {request}"

        received: list[str] = []
        gates[release_order[0]].set()
        async with asyncio.timeout(TIMEOUT):
            async for reply in answer_concurrently(Sender(range(4)).stream(), answer, 4):
                received.append(reply)
                if len(received) < len(release_order):
                    gates[release_order[len(received)]].set()
        return received

    assert asyncio.run(scenario()) == ["answer 2", "answer 0", "answer 3", "answer 1"]


def test_every_request_is_answered_once() -> None:
    async def answer(request: int) -> int:
        await asyncio.sleep(request % 3 * 0.002)
        return request

    async def scenario() -> list[int]:
        async with asyncio.timeout(TIMEOUT):
            return [r async for r in answer_concurrently(Sender(range(40)).stream(), answer, 4)]

    replies = asyncio.run(scenario())
    assert sorted(replies) == list(range(40))
    assert replies != list(range(40))  # the quick ones overtook the slow ones


def test_an_empty_stream_ends_without_answers() -> None:
    async def answer(request: int) -> int:
        raise AssertionError("no request, no answer")

    async def scenario() -> list[int]:
        async with asyncio.timeout(TIMEOUT):
            return [r async for r in answer_concurrently(Sender([]).stream(), answer, 4)]

    assert asyncio.run(scenario()) == []


def test_at_most_max_in_flight_are_answered_and_reading_pauses_past_it() -> None:
    limit = 3
    active = peak = finished = 0
    sender = Sender(range(20))
    read_ahead: list[int] = []

    async def answer(request: int) -> int:
        nonlocal active, peak, finished
        read_ahead.append(sender.read - finished)
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.002)
        active -= 1
        finished += 1
        return request

    async def scenario() -> list[int]:
        async with asyncio.timeout(TIMEOUT):
            return [r async for r in answer_concurrently(sender.stream(), answer, limit)]

    assert sorted(asyncio.run(scenario())) == list(range(20))
    assert peak == limit
    # Reading pauses while `limit` are in flight: at most the one request that waits for a
    # slot is read beyond them (an eager reader would be 20 ahead at once).
    assert max(read_ahead) <= limit + 1


def test_when_the_consumer_stops_pending_answers_and_reading_are_cancelled() -> None:
    cancelled: set[int] = set()
    sender = Sender(range(5), stay_open=True)

    async def answer(request: int) -> int:
        if request == 0:
            return request
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.add(request)
            raise
        return request

    async def scenario() -> None:
        replies = answer_concurrently(sender.stream(), answer, 8)
        assert isinstance(replies, AsyncGenerator)
        async with aclosing(replies):
            async with asyncio.timeout(TIMEOUT):
                assert await anext(replies) == 0
            await wait_until(lambda: sender.read == 5)
        # The consumer left after one answer: the other four must not run on.
        await wait_until(lambda: cancelled == {1, 2, 3, 4} and sender.closed)

    asyncio.run(scenario())


def test_a_cancelled_consumer_leaves_no_task_behind() -> None:
    async def answer(request: int) -> int:
        await asyncio.Event().wait()
        return request

    async def scenario() -> None:
        replies = answer_concurrently(Sender(range(3), stay_open=True).stream(), answer, 8)

        async def next_reply() -> int:
            return await anext(replies)

        consumer = asyncio.create_task(next_reply())
        await asyncio.sleep(0.01)
        consumer.cancel()
        await asyncio.wait({consumer})
        assert consumer.cancelled()
        me = asyncio.current_task()
        for _ in range(50):  # cancellation takes a few loop iterations to run through
            await asyncio.sleep(0.001)
        assert [t for t in asyncio.all_tasks() if t is not me and not t.done()] == []

    asyncio.run(scenario())


def test_a_caller_that_does_not_read_stops_the_reading() -> None:
    """Answers waiting to be read count against the limit: a client that sends and never
    reads cannot make the server hold more than ``max_in_flight`` answers."""
    limit = 4
    sender = Sender(range(100), stay_open=True)

    async def answer(request: int) -> int:
        return request

    async def scenario() -> None:
        replies = answer_concurrently(sender.stream(), answer, limit)
        assert isinstance(replies, AsyncGenerator)
        async with aclosing(replies) as answers:
            first = await anext(answers)  # the caller reads one answer, then stops reading
            await asyncio.sleep(0.05)
            assert first == 0
            # one read answer + `limit` unread ones + the one request that waits for a slot
            assert sender.read <= limit + 2
            await anext(answers)
            await wait_until(lambda: sender.read == limit + 2)

    asyncio.run(scenario())


def test_a_message_that_does_not_parse_ends_the_stream_after_the_answers_before_it() -> None:
    async def undecodable_after_three() -> AsyncIterator[int]:
        for item in range(3):
            yield item
        raise DecodeError("Error parsing message")  # as gRPC's reader raises it

    async def answer(request: int) -> int:
        await asyncio.sleep((3 - request) * 0.002)  # the last read is answered first
        return request

    async def scenario() -> list[int]:
        received: list[int] = []
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(InvalidInputError, match="not a valid request message"):
                async for reply in answer_concurrently(undecodable_after_three(), answer, 8):
                    received.append(reply)
        return received

    assert sorted(asyncio.run(scenario())) == [0, 1, 2]
