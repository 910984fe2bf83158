"""Bidirectional streams answered concurrently: one task per request, answers as they finish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import DecodeError

from axon.server.errors import InvalidInputError

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


async def answer_concurrently(requests: AsyncIterator[RequestT],
                              answer: Callable[[RequestT], Awaitable[ResponseT]],
                              max_in_flight: int) -> AsyncIterator[ResponseT]:
    """Yield ``answer(request)`` for each request, in completion order.

    ``answer`` must turn failures into responses itself: a stream carries many requests and one
    bad request must not end it. Bytes that do not parse as a request do end it, once the
    requests before them are answered: InvalidInputError. At most ``max_in_flight`` requests
    are being answered or waiting for the caller to read their answers; past that, reading
    stops, so a sender that does not read is slowed by flow control instead of filling
    memory. When the caller goes away, unanswered requests are cancelled.
    """
    answers: asyncio.Queue[ResponseT] = asyncio.Queue()
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def run(request: RequestT) -> None:
        try:
            response = await answer(request)
        except BaseException:
            slots.release()
            raise
        answers.put_nowait(response)  # its slot is freed once the caller has taken it

    async def read() -> None:
        undecodable: DecodeError | None = None
        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.create_task(run(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except DecodeError as exc:
            # gRPC parses each message as it is read, so a caller's bytes that are not a
            # message surface here: the caller's error, not the server's.
            undecodable = exc
        while tasks:
            await asyncio.wait(set(tasks))
        if undecodable is not None:
            raise InvalidInputError("a message on the stream is not a valid request message; "
                                    "the messages before it were answered") from undecodable

    reader = asyncio.create_task(read())
    getter: asyncio.Future[ResponseT] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(answers.get())
            await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
                slots.release()
                continue
            getter.cancel()
            while not answers.empty():
                yield answers.get_nowait()
                slots.release()
            reader.result()  # re-raises what ended the reading, if anything did
            return
    finally:
        reader.cancel()
        if getter is not None:
            getter.cancel()
        for task in list(tasks):
            task.cancel()
