"""The metrics module on its own: request accounting, state at scrape time, GPU, endpoint."""

from __future__ import annotations

import asyncio
import urllib.request
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from axon.server.errors import InvalidInputError
from axon.server.gpu import GpuCollector
from axon.server.metrics import (
    Metrics,
    ModelState,
    ServedModelState,
    attribute_call,
    serve_metrics,
)
from axon.server.status import outcome_of


class FakeContext:
    """The two things ``outcome_of`` asks of a gRPC context."""

    def __init__(self, remaining: float | None = None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def fresh() -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return Metrics(registry, server_version="test", process=False), registry


def sample(registry: CollectorRegistry, metric: str, /, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


def test_concurrent_calls_are_attributed_to_their_own_models() -> None:
    metrics, registry = fresh()

    async def call(model: str, version: int, fail: bool) -> None:
        begun = metrics.begin("ModelInfer")
        await asyncio.sleep(0.01)  # both calls are open at once
        attribute_call(model, version)
        await asyncio.sleep(0.01)
        metrics.end(begun, "INVALID_ARGUMENT" if fail else "OK")

    async def main() -> None:
        await asyncio.gather(call("a", 1, False), call("b", 3, True), call("a", 1, False))

    asyncio.run(main())
    assert sample(registry, "axon_requests_total", model="a", version="1", method="ModelInfer",
                  code="OK", protocol="grpc") == 2
    assert sample(registry, "axon_requests_total", model="b", version="3", method="ModelInfer",
                  code="INVALID_ARGUMENT", protocol="grpc") == 1
    assert sample(registry, "axon_request_duration_seconds_count", model="a", version="1",
                  method="ModelInfer", protocol="grpc") == 2
    assert sample(registry, "axon_in_flight_requests", method="ModelInfer") == 0
    assert (sample(registry, "axon_request_duration_seconds_sum", model="b", version="3",
                   method="ModelInfer", protocol="grpc") or 0) >= 0.02


def test_http_requests_are_counted_under_their_protocol() -> None:
    metrics, registry = fresh()
    call = metrics.begin("ModelInfer", "http")
    attribute_call("a", 1)
    metrics.end(call, "NOT_FOUND")
    assert sample(registry, "axon_requests_total", model="a", version="1", method="ModelInfer",
                  code="NOT_FOUND", protocol="http") == 1
    assert sample(registry, "axon_requests_total", model="a", version="1", method="ModelInfer",
                  code="NOT_FOUND", protocol="grpc") is None
    assert sample(registry, "axon_request_duration_seconds_count", model="a", version="1",
                  method="ModelInfer", protocol="http") == 1


def test_attribute_call_outside_a_call_changes_nothing() -> None:
    _, registry = fresh()
    attribute_call("a", 1)
    assert sample(registry, "axon_requests_total", model="a", version="1", method="ModelInfer",
                  code="OK") is None


def test_stream_messages_are_counted_one_by_one_with_their_codes() -> None:
    metrics, registry = fresh()

    async def good() -> str:
        attribute_call("m", 2)
        return "answer"

    async def bad() -> str:
        attribute_call("m", 2)
        raise InvalidInputError("no pixels")

    async def main() -> None:
        context: Any = FakeContext()
        ok = await outcome_of(good, "ClassifyStream", metrics, context)
        failed = await outcome_of(bad, "ClassifyStream", metrics, context)
        assert ok.result == "answer" and ok.code == grpc.StatusCode.OK
        assert failed.result is None and failed.code == grpc.StatusCode.INVALID_ARGUMENT
        assert failed.message == "no pixels"

    asyncio.run(main())
    for code in ("OK", "INVALID_ARGUMENT"):
        assert sample(registry, "axon_requests_total", model="m", version="2",
                      method="ClassifyStream", code=code, protocol="grpc") == 1


def test_a_cancelled_message_counts_as_cancelled_or_deadline_exceeded() -> None:
    metrics, registry = fresh()

    async def forever() -> None:
        await asyncio.sleep(60)

    async def main(remaining: float | None) -> None:
        context: Any = FakeContext(remaining)
        task = asyncio.create_task(outcome_of(forever, "ModelStreamInfer", metrics, context))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main(None))
    asyncio.run(main(-0.5))
    for code in ("CANCELLED", "DEADLINE_EXCEEDED"):
        assert sample(registry, "axon_requests_total", model="", version="",
                      method="ModelStreamInfer", code=code, protocol="grpc") == 1


def test_model_metrics_turn_batcher_events_into_series() -> None:
    metrics, registry = fresh()
    observer = metrics.for_model("m", 1)
    labels = {"model": "m", "version": "1"}
    assert sample(registry, "axon_rejected_requests_total", reason="queue_full", **labels) == 0
    observer.request_dequeued(300_000)
    observer.request_dequeued(2_000_000)
    observer.batch_executed(24, 10_000, 400_000, 20_000)
    observer.request_dropped(expired=True)
    observer.request_dropped(expired=False)  # cancelled: not a rejection
    observer.request_refused()
    assert sample(registry, "axon_queue_wait_seconds_bucket", le="0.0005", **labels) == 1
    assert sample(registry, "axon_queue_wait_seconds_count", **labels) == 2
    assert sample(registry, "axon_compute_duration_seconds_sum", **labels) == \
        pytest.approx(430e-6)
    assert sample(registry, "axon_batch_size_items_bucket", le="16.0", **labels) == 0
    assert sample(registry, "axon_batch_size_items_bucket", le="32.0", **labels) == 1
    assert sample(registry, "axon_inference_items_total", **labels) == 24
    assert sample(registry, "axon_model_executions_total", **labels) == 1
    assert sample(registry, "axon_rejected_requests_total", reason="deadline_expired",
                  **labels) == 1
    assert sample(registry, "axon_rejected_requests_total", reason="queue_full", **labels) == 1


def test_state_is_read_when_scraped() -> None:
    metrics, registry = fresh()
    states = [ModelState("m", 1, "UNAVAILABLE"),
              ModelState("m", 2, "READY", "CPUExecutionProvider", queued_items=7,
                         queue_capacity=64)]
    metrics.state.versions = lambda: states
    metrics.state.models = lambda: [ServedModelState("m", True), ServedModelState("x", False)]
    assert sample(registry, "axon_model_state", model="m", version="1", state="UNAVAILABLE") == 1
    assert sample(registry, "axon_model_state", model="m", version="1", state="READY") == 0
    assert sample(registry, "axon_model_version_info", model="m", version="2",
                  provider="CPUExecutionProvider") == 1
    assert sample(registry, "axon_model_version_info", model="m", version="1",
                  provider="") is None
    assert sample(registry, "axon_queue_items", model="m", version="2") == 7
    assert sample(registry, "axon_queue_capacity_items", model="m", version="2") == 64
    assert sample(registry, "axon_model_ready", model="x") == 0
    states[1] = ModelState("m", 2, "READY", "CPUExecutionProvider", queued_items=0,
                           queue_capacity=64)
    assert sample(registry, "axon_queue_items", model="m", version="2") == 0


def test_two_registries_do_not_share_counts() -> None:
    first, first_registry = fresh()
    _, second_registry = fresh()
    first.model_load_failed("m")
    assert sample(first_registry, "axon_model_load_failures_total", model="m") == 1
    assert sample(second_registry, "axon_model_load_failures_total", model="m") is None


class FakeNvml:
    """Stands in for pynvml: this machine has no GPU (the one thing mocked here)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 (NVML's names)
        if self.fail:
            raise RuntimeError("driver gone")
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:  # noqa: N802
        return b"NVIDIA H100"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(gpu=40 + handle, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(used=(handle + 1) * 2**30, total=80 * 2**30, free=0)


def test_gpu_collector_reports_each_gpu_from_nvml() -> None:
    registry = CollectorRegistry()
    registry.register(GpuCollector(FakeNvml()))
    assert sample(registry, "axon_gpu_utilization_ratio", gpu="1", name="NVIDIA H100") == 0.41
    assert sample(registry, "axon_gpu_memory_used_bytes", gpu="1", name="NVIDIA H100") == 2**31
    assert sample(registry, "axon_gpu_memory_total_bytes", gpu="0", name="NVIDIA H100") == \
        80 * 2**30


def test_gpu_series_are_absent_when_nvml_fails() -> None:
    registry = CollectorRegistry()
    registry.register(GpuCollector(FakeNvml(fail=True)))
    names = {metric.name for metric in registry.collect()}
    assert not any(name.startswith("axon_gpu") for name in names)


def test_the_endpoint_serves_the_registry_on_a_free_port() -> None:
    metrics, _ = fresh()
    metrics.model_load_failed("m")
    endpoint = serve_metrics(metrics.registry, "127.0.0.1:0")
    try:
        assert endpoint.port > 0
        url = f"http://127.0.0.1:{endpoint.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        assert 'axon_model_load_failures_total{model="m"} 1.0' in text
    finally:
        endpoint.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=2)
