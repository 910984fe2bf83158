"""The real server's /metrics page, scraped over HTTP after real gRPC traffic.

A server of its own (on the session's repository): its hold models must not have run before
these tests, and its counters start from zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from axon.client.common import infer_request
from axon.client.server_process import ServerProcess, running_server
from axon.client.sync_client import AxonClient
from axon.protocol import open_inference_pb2 as oip
from axon.protocol.v1 import classification_pb2 as cls
from axon.server.gpu import load_nvml
from tests.support.repositories import BROKEN, DIGITS, HOLD_DEADLINE, HOLD_QUEUE
from tests.support.scrape import Scrape, scrape
from tests.support.stall_model import stall_request

ONE = np.full((1, 784), 0.5, dtype=np.float32)


@pytest.fixture(scope="module")
def metered(serving_repository: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("metered") / "server.log"
    with running_server(serving_repository, log, "--models",
                        f"{DIGITS},{HOLD_DEADLINE},{HOLD_QUEUE}") as process:
        yield process


@pytest.fixture(scope="module")
def client(metered: ServerProcess) -> Iterator[AxonClient]:
    with AxonClient(metered.address) as client:
        client.wait_ready()
        yield client


def metrics(server: ServerProcess) -> Scrape:
    assert server.metrics_port is not None
    return scrape(server.metrics_port)


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def poll(server: ServerProcess, condition: Callable[[Scrape], bool],
         timeout: float = 10) -> Scrape:
    """Scrape until ``condition`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        page = metrics(server)
        if condition(page):
            return page
        assert time.monotonic() < deadline, "the metrics never showed the expected state"
        time.sleep(0.02)


def test_requests_are_counted_by_model_version_method_and_code(
        metered: ServerProcess, client: AxonClient) -> None:
    before = metrics(metered)
    for _ in range(5):
        client.infer(DIGITS, ONE, version="2")
    client.infer(DIGITS, np.zeros((3, 784), np.float32), version="1")
    for bad in (infer_request("no-such-model", ONE),
                infer_request(DIGITS, np.zeros((1, 10), np.float32), version="2")):
        with pytest.raises(grpc.RpcError):
            client.inference.ModelInfer(bad)
    stream = [(f"r{i}", cls.ClassifyRequest(model_name=DIGITS, images=[cls.Image(
        pixels=cls.PixelTensor(height=28, width=28, channels=1, data=bytes(784)))]))
        for i in range(3)]
    stream.append(("bad", cls.ClassifyRequest(model_name=DIGITS)))
    assert len(list(client.classify_stream(iter(stream)))) == 4
    after = metrics(metered)

    def requests(code: str, method: str = "ModelInfer", model: str = DIGITS,
                 version: str = "2") -> float:
        return delta(before, after, "axon_requests_total", model=model, version=version,
                     method=method, code=code, protocol="grpc")

    assert requests("OK") == 5
    assert requests("OK", version="1") == 1
    # An unknown model is not a label value: callers must not be able to grow the series.
    assert requests("NOT_FOUND", model="", version="") == 1
    assert after.matching("axon_requests_total", model="no-such-model") == {}
    assert requests("INVALID_ARGUMENT") == 1
    assert requests("OK", "ClassifyStream") == 3
    assert requests("INVALID_ARGUMENT", "ClassifyStream") == 1
    timed = delta(before, after, "axon_request_duration_seconds_count", model=DIGITS,
                  version="2", method="ModelInfer", protocol="grpc")
    assert timed == 6
    assert delta(before, after, "axon_request_duration_seconds_sum", model=DIGITS,
                 version="2", method="ModelInfer", protocol="grpc") > 0
    assert after.value("axon_in_flight_requests", method="ModelInfer") == 0


def test_batching_counters_agree_with_the_statistics_extension(
        metered: ServerProcess, client: AxonClient) -> None:
    (stats_before,) = client.statistics(DIGITS, "1")
    before = metrics(metered)
    for size in (1, 4, 7):
        client.infer(DIGITS, np.zeros((size, 784), np.float32), version="1")
    after = metrics(metered)
    (stats_after,) = client.statistics(DIGITS, "1")
    labels = {"model": DIGITS, "version": "1"}
    items = delta(before, after, "axon_inference_items_total", **labels)
    executions = delta(before, after, "axon_model_executions_total", **labels)
    assert items == stats_after.inference_count - stats_before.inference_count == 12
    assert executions == stats_after.execution_count - stats_before.execution_count
    assert delta(before, after, "axon_batch_size_items_count", **labels) == executions
    assert delta(before, after, "axon_batch_size_items_sum", **labels) == 12
    assert delta(before, after, "axon_batch_size_items_bucket", le="8.0", **labels) == executions
    assert delta(before, after, "axon_compute_duration_seconds_count", **labels) == executions
    assert delta(before, after, "axon_queue_wait_seconds_count", **labels) == 3
    # Histogram buckets are cumulative and end at the count.
    buckets = sorted((float(dict(key)["le"]), value) for key, value in
                     after.matching("axon_queue_wait_seconds_bucket", **labels).items())
    assert [value for _, value in buckets] == sorted(value for _, value in buckets)
    assert buckets[-1] == (float("inf"), after.value("axon_queue_wait_seconds_count", **labels))
    assert buckets[0][0] == 0.0001 and buckets[-2][0] == 10.0


def test_queue_depth_in_flight_and_a_full_queue_are_visible(
        metered: ServerProcess, client: AxonClient) -> None:
    labels = {"model": HOLD_QUEUE, "version": "1"}
    before = metrics(metered)
    assert before.value("axon_queue_capacity_items", **labels) == 8
    five = np.zeros((5, 784), np.float32)
    stalled = client.inference.ModelInfer.future(stall_request(HOLD_QUEUE, 3.0), timeout=30)
    time.sleep(0.3)  # the stalled request runs; the next one waits behind it
    waiting = client.inference.ModelInfer.future(infer_request(HOLD_QUEUE, five), timeout=30)
    # (One scrape reads the in-flight gauge before the queue: poll until both show it.)
    held = poll(metered, lambda page: page.value("axon_queue_items", **labels) == 5
                and page.value("axon_in_flight_requests", method="ModelInfer") >= 1)
    assert held.value("axon_queue_items", **labels) == 5
    with pytest.raises(grpc.RpcError) as error:
        client.inference.ModelInfer(infer_request(HOLD_QUEUE, five), timeout=10)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    stalled.result()
    waiting.result()
    after = metrics(metered)
    assert delta(before, after, "axon_rejected_requests_total", reason="queue_full",
                 **labels) == 1
    assert delta(before, after, "axon_requests_total", method="ModelInfer",
                 code="RESOURCE_EXHAUSTED", protocol="grpc", **labels) == 1
    assert after.value("axon_queue_items", **labels) == 0


def test_an_expired_deadline_is_counted_as_a_rejection(
        metered: ServerProcess, client: AxonClient) -> None:
    labels = {"model": HOLD_DEADLINE, "version": "1"}
    before = metrics(metered)
    stalled = client.inference.ModelInfer.future(stall_request(HOLD_DEADLINE), timeout=30)
    time.sleep(0.3)
    with pytest.raises(grpc.RpcError) as error:
        client.inference.ModelInfer(infer_request(HOLD_DEADLINE, ONE), timeout=0.1)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stalled.result()
    # The batcher finds the dead request when the stalled batch ends.
    after = poll(metered, lambda page: delta(before, page, "axon_rejected_requests_total",
                                             reason="deadline_expired", **labels) >= 1)
    assert delta(before, after, "axon_rejected_requests_total", reason="deadline_expired",
                 **labels) == 1
    assert delta(before, after, "axon_requests_total", method="ModelInfer",
                 code="DEADLINE_EXCEEDED", protocol="grpc", **labels) == 1
    assert delta(before, after, "axon_model_executions_total", **labels) == 1  # the stall


def test_model_state_provider_and_load_failures(metered: ServerProcess,
                                                client: AxonClient) -> None:
    page = metrics(metered)
    assert page.get("axon_model_ready", model=DIGITS) == 1
    for version in ("1", "2"):
        assert page.get("axon_model_state", model=DIGITS, version=version, state="READY") == 1
        assert page.get("axon_model_state", model=DIGITS, version=version,
                        state="UNAVAILABLE") == 0
        assert page.get("axon_model_version_info", model=DIGITS, version=version,
                        provider="CPUExecutionProvider") == 1
    assert page.value("axon_model_load_duration_seconds_count", model=DIGITS) == 1
    assert page.get("axon_model_ready", model=BROKEN) is None, "never asked to serve it"

    with pytest.raises(grpc.RpcError) as error:
        client.inference.RepositoryModelLoad(oip.RepositoryModelLoadRequest(model_name=BROKEN))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    failed = metrics(metered)
    assert failed.get("axon_model_load_failures_total", model=BROKEN) == 1
    assert failed.get("axon_model_ready", model=BROKEN) == 0
    assert failed.get("axon_model_state", model=BROKEN, version="1", state="UNAVAILABLE") == 1

    client.inference.RepositoryModelUnload(oip.RepositoryModelUnloadRequest(model_name=DIGITS))
    try:
        unloaded = metrics(metered)
        # Unloaded on purpose: not "not ready" (that would page someone), simply not served.
        assert unloaded.get("axon_model_ready", model=DIGITS) is None
        assert unloaded.get("axon_model_state", model=DIGITS, version="1",
                            state="UNAVAILABLE") == 1
        with pytest.raises(grpc.RpcError) as refused:
            client.inference.ModelInfer(infer_request(DIGITS, ONE))
        # Its outage shows under its own name, not as an anonymous error.
        assert metrics(metered).value("axon_requests_total", model=DIGITS, version="",
                                      method="ModelInfer", code="UNAVAILABLE",
                                      protocol="grpc") >= 1
    finally:
        client.inference.RepositoryModelLoad(oip.RepositoryModelLoadRequest(model_name=DIGITS))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    reloaded = metrics(metered)
    assert reloaded.get("axon_model_ready", model=DIGITS) == 1
    assert reloaded.value("axon_model_load_duration_seconds_count", model=DIGITS) == 2


def test_process_metrics_and_gpu_metrics_only_where_nvml_exists(metered: ServerProcess) -> None:
    page = metrics(metered)
    assert page.value("process_resident_memory_bytes") > 10_000_000
    assert page.value("process_cpu_seconds_total") > 0
    assert page.get("axon_build_info", version=__import__("axon").__version__) == 1
    gpu_series = {name for name in page.names() if name.startswith("axon_gpu_")}
    if load_nvml() is None:  # this machine: no NVIDIA driver, so no GPU series at all
        assert gpu_series == set()
    else:
        assert {"axon_gpu_utilization_ratio", "axon_gpu_memory_used_bytes"} <= gpu_series


def test_every_axon_metric_follows_the_naming_rules(metered: ServerProcess) -> None:
    page = metrics(metered)
    families = [line.split()[2:4] for line in page.text.splitlines()
                if line.startswith("# TYPE axon_")]
    assert len(families) >= 15
    for name, kind in families:
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "histogram":
            assert name.endswith(("_seconds", "_items")), name
    labels = {label for key in page.samples for label, _ in key[1]
              if key[0].startswith("axon_")}
    assert labels <= {"model", "version", "method", "code", "protocol", "reason", "state",
                      "provider", "le", "gpu", "name"}


def test_metrics_can_be_turned_off(serving_repository: Path, tmp_path: Path) -> None:
    with running_server(serving_repository, tmp_path / "server.log", "--models", DIGITS,
                        "--no-metrics") as process:
        assert process.metrics_port is None
        with AxonClient(process.address) as client:
            client.wait_ready()
            assert client.infer(DIGITS, ONE)["probabilities"].shape == (1, 10)
