"""Admission and graceful drain: calls past ``--max-concurrent-rpcs`` are refused with
RESOURCE_EXHAUSTED, and once the server is stopping new calls are refused with UNAVAILABLE (a
client retries them elsewhere or after the restart) while every call already accepted runs to
its answer.

The concurrency bound is counted here rather than by grpc.aio's own ``maximum_concurrent_rpcs``,
which costs about 5 % of the server's CPU per call (a measured A/B,
docs/performance.md): the count of calls in progress is kept here anyway.

Streams stop taking new messages: the messages already read are answered, then the stream ends
UNAVAILABLE, so a client knows exactly which of its messages to send again. Everything here
runs on the event loop's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import Any, Generic, TypeVar

from axon.server.errors import ShuttingDownError, TooManyCallsError

MessageT = TypeVar("MessageT")

STOPPING = "the server is stopping; call again (another replica, or this one once restarted)"


class Drain:
    """Counts the calls in progress, admits at most ``max_calls`` at once and, once ``close`` is
    called, none."""

    def __init__(self, max_calls: int | None = None) -> None:
        self._max_calls = max_calls
        self._in_flight = 0
        # Plain values, not asyncio Events: every call passes enter and exit, and an Event's
        # methods are Python calls. Only close waits, on a future it makes.
        self._all_ended: asyncio.Future[None] | None = None
        self.closing = False
        """Whether ``close`` was called: no call is admitted any more."""
        self.pending_reads: set[asyncio.Future[Any]] = set()
        """Streams' pending reads of their next message, cancelled when the drain starts."""

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self) -> None:
        """Admit a call; raises ``ShuttingDownError`` (UNAVAILABLE) once closing,
        ``TooManyCallsError`` (RESOURCE_EXHAUSTED) at the bound."""
        if self.closing:
            raise ShuttingDownError(STOPPING)
        if self._max_calls is not None and self._in_flight >= self._max_calls:
            raise TooManyCallsError(f"the server is answering {self._in_flight} calls, its limit "
                                    "(--max-concurrent-rpcs); retry later")
        self._in_flight += 1

    def exit(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._all_ended is not None \
                and not self._all_ended.done():
            self._all_ended.set_result(None)

    async def close(self, grace: float) -> bool:
        """Refuse new calls and stop streams reading, then wait up to ``grace`` seconds for
        the admitted calls to end. True if they all did."""
        self.closing = True
        for read in list(self.pending_reads):
            read.cancel()
        if self._in_flight == 0:
            return True
        if self._all_ended is None:
            self._all_ended = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._all_ended), timeout=grace)
        except TimeoutError:
            return False
        return True

    def messages(self, requests: AsyncIterable[MessageT]) -> DrainedMessages[MessageT]:
        """A stream's ``requests`` until the drain starts."""
        return DrainedMessages(requests, self)


class DrainedMessages(Generic[MessageT]):
    """A stream's messages, cut off when the server starts draining: the message being
    awaited then is left unread and ``cut`` turns true."""

    def __init__(self, requests: AsyncIterable[MessageT], drain: Drain) -> None:
        self._iterator = aiter(requests)
        self._drain = drain
        self.cut = False

    def __aiter__(self) -> DrainedMessages[MessageT]:
        return self

    async def __anext__(self) -> MessageT:
        if self._drain.closing:
            self.cut = True
            raise StopAsyncIteration
        # A task of its own, so that ``Drain.close`` can cancel the wait for the next message
        # without cancelling the stream's handler.
        read: asyncio.Future[MessageT] = asyncio.ensure_future(anext(self._iterator))
        reads = self._drain.pending_reads
        reads.add(read)
        try:
            return await read
        except asyncio.CancelledError:
            if read.cancelled() and self._drain.closing:
                self.cut = True
                raise StopAsyncIteration from None
            raise
        finally:
            reads.discard(read)
