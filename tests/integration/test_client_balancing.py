"""Client-side balancing: given several addresses (or a DNS name), the client spreads calls over
every replica with gRPC's round_robin policy and carries on when one goes away."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clients.client import AxonClient, RetryPolicy
from clients.server_process import ServerProcess, start_server
from clients.targets import TargetError, channel_target
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


def test_calls_reach_every_replica_and_survive_one_going_away(
        replicas: list[ServerProcess]) -> None:
    addresses = ",".join(server.address for server in replicas)
    before = [served(server) for server in replicas]
    patient = RetryPolicy(attempts=10, initial_backoff=0.05, max_backoff=0.5)
    with AxonClient(addresses, retry=patient) as client:
        for _ in range(100):
            assert client.infer(DIGITS, ONE)["probabilities"].shape == (1, 10)
        shares = [served(server) - start for server, start in zip(replicas, before, strict=True)]
        assert sum(shares) == 100 and min(shares) >= 30, shares  # round robin: about half each
        replicas[1].process.send_signal(signal.SIGKILL)
        replicas[1].process.wait(timeout=30)
        for _ in range(50):  # retries ride over the lost connection; then one replica serves
            assert client.infer(DIGITS, ONE)["probabilities"].shape == (1, 10)
    assert served(replicas[0]) - before[0] >= shares[0] + 45


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
