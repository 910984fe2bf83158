"""The real server's life: deadlines, cancellation and overload; health, reflection and
model control; settings, provider fallback, start-up failures and graceful shutdown."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from axon.client.common import infer_request
from axon.client.server_process import ServerProcess, running_server, start_server
from axon.client.sync_client import AxonClient
from axon.protocol import open_inference_pb2 as oip
from tests.support.repositories import (
    BROKEN,
    DIGITS,
    HOLD_CANCEL,
    HOLD_DEADLINE,
    HOLD_QUEUE,
    PETS,
)
from tests.support.stall_model import stall_request

ONE = np.full((1, 784), 0.5, dtype=np.float32)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> AxonClient:
    client = AxonClient(server.address)
    client.wait_ready()
    return client


def _executions(client: AxonClient, model: str) -> tuple[int, int]:
    (stats,) = client.statistics(model)
    return stats.execution_count, stats.inference_count


def test_a_request_past_its_deadline_is_never_executed(client: AxonClient) -> None:
    """Queued behind a running batch, it expires there: gRPC cancels the call at its deadline
    and the batcher drops it; a request that expires while its call is still open is refused
    by the batcher itself (tests/unit/test_batching)."""
    before = _executions(client, HOLD_DEADLINE)
    stalled = client.inference.ModelInfer.future(stall_request(HOLD_DEADLINE), timeout=30)
    time.sleep(0.3)  # the stalled request runs
    with pytest.raises(grpc.RpcError) as error:
        client.inference.ModelInfer(infer_request(HOLD_DEADLINE, ONE), timeout=0.1)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stalled.result()
    # One execution of one item: the stalled request's, and the expired one never ran.
    assert _executions(client, HOLD_DEADLINE) == (before[0] + 1, before[1] + 1)
    assert client.infer(HOLD_DEADLINE, ONE)["probabilities"].shape == (1, 10)


def test_a_cancelled_request_is_never_executed(client: AxonClient) -> None:
    before = _executions(client, HOLD_CANCEL)
    stalled = client.inference.ModelInfer.future(stall_request(HOLD_CANCEL), timeout=30)
    time.sleep(0.3)
    call = client.inference.ModelInfer.future(infer_request(HOLD_CANCEL, ONE), timeout=10)
    time.sleep(0.2)
    assert call.cancel()
    stalled.result()
    assert _executions(client, HOLD_CANCEL) == (before[0] + 1, before[1] + 1)


def test_a_full_queue_refuses_at_once_with_resource_exhausted(client: AxonClient) -> None:
    five = np.zeros((5, 784), np.float32)
    stalled = client.inference.ModelInfer.future(stall_request(HOLD_QUEUE), timeout=30)
    time.sleep(0.3)
    waiting = client.inference.ModelInfer.future(infer_request(HOLD_QUEUE, five), timeout=30)
    time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as error:
        client.inference.ModelInfer(infer_request(HOLD_QUEUE, five), timeout=10)
    refused = error.value
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "has 5 items queued, the bound is 8" in (refused.details() or "")
    assert not waiting.done(), "the refusal must not wait for the queue to drain"
    stalled.result()
    assert waiting.result().outputs[0].shape == [5, 10]


def test_health_service_follows_models(client: AxonClient) -> None:
    health = health_pb2_grpc.HealthStub(client.channel)
    check = health.Check
    assert check(health_pb2.HealthCheckRequest(service="")).status == SERVING
    assert check(health_pb2.HealthCheckRequest(service=DIGITS)).status == SERVING
    with pytest.raises(grpc.RpcError) as error:
        check(health_pb2.HealthCheckRequest(service=BROKEN))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    inference = client.inference
    inference.RepositoryModelUnload(oip.RepositoryModelUnloadRequest(model_name=PETS))
    try:
        assert check(health_pb2.HealthCheckRequest(service=PETS)).status == NOT_SERVING
        assert not inference.ModelReady(oip.ModelReadyRequest(name=PETS)).ready
        with pytest.raises(grpc.RpcError) as error:
            client.inference.ModelInfer(infer_request(PETS, np.zeros((1, 3, 16, 16), "f4")))
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not loaded (unloaded)" in (error.value.details() or "")
    finally:
        inference.RepositoryModelLoad(oip.RepositoryModelLoadRequest(model_name=PETS))
    assert check(health_pb2.HealthCheckRequest(service=PETS)).status == SERVING
    assert inference.ModelReady(oip.ModelReadyRequest(name=PETS, version="1")).ready


def test_repository_index_shows_what_is_on_disk(client: AxonClient) -> None:
    index = client.inference.RepositoryIndex(oip.RepositoryIndexRequest())
    states = {(m.name, m.version): (m.state, m.reason) for m in index.models}
    assert states[(DIGITS, "1")] == states[(DIGITS, "2")] == ("READY", "")
    state, reason = states[(BROKEN, "1")]  # "not loaded", or why, once a load was tried
    assert state == "UNAVAILABLE" and (reason == "not loaded" or "cannot load" in reason)
    ready = client.inference.RepositoryIndex(oip.RepositoryIndexRequest(ready=True))
    assert all(m.state == "READY" for m in ready.models) and len(ready.models) >= 5


def test_reflection_lets_generic_tools_discover_the_api(client: AxonClient) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    responses = list(stub.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="axon.v1.Classifier")])))
    services = {s.name for s in responses[0].list_services_response.service}
    assert {"inference.GRPCInferenceService", "axon.v1.Classifier",
            "grpc.health.v1.Health"} <= services
    assert responses[1].file_descriptor_response.file_descriptor_proto


def test_settings_provider_fallback_and_graceful_shutdown(serving_repository: Path,
                                                          tmp_path: Path) -> None:
    """Flags beat the environment, which beats the file; unusable providers are skipped with
    one log line each; SIGTERM lets an in-flight request finish."""
    settings = tmp_path / "axon.toml"
    settings.write_text("max_batch_size = 100\nmax_queue_delay_ms = 9.0\ninstances = 2\n")
    server = start_server(serving_repository, tmp_path / "server.log", "--config",
                          str(settings), "--models", f"{PETS},{HOLD_QUEUE}", "--instances", "1",
                          "--providers", "tensorrt,cuda,cpu",
                          env={"AXON_MAX_QUEUE_DELAY_MS": "7"})
    try:
        with AxonClient(server.address) as client:
            client.wait_ready()
            pets = next(m for m in client.models() if m.name == PETS)
            assert pets.max_batch_size == 100
            assert pets.max_queue_delay_ms == pytest.approx(7)
            assert pets.execution_provider == "CPUExecutionProvider"
            in_flight = client.inference.ModelInfer.future(stall_request(HOLD_QUEUE, 1.0),
                                                           timeout=30)
            time.sleep(0.3)
            assert server.stop() == 0
            assert in_flight.result().outputs[1].shape == [1, 10]
    finally:
        server.stop()
    log = server.log()
    for provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
        assert log.count(f"execution provider {provider} skipped") == 1, log
    assert "Traceback" not in log


def _serve_command(*args: str) -> subprocess.CompletedProcess[str]:
    # The HTTP port on a free port unless a test names one: 8000 may be taken on this machine.
    http = () if "--http-address" in args else ("--http-address", "127.0.0.1:0")
    return subprocess.run([sys.executable, "-m", "axon.cli", "serve", *http, *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_model_that_cannot_load_stops_start_up_with_one_clear_line(
        serving_repository: Path) -> None:
    result = _serve_command("--model-repository", str(serving_repository), "--address",
                            "127.0.0.1:0", "--models", BROKEN)
    assert result.returncode == 1
    assert "axon: error:" in result.stderr and "onnxruntime cannot load it" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (("--version-policy", "newest"), "invalid version policy 'newest'"),
    (("--providers", "quantum"), "unknown execution provider 'quantum'"),
    (("--max-batch-size", "0"), "max_batch_size"),
    (("--address", "nowhere"), "address must be host:port"),
])
def test_bad_settings_are_refused_before_start(serving_repository: Path,
                                               flags: tuple[str, ...], message: str) -> None:
    result = _serve_command("--model-repository", str(serving_repository), *flags)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_busy_port_and_a_missing_repository_are_reported(server: ServerProcess,
                                                           serving_repository: Path,
                                                           tmp_path: Path) -> None:
    busy = _serve_command("--model-repository", str(serving_repository), "--address",
                          server.address, "--models", PETS)
    assert busy.returncode == 1 and f"cannot listen on {server.address}" in busy.stderr
    missing = _serve_command("--model-repository", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "is not a folder" in missing.stderr
    http_busy = _serve_command("--model-repository", str(serving_repository), "--address",
                               "127.0.0.1:0", "--http-address", server.http_address,
                               "--models", PETS)
    assert http_busy.returncode == 1
    assert f"cannot listen on {server.http_address} (HTTP)" in http_busy.stderr
    assert "Traceback" not in http_busy.stderr


def test_an_empty_repository_still_serves(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with running_server(empty, tmp_path / "server.log") as server, \
            AxonClient(server.address) as client:
        client.wait_ready()
        assert client.models() == []
        assert "holds no models" in server.log()
        index = client.inference.RepositoryIndex(oip.RepositoryIndexRequest())
        assert list(index.models) == []


def test_the_server_runs_without_torch_onnx_or_training(serving_repository: Path,
                                                        tmp_path: Path) -> None:
    """The serving image carries onnxruntime, not PyTorch: serve and classify with torch, onnx
    and the training package made unimportable in the server process."""
    blocked = ("import sys\n"
               "for name in ('torch', 'onnx', 'onnxscript', 'matplotlib', 'axon.training'):\n"
               "    sys.modules[name] = None\n"
               "from axon.cli import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
    server = start_server(serving_repository, tmp_path / "server.log", "--models", PETS,
                          launcher=(sys.executable, "-c", blocked))
    try:
        with AxonClient(server.address) as client:
            client.wait_ready()
            answer = client.classify([np.zeros((16, 16, 3), np.uint8)], model=PETS)
            assert answer.results[0][0].label in ("cats", "dogs")
    finally:
        assert server.stop() == 0, server.log()
