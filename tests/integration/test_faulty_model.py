"""A model that raises inside onnxruntime (issue 7): a failing batch fails only its own requests,
with INTERNAL and a generic message naming an incident; the log has the traceback under that
incident; requests in other batches succeed, and the batcher goes on serving.

The model (tests/support/faulty_model.py) fails on any batch holding an item whose first value
is POISON. Served with batches of exactly three (max_batch_size 3, and a queue delay far longer
than it takes twelve simultaneous callers to arrive), twelve concurrent requests make four
batches, and one poisoned request fails its batch of three.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from axon.client.common import infer_request, response_arrays
from axon.client.server_process import ServerProcess, start_server
from axon.client.sync_client import AxonClient
from tests.support.faulty_model import (
    ITEM,
    NAME,
    POISON,
    ROWS,
    build_faulty_repository,
    expected_logits,
)

BATCH = 3
CALLERS = 4 * BATCH
INCIDENT = re.compile(rf"model {NAME} v1 failed on a batch of (\d+) \(incident ([0-9a-f]{{12}})\); "
                      r"the server log has the details")
INTERNALS = ("Gather", "onnxruntime", "ONNXRuntimeError", "indices", "bounds", ".py",
             "Traceback", "/")
Outcome = npt.NDArray[np.float32] | grpc.RpcError


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The faulty model alone, on a server of its own: it logs tracebacks on purpose."""
    folder = tmp_path_factory.mktemp("faulty")
    repository = build_faulty_repository(folder / "models", {
        "max_batch_size": BATCH, "max_queue_delay_ms": 2000})
    server = start_server(repository, folder / "server.log")
    try:
        yield server
    finally:
        alive = server.process.poll() is None
        status = server.stop()
    assert alive, f"the server died:\n{server.log()}"
    assert status == 0, f"the server exited with {status}:\n{server.log()}"


@pytest.fixture(scope="module")
def client(faulty_server: ServerProcess) -> Iterator[AxonClient]:
    with AxonClient(faulty_server.address) as client:
        client.wait_ready()
        yield client


def items(count: int, seed: int) -> npt.NDArray[np.float32]:
    """Good items: the first value of each within the model's offset table."""
    rng = np.random.default_rng(seed)
    batch = rng.random((count, ITEM), dtype=np.float32)
    batch[:, 0] = rng.integers(0, ROWS, count)
    return batch


def infer(client: AxonClient, item: npt.NDArray[np.float32]) -> Outcome:
    try:
        response = client.inference.ModelInfer(infer_request(NAME, item[np.newaxis]), timeout=30)
    except grpc.RpcError as error:
        return error
    return response_arrays(response)["logits"]


def infer_together(client: AxonClient, batch: npt.NDArray[np.float32]) -> list[Outcome]:
    """One single-item request per row of ``batch``, all sent at the same moment."""
    start = threading.Barrier(len(batch))

    def call(item: npt.NDArray[np.float32]) -> Outcome:
        start.wait()
        return infer(client, item)

    with ThreadPoolExecutor(len(batch)) as pool:
        return list(pool.map(call, batch))


def incident_of(outcome: Outcome) -> tuple[int, str]:
    """The batch size and incident id of a request failed by the model, checking that the
    caller learns nothing of the model's internals."""
    assert isinstance(outcome, grpc.RpcError) and isinstance(outcome, grpc.Call), outcome
    message = outcome.details() or ""
    assert outcome.code() == grpc.StatusCode.INTERNAL, message
    match = INCIDENT.fullmatch(message)
    assert match, message
    assert not [marker for marker in INTERNALS if marker in message], message
    return int(match[1]), match[2]


def assert_answered(outcome: Outcome, item: npt.NDArray[np.float32]) -> None:
    assert isinstance(outcome, np.ndarray), outcome
    np.testing.assert_allclose(outcome, expected_logits(item[np.newaxis]), rtol=1e-5)


def test_a_failing_batch_fails_only_its_own_requests(
        faulty_server: ServerProcess, client: AxonClient) -> None:
    batch = items(CALLERS, seed=1)
    poisoned = 5
    batch[poisoned, 0] = POISON
    outcomes = infer_together(client, batch)

    failed = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, grpc.RpcError)]
    incidents = {incident_of(outcomes[i]) for i in failed}
    assert len(incidents) == 1, f"one incident for the one failed batch, got {incidents}"
    [(size, incident)] = incidents
    # Exactly the poisoned request's batch failed (how many joined it is the batcher's call).
    assert 1 <= size <= BATCH and len(failed) == size and poisoned in failed, (size, failed)
    for i, outcome in enumerate(outcomes):
        if i not in failed:
            assert_answered(outcome, batch[i])
    log = faulty_server.log()
    assert f"incident {incident}: model {NAME} v1 failed on a batch of {size}" in log, log
    assert "Traceback" in log and "indices element out of data bounds" in log, log

    # The batcher runs on: the next requests, then a poisoned request alone, then a good one.
    again = items(CALLERS, seed=2)
    for outcome, item in zip(infer_together(client, again), again, strict=True):
        assert_answered(outcome, item)
    lone = items(1, seed=3)[0]
    lone[0] = POISON
    assert incident_of(infer(client, lone))[0] == 1
    good = items(1, seed=4)[0]
    assert_answered(infer(client, good), good)

    [statistics] = client.statistics(NAME)
    assert statistics.inference_stats.fail.count == size + 1
    assert statistics.inference_stats.success.count == 2 * CALLERS - size + 1
    assert faulty_server.log().count("Traceback") == 2, "one traceback per incident"
