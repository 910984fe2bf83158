"""A load child process of the reliability benchmarks: one unary request sent open-loop on a
schedule of phases (a rate for a number of seconds each), every call's outcome recorded.

Run as ``python -m axon.benchmarks.phased_load``. As in benchmarks/aio_load.py's open loop, each
request is its own task, started when it is due whatever became of earlier ones, and its latency
runs from when it was due, not from when it went out (no coordinated omission). Unlike it, every
call is kept: when it was due (seconds after the start instant shared with the parent), how late it
went out, how long it took and its status code (``common.Records``), so the parent can cut the run
into phases and 100 ms windows. Several children can share one schedule (``--part J --parts P``:
child J sends requests J, J+P, J+2P, ...) when one process cannot keep up. Calls take turns over
``--connections`` connections, as Axon's clients do, so that a server of several worker processes
gets them all (the kernel spreads connections, not calls).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from axon.benchmarks.aio_load import OPEN_LOOP_DEADLINE_S
from axon.benchmarks.common import NOT_SENT, Records
from axon.benchmarks.scenarios import DEFAULT_MAX_OUTSTANDING
from axon.client.common import DEFAULT_CONNECTIONS, DEFAULT_MESSAGE_BYTES, channel_options


@dataclass(frozen=True)
class Phase:
    rate: float
    """Requests per second, all parts together."""
    seconds: float

    def __str__(self) -> str:
        return f"{self.rate:g}:{self.seconds:g}"


def parse_phases(text: str) -> list[Phase]:
    """``RATE:SECONDS,RATE:SECONDS,...``, e.g. ``2000:5,8000:20,2000:10``."""
    phases = []
    for part in text.split(","):
        rate, _, seconds = part.partition(":")
        phases.append(Phase(float(rate), float(seconds)))
    if not phases or any(p.rate < 0 or p.seconds <= 0 for p in phases):
        raise ValueError(f"bad phases {text!r}: RATE:SECONDS,... with positive seconds")
    return phases


def due_times(phases: Sequence[Phase], part: int = 0, parts: int = 1) -> Iterator[float]:
    """Seconds after the start at which this part's requests are due: evenly spaced within each
    phase, request ``i`` of all parts going to part ``i % parts``."""
    start, index = 0.0, 0
    for phase in phases:
        for k in range(round(phase.rate * phase.seconds)):
            if index % parts == part:
                yield start + k / phase.rate
            index += 1
        start += phase.seconds


async def open_loop(methods: Sequence[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]],
                    body: bytes, due: Sequence[float], start: float,
                    max_outstanding: int) -> Records:
    """Send ``body`` at ``start + due[i]`` (monotonic clock) for each i, through
    ``methods[i % len(methods)]`` (one per connection); record each call."""
    count = len(due)
    lag = np.full(count, np.nan)
    latency = np.full(count, np.nan)
    code = np.full(count, NOT_SENT, dtype=np.int64)
    in_flight: set[asyncio.Task[None]] = set()

    async def send(index: int, at: float) -> None:
        try:
            await methods[index % len(methods)](body, timeout=OPEN_LOOP_DEADLINE_S)
            code[index] = 0
        except grpc.aio.AioRpcError as error:
            code[index] = error.code().value[0]
        latency[index] = time.monotonic() - at

    for index, offset in enumerate(due):
        at = start + offset
        if (wait := at - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if len(in_flight) >= max_outstanding:
            continue  # recorded as NOT_SENT
        lag[index] = max(0.0, time.monotonic() - at)
        task = asyncio.create_task(send(index, at))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)
    return Records(np.asarray(due, dtype=np.float64), lag, latency, code)


async def _run(args: argparse.Namespace) -> Records:
    due = list(due_times(parse_phases(args.phases), args.part, args.parts))
    options = channel_options(DEFAULT_MESSAGE_BYTES)
    # Distinct options, or gRPC would share one connection among the channels.
    channels = [grpc.aio.insecure_channel(args.address, [*options, ("axon.connection", number)])
                for number in range(args.connections)]
    try:
        # No serializers: the request goes out as the bytes given, the answer comes back raw.
        methods: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = [
            channel.unary_unary(args.method) for channel in channels]
        # Connect before the clock starts.
        await asyncio.gather(*(channel.channel_ready() for channel in channels))
        return await open_loop(methods, args.body.read_bytes(), due, args.start,
                               args.max_outstanding)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


def main() -> None:
    parser = argparse.ArgumentParser(description="open-loop load of one request over phases, "
                                     "every call recorded (a child of the benchmarks)")
    parser.add_argument("address")
    parser.add_argument("method", help="gRPC method path, e.g. /axon.v1.Classifier/Classify")
    parser.add_argument("body", type=Path, help="the serialized request")
    parser.add_argument("out", type=Path, help="where to write the records (.npz)")
    parser.add_argument("--phases", required=True, help="RATE:SECONDS,... (all parts together)")
    parser.add_argument("--start", type=float, required=True,
                        help="time.monotonic() instant at which the first phase begins")
    parser.add_argument("--part", type=int, default=0)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--max-outstanding", type=int, default=DEFAULT_MAX_OUTSTANDING)
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS,
                        help=f"connections the calls take turns over (default "
                             f"{DEFAULT_CONNECTIONS}, as Axon's clients)")
    args = parser.parse_args()
    if args.connections < 1:
        parser.error("--connections must be at least 1")
    asyncio.run(_run(args)).save(args.out)


if __name__ == "__main__":
    main()
