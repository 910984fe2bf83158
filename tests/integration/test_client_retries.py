"""The client's retries against real servers: a restart mid-run costs no failed call; codes
that are not transient are never retried; the retry budget is bounded."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from axon.client.common import AxonClientError, RetryPolicy
from axon.client.server_process import ServerProcess, free_port, start_server
from axon.client.sync_client import AxonClient
from tests.support.repositories import DIGITS

ONE = np.full((1, 784), 0.5, dtype=np.float32)


def serve_on(repository: Path, log: Path, port: int) -> ServerProcess:
    return start_server(repository, log, "--models", DIGITS, "--address", f"127.0.0.1:{port}")


def test_a_server_restarted_mid_run_costs_no_failed_call(serving_repository: Path,
                                                         tmp_path: Path) -> None:
    port = free_port()
    first = serve_on(serving_repository, tmp_path / "first.log", port)
    answered: list[int] = []
    failures: list[AxonClientError] = []
    client = AxonClient(f"127.0.0.1:{port}", timeout=60,
                        retry=RetryPolicy(attempts=20, initial_backoff=0.05, max_backoff=0.5))

    def calls() -> None:
        for index in range(300):
            try:
                probabilities = client.infer(DIGITS, ONE)["probabilities"]
                assert probabilities.shape == (1, 10)
                answered.append(index)
            except AxonClientError as error:
                failures.append(error)
            time.sleep(0.01)

    caller = threading.Thread(target=calls)
    second: ServerProcess | None = None
    try:
        caller.start()
        while len(answered) < 30:
            time.sleep(0.01)
        assert first.stop() == 0  # SIGTERM: in-flight calls drain, new ones find no server
        second = serve_on(serving_repository, tmp_path / "second.log", port)
        caller.join(timeout=120)
    finally:
        client.close()
        for server in (first, second):
            if server is not None:
                server.stop()
    assert not caller.is_alive()
    assert failures == []
    assert answered == list(range(300))
    assert client.retries > 0, "the restart happened between calls: nothing was tested"


def test_errors_that_are_not_transient_are_not_retried(server: ServerProcess) -> None:
    with AxonClient(server.address, retry=RetryPolicy(attempts=5)) as client:
        with pytest.raises(AxonClientError) as error:
            client.infer("no-such-model", ONE)
        assert error.value.code.name == "NOT_FOUND"
        with pytest.raises(AxonClientError) as error:
            client.infer(DIGITS, np.zeros((1, 3), np.float32))
        assert error.value.code.name == "INVALID_ARGUMENT"
        assert client.retries == 0


def test_retries_stop_at_the_attempt_limit_and_the_deadline() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    with AxonClient(nobody, retry=RetryPolicy(attempts=4, initial_backoff=0.01,
                                              max_backoff=0.02)) as client:
        with pytest.raises(AxonClientError) as error:
            client.infer(DIGITS, ONE)
        assert error.value.code.name == "UNAVAILABLE"
        assert client.retries == 3
    started = time.monotonic()
    patient = RetryPolicy(attempts=1000, initial_backoff=0.05, max_backoff=0.2)
    with AxonClient(nobody, timeout=1.0, retry=patient) as client, \
            pytest.raises(AxonClientError):
        client.infer(DIGITS, ONE)
    assert time.monotonic() - started < 3.0, "retries ran past the call's deadline"
