"""The reliability benchmarks' load child (``axon.benchmarks.phased_load``), run as they run it,
against a real server of two worker processes: every call is recorded, and the calls reach
every worker (the kernel spreads connections, so one connection would load one worker)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np

from axon.benchmarks.common import Records, child_command
from axon.client.common import infer_request
from axon.client.server_process import start_server
from axon.client.sync_client import AxonClient
from tests.support.repositories import DIGITS
from tests.support.scrape import scrape

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def test_the_load_child_records_every_call_and_reaches_every_worker(
        serving_repository: Path, tmp_path: Path) -> None:
    server = start_server(serving_repository, tmp_path / "server.log", "--workers", "2",
                          "--models", DIGITS)
    try:
        with AxonClient(server.address) as client:
            client.wait_ready()
        body = tmp_path / "request.bin"
        body.write_bytes(infer_request(
            DIGITS, np.full((1, 784), 0.5, dtype=np.float32)).SerializeToString())
        out = tmp_path / "records.npz"
        assert server.metrics_port is not None
        before = scrape(server.metrics_port).matching("axon_worker_requests_total")
        subprocess.run(child_command("phased_load", server.address, METHOD, str(body), str(out),
                                     "--phases", "200:1,100:1", "--connections", "16",
                                     "--start", repr(time.monotonic() + 1.0)),
                       check=True, timeout=60)
        records = Records.load(out)
        assert len(records.code) == 300
        assert (records.code == 0).all(), records.errors()
        assert len(records.between(0, 1).code) == 200
        assert np.isfinite(records.latency).all() and (records.latency > 0).all()
        after = scrape(server.metrics_port).matching("axon_worker_requests_total")
        taken = {worker: after[worker] - before.get(worker, 0) for worker in after}
        # 16 connections leave one of 2 workers without any with a chance of 1 in 32,768.
        assert len(taken) == 2 and min(taken.values()) > 0, taken
        assert sum(taken.values()) == 300, taken
    finally:
        assert server.stop() == 0
