"""The python load generator's child process: grpc.aio calls of one serialized request, in a
closed loop of callers or an open loop at a fixed rate. ``axon bench`` runs it as
``python -m clients.aio_load`` (clients/loadgen.py ``run_python``) and reads its JSON.

Calls go through a generic unary method with raw bytes both ways, so one generator serves any
unary API and spends nothing on (de)serialising messages it does not look at.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from axon.benchmarks.scenarios import DEFAULT_MAX_OUTSTANDING, OpenLoopSchedule
from axon.client.cli import add_security_arguments, security_from
from axon.client.common import DEFAULT_CONNECTIONS, DEFAULT_MESSAGE_BYTES, channel_options

OPEN_LOOP_DEADLINE_S = 10.0
"""Each open-loop call's deadline: an overloaded server's backlog ends as DEADLINE_EXCEEDED
errors instead of keeping the run alive indefinitely."""

Unary = Callable[..., Awaitable[bytes]]
"""``unary(body, timeout=None) -> response bytes``; raises CallFailedError."""


class CallFailedError(Exception):
    """A call that did not succeed, with its status: a gRPC code's name, or ``HTTP 503``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def closed_loop(unaries: list[Unary], body: bytes, callers: int,
                      seconds: float) -> dict[str, Any]:
    """``callers`` callers, each sending its next request when the last is answered; caller
    ``i`` calls through ``unaries[i % len(unaries)]`` (one per connection)."""
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    sent = 0
    stop = time.perf_counter() + seconds

    async def caller(unary: Unary) -> None:
        nonlocal sent
        while (start := time.perf_counter()) < stop:
            sent += 1
            try:
                await unary(body)
            except CallFailedError as failure:
                codes[failure.code] += 1
                continue
            latencies.append((time.perf_counter() - start) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(caller(unaries[i % len(unaries)]) for i in range(callers)))
    return {"sent": sent, "succeeded": len(latencies), "seconds": time.perf_counter() - began,
            "latencies_ms": latencies, "errors_by_code": dict(codes), "not_sent": 0,
            "send_lag_p99_ms": None}


async def open_loop(unaries: list[Unary], body: bytes, schedule: OpenLoopSchedule,
                    max_outstanding: int) -> dict[str, Any]:
    """Each request its own task, started when it is due whatever became of earlier ones,
    the connections (``unaries``) taking turns.

    Latency runs from the time a request was due, not from when it went out. A generator that
    falls behind (a slow server holding it up, or its own CPU) sends late; timing from the send
    would leave that wait out and flatter the server exactly when it is overloaded
    (coordinated omission). A request due while ``max_outstanding`` are in flight is not sent
    and is counted as such.
    """
    latencies: list[float] = []
    lags: list[float] = []
    codes: Counter[str] = Counter()
    in_flight: set[asyncio.Task[None]] = set()
    not_sent = 0

    async def send(unary: Unary, due: float) -> None:
        try:
            await unary(body, timeout=OPEN_LOOP_DEADLINE_S)
        except CallFailedError as failure:
            codes[failure.code] += 1
            return
        latencies.append((time.perf_counter() - due) * 1000)

    start = time.perf_counter()
    for index in range(schedule.count):
        due = start + schedule.due(index)
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        if len(in_flight) >= max_outstanding:
            not_sent += 1
            continue
        lags.append(max(0.0, time.perf_counter() - due))
        task = asyncio.create_task(send(unaries[index % len(unaries)], due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)
    elapsed = max(time.perf_counter() - start, schedule.count / schedule.rate)
    return {"sent": len(lags), "succeeded": len(latencies), "seconds": elapsed,
            "latencies_ms": latencies, "errors_by_code": dict(codes), "not_sent": not_sent,
            "send_lag_p99_ms": float(np.percentile(lags, 99)) * 1000 if lags else 0.0}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    body = args.body.read_bytes()
    security = security_from(args)
    options = channel_options(DEFAULT_MESSAGE_BYTES)
    # Distinct options, or gRPC would share one connection among the channels.
    channels = [security.aio_channel(args.address, [*options, ("axon.connection", number)],
                                     warn=number == 0)
                for number in range(args.connections)]
    try:
        # No serializers: the request goes out as the bytes given, the answer comes back raw.
        unaries = [_unary(channel, args.method, security.metadata) for channel in channels]
        # Connect before the clock starts.
        await asyncio.gather(*(channel.channel_ready() for channel in channels))
        return await run_load(unaries, body, args)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


def _unary(channel: grpc.aio.Channel, path: str,
           metadata: Sequence[tuple[str, str]] | None) -> Unary:
    """Raw bytes both ways through ``channel``'s method ``path``; errors as CallFailedError."""
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
    call = functools.partial(method, metadata=metadata)

    async def unary(request: bytes, timeout: float | None = None) -> bytes:
        try:
            return await call(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise CallFailedError(error.code().name) from None

    return unary


async def run_load(unaries: list[Unary], body: bytes,
                   args: argparse.Namespace) -> dict[str, Any]:
    """The closed or open loop the arguments ask for, over ``unaries`` (one per connection)."""
    if args.rate is None:
        return await closed_loop(unaries, body, args.callers, args.seconds)
    return await open_loop(unaries, body, OpenLoopSchedule(args.rate, args.seconds),
                           args.max_outstanding)


def arguments(description: str, method: str) -> argparse.ArgumentParser:
    """The load generators' command line (this one's and aio_http_load's)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("address")
    parser.add_argument("method", help=method)
    parser.add_argument("body", type=Path, help="the serialized request")
    parser.add_argument("seconds", type=float)
    parser.add_argument("out", type=Path, help="where to write the result (JSON)")
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--callers", type=int, help="closed loop: callers")
    load.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--max-outstanding", type=int, default=DEFAULT_MAX_OUTSTANDING,
                        help="open loop: most requests in flight; more due are not sent")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS,
                        help="gRPC: HTTP/2 connections the calls take turns over (over "
                        "HTTP/REST, a connection per caller)")
    add_security_arguments(parser)
    return parser


def main() -> None:
    args = arguments("grpc.aio load of one request (used by bench)",
                     "gRPC method path, e.g. /axon.v1.Classifier/Classify").parse_args()
    args.out.write_text(json.dumps(asyncio.run(_run(args))))


if __name__ == "__main__":
    main()
