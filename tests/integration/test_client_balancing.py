"""Client-side balancing: given several addresses (or a DNS name), the client spreads calls over
every replica with gRPC's round_robin policy and carries on when one goes away."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from axon.client.server_process import ServerProcess, free_ports, start_server
from axon.client.sync_client import AxonClient
from axon.client.targets import TargetError, channel_target
from tests.support.load import Load
from tests.support.repositories import DIGITS

ONE = np.full((1, 784), 0.5, dtype=np.float32)


@pytest.fixture
def replicas(serving_repository: Path, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers = [start_server(serving_repository, tmp_path / f"replica-{n}.log", "--models",
                            DIGITS) for n in range(2)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def served(server: ServerProcess) -> int:
    with AxonClient(server.address) as client:
        return sum(s.inference_stats.success.count for s in client.statistics(DIGITS))


def test_round_robin_reaches_every_replica_and_rides_over_kills_drains_and_replacements(
        serving_repository: Path, tmp_path: Path) -> None:
    """The nginx test's scenario (test_nginx.py) with no proxy: the client balances."""
    ports = free_ports(3)

    def replica(port: int, name: str) -> ServerProcess:
        return start_server(serving_repository, tmp_path / f"{name}.log", "--models", DIGITS,
                            "--address", f"127.0.0.1:{port}")

    servers = [replica(port, f"replica-{n}") for n, port in enumerate(ports)]
    replacement: ServerProcess | None = None
    load = Load(",".join(f"127.0.0.1:{port}" for port in ports))
    try:
        time.sleep(2)
        shares = [served(server) for server in servers]
        assert all(share > 50 for share in shares), shares
        load.phase = "kill"
        servers[0].process.send_signal(signal.SIGKILL)
        servers[0].process.wait(timeout=30)
        time.sleep(3)
        load.phase = "drain"
        assert servers[1].stop() == 0
        time.sleep(2)
        load.phase = "replaced"
        replacement = replica(ports[0], "replacement")
        time.sleep(7)  # the channel reconnects to the address (backoff at most 5 s)
        assert served(replacement) > 50, "the replacement took no traffic"
    finally:
        load.stop()
        for server in [*servers, replacement]:
            if server is not None:
                server.stop()
    total = sum(load.calls.values())
    failed = sum(len(f) for f in load.failures.values())
    assert total > 1000 and failed / total < 0.001, load.failures
    assert not load.failures.get("drain"), load.failures["drain"]
    assert load.calls.get("kill", 0) > 200 and load.calls.get("drain", 0) > 100


def test_targets() -> None:
    assert channel_target("127.0.0.1:1") == ("127.0.0.1:1", [])
    assert channel_target("127.0.0.1:1, localhost:2")[0] == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("dns:///axon-headless:8001")[1] == [("grpc.lb_policy_name",
                                                                 "round_robin")]
    with pytest.raises(TargetError, match="expected host:port"):
        channel_target("127.0.0.1:1,b")
    with pytest.raises(TargetError, match=r"cannot resolve 'no-such-host\.invalid'"):
        channel_target("127.0.0.1:1,no-such-host.invalid:2")


def test_replicas_on_one_repository_give_identical_answers(
        replicas: list[ServerProcess]) -> None:
    """Stateless replicas: the same model files and settings, the same bits out."""
    batch = np.random.default_rng(7).random((16, 784), dtype=np.float32)
    answers = []
    for server in replicas:
        with AxonClient(server.address) as client:
            answers.append((client.infer(DIGITS, batch)["probabilities"],
                            client.model_metadata(DIGITS).versions))
    (first, first_versions), (second, second_versions) = answers
    assert np.array_equal(first, second) and first_versions == second_versions
