"""A load child process of the soak benchmark: ClassifyStream streams carrying one Classify
request at a fixed rate, every message's outcome recorded.

Run as ``python -m benchmarks.stream_load``. Message ``i`` is due ``i / rate`` seconds after the
start instant and goes on stream ``i % streams``; each stream is closed and a new one opened
every ``lifetime`` seconds, so stream set-up and tear-down are soaked too, not only messages.
Streams go through ``AsyncAxonClient.classify_stream`` (at most ``WINDOW`` messages unanswered
per stream). A message's latency runs from when it was due to its answer; a stream that fails
fails every message it had not answered, with the stream's status code.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from axon.benchmarks.common import NOT_SENT, Records
from axon.client.async_client import AsyncAxonClient
from axon.client.common import AxonClientError
from axon.protocol.v1 import classification_pb2 as cls

WINDOW = 64


class StreamLoad:
    """The schedule and the records of every message."""

    def __init__(self, rate: float, seconds: float, start: float) -> None:
        self.start = start
        self.due = np.arange(max(1, round(rate * seconds))) / rate
        self.lag = np.full(len(self.due), np.nan)
        self.latency = np.full(len(self.due), np.nan)
        self.code = np.full(len(self.due), NOT_SENT, dtype=np.int64)
        self.stream_failures: Counter[str] = Counter()
        self.streams = 0

    def records(self) -> Records:
        return Records(self.due, self.lag, self.latency, self.code)

    async def stream(self, client: AsyncAxonClient, request: cls.ClassifyRequest,
                     indices: npt.NDArray[np.int64]) -> None:
        """One stream carrying the messages ``indices``, each sent when due."""
        self.streams += 1

        async def messages() -> AsyncIterator[tuple[str, cls.ClassifyRequest]]:
            for index in indices.tolist():
                at = self.start + self.due[index]
                if (wait := at - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                self.lag[index] = max(0.0, time.monotonic() - at)
                yield str(index), request

        try:
            async for answer in client.classify_stream(messages(), window=WINDOW):
                index = int(answer.id)
                self.latency[index] = time.monotonic() - self.start - self.due[index]
                self.code[index] = 0 if answer.HasField("response") else answer.error.code
        except AxonClientError as error:
            self.stream_failures[error.code.name] += 1
            unanswered = indices[np.isnan(self.latency[indices])]
            self.code[unanswered] = error.code.value[0]
            self.latency[unanswered] = time.monotonic() - self.start - self.due[unanswered]

    async def run(self, client: AsyncAxonClient, request: cls.ClassifyRequest, streams: int,
                  lifetime: float) -> None:
        """``streams`` streams at a time, each replaced every ``lifetime`` seconds."""
        segment = (self.due // lifetime).astype(np.int64)
        lane = np.arange(len(self.due)) % streams
        tasks = []
        for k in range(int(segment[-1]) + 1):
            # Open the next streams just before their first message is due.
            await asyncio.sleep(max(0.0, self.start + k * lifetime - time.monotonic()))
            for s in range(streams):
                indices = np.flatnonzero((segment == k) & (lane == s))
                if len(indices):
                    tasks.append(asyncio.create_task(self.stream(client, request, indices)))
        await asyncio.gather(*tasks)


async def _run(args: argparse.Namespace) -> StreamLoad:
    request = cls.ClassifyRequest.FromString(args.body.read_bytes())
    load = StreamLoad(args.rate, args.seconds, args.start)
    async with AsyncAxonClient(args.address, timeout=None) as client:
        await client.ready()  # connect before the clock starts
        await load.run(client, request, args.streams, args.lifetime)
    return load


def main() -> None:
    parser = argparse.ArgumentParser(description="ClassifyStream load, every message recorded "
                                     "(a child of the soak benchmark)")
    parser.add_argument("address")
    parser.add_argument("body", type=Path, help="a serialized ClassifyRequest")
    parser.add_argument("out", type=Path, help="where to write the records (.npz)")
    parser.add_argument("--rate", type=float, required=True, help="messages/s, all streams")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--start", type=float, required=True,
                        help="time.monotonic() instant at which the first message is due")
    parser.add_argument("--streams", type=int, default=4, help="streams open at a time")
    parser.add_argument("--lifetime", type=float, default=30.0,
                        help="seconds before a stream is closed and replaced")
    args = parser.parse_args()
    load = asyncio.run(_run(args))
    load.records().save(args.out)
    failed = ", ".join(f"{code} {n}" for code, n in load.stream_failures.items()) or "none"
    print(f"streams: {load.streams} opened, failed: {failed}", file=sys.stderr)


if __name__ == "__main__":
    main()
