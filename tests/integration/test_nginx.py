"""Three real replicas behind Debian's real nginx, run with the repository's config
(deploy/nginx/nginx.conf, upstream and listen rewritten to loopback ports): load reaches every
replica; a replica killed mid-load costs (after the client's retries) under 0.1 % of calls and
nginx stops sending to it; one stopped with SIGTERM drains with no failed call; a replacement
on the dead one's address takes traffic again."""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from axon.benchmarks.nginx_process import NginxProcess, loopback_config
from axon.client.server_process import ServerProcess, free_ports, start_server
from axon.client.sync_client import AxonClient
from tests.support.load import Load
from tests.support.repositories import DIGITS, HOLD_QUEUE
from tests.support.scrape import scrape
from tests.support.stall_model import stall_request

ONE = np.full((1, 784), 0.5, dtype=np.float32)

def served(port: int) -> int:
    with AxonClient(f"127.0.0.1:{port}") as client:
        return sum(s.inference_stats.success.count for s in client.statistics(DIGITS))


@pytest.fixture
def ports() -> Iterator[list[int]]:
    yield free_ports(4)


def test_nginx_balances_replicas_and_rides_over_kills_and_drains(
        serving_repository: Path, tmp_path: Path, ports: list[int]) -> None:
    *replica_ports, proxy_port = ports
    assert shutil.which("nginx"), "nginx is not installed (Debian: nginx; make test installs it)"

    def replica(port: int, name: str) -> ServerProcess:
        return start_server(serving_repository, tmp_path / f"{name}.log", "--models", DIGITS,
                            "--address", f"127.0.0.1:{port}", "--grace-seconds", "5")

    replicas = [replica(port, f"replica-{n}") for n, port in enumerate(replica_ports)]
    nginx = NginxProcess(loopback_config(replica_ports, proxy_port, tmp_path), proxy_port)
    replacement: ServerProcess | None = None
    load = Load(f"127.0.0.1:{proxy_port}")
    try:
        time.sleep(2)
        shares = [served(port) for port in replica_ports]
        assert all(share > 50 for share in shares), shares  # every replica takes traffic

        load.phase = "kill"
        replicas[0].process.send_signal(signal.SIGKILL)
        replicas[0].process.wait(timeout=30)
        time.sleep(3)

        load.phase = "drain"
        assert replicas[1].stop() == 0  # SIGTERM: drains, exits 0
        time.sleep(2)

        load.phase = "replaced"
        replacement = replica(replica_ports[0], "replacement")
        time.sleep(7)  # past fail_timeout (5 s): nginx tries the address again
        assert served(replica_ports[0]) > 50, "the replacement took no traffic"
    finally:
        load.stop()
        nginx.stop()
        for server in [*replicas, replacement]:
            if server is not None:
                server.stop()
    total = sum(load.calls.values())
    failed = sum(len(f) for f in load.failures.values())
    assert total > 1000
    assert failed / total < 0.001, load.failures
    assert not load.failures.get("drain"), load.failures["drain"]
    assert load.calls.get("kill", 0) > 200 and load.calls.get("drain", 0) > 100
    # nginx marked the killed replica down instead of trying it for every request.
    refused = nginx.error_log.read_text().count(f"127.0.0.1:{replica_ports[0]}")
    assert refused < load.calls["kill"] / 10, refused


def test_the_callers_deadline_reaches_the_replica_through_nginx(
        serving_repository: Path, tmp_path: Path) -> None:
    """A call whose grpc-timeout is 300 ms, to a model it keeps busy for more than a second:
    the replica ends it DEADLINE_EXCEEDED, which it can only do if nginx passed the header on
    (without it the call is answered OK after the wait). h2load sends it: unlike a gRPC client
    it does not cancel at the deadline itself, so the replica's verdict is what comes back and
    what it counts."""
    replica_port, proxy_port = free_ports(2)
    server = start_server(serving_repository, tmp_path / "replica.log", "--models", HOLD_QUEUE,
                          "--address", f"127.0.0.1:{replica_port}")
    nginx = NginxProcess(loopback_config([replica_port], proxy_port, tmp_path), proxy_port)
    body = stall_request(HOLD_QUEUE, 1.5).SerializeToString()
    framed = tmp_path / "body"
    framed.write_bytes(b"\x00" + struct.pack(">I", len(body)) + body)
    try:
        sent = subprocess.run(
            ["h2load", "-n", "1", "-c", "1", "-d", str(framed),
             "-H", "content-type: application/grpc", "-H", "te: trailers",
             "-H", "grpc-timeout: 300m",
             f"http://{nginx.address}/inference.GRPCInferenceService/ModelInfer"],
            capture_output=True, text=True, timeout=60, check=False)
        assert sent.returncode == 0, sent.stderr
        assert server.metrics_port is not None
        # gRPC core answers the caller at the deadline; the handler records the call once its
        # worker's loop takes the cancellation, which the model's run may delay.
        end = time.monotonic() + 10
        while (page := scrape(server.metrics_port)).value(
                "axon_in_flight_requests", method="ModelInfer") and time.monotonic() < end:
            time.sleep(0.05)
        assert page.value("axon_requests_total", model=HOLD_QUEUE, version="1",
                          method="ModelInfer", code="DEADLINE_EXCEEDED", protocol="grpc") == 1
        assert page.value("axon_requests_total", model=HOLD_QUEUE, version="1",
                          method="ModelInfer", code="OK", protocol="grpc") == 0
    finally:
        nginx.stop()
        server.stop()
