"""After a burst of large requests a real server hands the memory it kept for reuse back to the
system once it is idle, and serves the next request as before (server/memory_release.py)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from axon.benchmarks.bench import process_rss_bytes
from axon.client.common import infer_request
from axon.client.server_process import running_server
from axon.protocol import open_inference_pb2_grpc as oip_grpc
from tests.support.repositories import DIGITS

MiB = 2**20
RELEASED = "handed"


def burst(address: str, requests: int, images: int) -> None:
    """``requests`` requests of ``images`` images each, all sent before any is answered."""
    batch = np.random.default_rng(0).random((images, 784), dtype=np.float32)
    request = infer_request(DIGITS, batch)
    with grpc.insecure_channel(address) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        calls = [stub.ModelInfer.future(request, timeout=60) for _ in range(requests)]
        for call in calls:
            assert call.result().outputs[0].shape == [images, 10]


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc")
def test_memory_grown_by_a_burst_is_released_once_idle(serving_repository: Path,
                                                       tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with running_server(serving_repository, log, "--models", DIGITS, "--workers", "1",
                        "--max-batch-size", "256", "--max-queue-size", "65536",
                        # The burst must be taken in, not shed by gRPC core (CANCELLED).
                        "--max-pending-calls", "4096",
                        "--release-memory-after-idle-seconds", "1") as server:
        pid = server.process.pid
        burst(server.address, 8, 64)  # warm: sessions and buffers in place
        time.sleep(3)
        start = process_rss_bytes(pid)
        releases = server.log().count(RELEASED)  # the warm-up may have made one
        burst(server.address, 1000, 64)  # 200 MB of requests at once
        grown = process_rss_bytes(pid)
        assert grown - start > 32 * MiB, ("the burst did not grow the server; nothing to test",
                                          start / MiB, grown / MiB)
        deadline = time.monotonic() + 15
        while server.log().count(RELEASED) == releases and time.monotonic() < deadline:
            time.sleep(0.2)
        released = process_rss_bytes(pid)
        assert server.log().count(RELEASED) == releases + 1, server.log()
        # How much of the growth comes back varies (a third to two thirds in its runs): what
        # stays is live or sits in pages that still hold a live block.
        assert grown - released > 8 * MiB, (start / MiB, grown / MiB, released / MiB)
        burst(server.address, 4, 64)  # and it serves on
