"""Every Prometheus collector of the server, in one registry that is passed in.

Naming follows Prometheus practice: the ``axon_`` prefix, base units (seconds), ``_total`` on
counters, and a small fixed label set (``model``, ``version``, ``method``, ``code``,
``protocol``, plus ``reason``/``state``/``provider`` where one metric needs it). Label values
come from loaded models and the protocol's method names only, never from what a caller typed, so
a caller cannot grow the number of series. A request over HTTP is counted under the gRPC
method's name and status code it corresponds to (``ModelInfer``, ``INVALID_ARGUMENT``), with
``protocol="http"``, so queries and alerts see both protocols alike.

Series recorded per request or per batch use the lock-free collectors of ``loop_collectors``
(recorded from the event loop's thread only), through children looked up once; gauges that
describe state (queue depth, model readiness) are read when Prometheus scrapes, costing the
serving path nothing. Rare events (model loads) use prometheus-client's own collectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass, field

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from axon.server.gpu import GpuCollector
from axon.server.loop_collectors import (
    CounterChild,
    GaugeChild,
    HistogramChild,
    LoopCounter,
    LoopGauge,
    LoopHistogram,
)

# 100 µs to 10 s: a single small-batch execution is ~50 µs-1 ms, a queue wait is bounded by
# the queue delay (8 ms default), and a stuck call shows up in the top buckets.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
MODEL_STATES = ("READY", "LOADING", "UNAVAILABLE")


@dataclass(slots=True)
class Call:
    """One request being answered: what it is called and, once known, which model answers."""

    method: str
    started: float
    protocol: str = "grpc"
    model: str = ""
    version: str = ""
    token: Token[Call | None] | None = None


_current_call: ContextVar[Call | None] = ContextVar("axon_current_call", default=None)


def attribute_call(model: str, version: int | str = "") -> None:
    """Label the request being answered in this task with the model (version) that answers it.

    Servicers call this as they resolve the model; a request that fails before a model is
    known (an unknown model, say) is counted with empty model and version labels.
    """
    call = _current_call.get()
    if call is not None:
        call.model = model
        call.version = str(version)


@dataclass(frozen=True)
class ModelState:
    """What the state collector reports for one model version at scrape time."""

    model: str
    version: int
    state: str
    provider: str = ""
    queued_items: int = 0
    queue_capacity: int = 0


@dataclass(frozen=True)
class ServedModelState:
    """Whether a model the server was asked to serve has at least one version ready."""

    model: str
    ready: bool


@dataclass
class StateSource:
    """Callables the state collector reads at scrape time (set once the manager exists)."""

    versions: Callable[[], Iterable[ModelState]] = lambda: ()
    models: Callable[[], Iterable[ServedModelState]] = lambda: ()


class ModelMetrics:
    """Children of the per-model collectors for one model version; a ``BatchObserver``."""

    __slots__ = ("_batch_size", "_compute", "_deadline", "_executions", "_items",
                 "_queue_full", "_queue_wait")

    def __init__(self, metrics: Metrics, model: str, version: int) -> None:
        labels = (model, str(version))
        # Looked up once (a reload of the same version finds the same children): every
        # series exists from the first scrape, so rate() and alerts see 0, not "no data".
        self._queue_wait = metrics.queue_wait.child(*labels)
        self._compute = metrics.compute.child(*labels)
        self._batch_size = metrics.batch_size.child(*labels)
        self._items = metrics.items.child(*labels)
        self._executions = metrics.executions.child(*labels)
        self._queue_full = metrics.rejected.child(*labels, "queue_full")
        self._deadline = metrics.rejected.child(*labels, "deadline_expired")

    def batch_executed(self, size: int, gather_ns: int, infer_ns: int, scatter_ns: int) -> None:
        self._executions.inc()
        self._items.inc(size)
        self._batch_size.observe(size)
        self._compute.observe((gather_ns + infer_ns + scatter_ns) / 1e9)

    def request_dequeued(self, waited_ns: int) -> None:
        self._queue_wait.observe(waited_ns / 1e9)

    def request_dropped(self, expired: bool) -> None:
        if expired:
            self._deadline.inc()

    def request_refused(self) -> None:
        self._queue_full.inc()


class Metrics:
    """The server's collectors, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry, *, server_version: str,
                 process: bool = True) -> None:
        """``process=False`` leaves out the process/platform/GC collectors (for a registry
        shared with something that has them already)."""
        self.registry = registry
        # The ``*_created`` series double the page and Prometheus 2 ignores them. (A process-
        # wide switch of prometheus-client: this process serves one Axon.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        model_version = ["model", "version"]
        self.requests = LoopCounter(
            "axon_requests_total", "Requests answered, by model version, API method, gRPC "
            "status code and protocol (grpc, http; each message of a stream counts as one "
            "request)", [*model_version, "method", "code", "protocol"])
        self.request_duration = LoopHistogram(
            "axon_request_duration_seconds", "Time from a request's arrival at the servicer to "
            "its answer: decoding, checks, queue wait, execution and encoding",
            [*model_version, "method", "protocol"], LATENCY_BUCKETS)
        self.in_flight = LoopGauge("axon_in_flight_requests", "Requests being answered now",
                                   ["method"])
        self.queue_wait = LoopHistogram(
            "axon_queue_wait_seconds", "Time a request waited in the batcher's queue before "
            "its batch started", model_version, LATENCY_BUCKETS)
        self.compute = LoopHistogram(
            "axon_compute_duration_seconds", "Time of one model execution: batch assembly, "
            "onnxruntime run and splitting the outputs", model_version, LATENCY_BUCKETS)
        self.batch_size = LoopHistogram(
            "axon_batch_size_items", "Items (images) per model execution", model_version,
            BATCH_SIZE_BUCKETS)
        self.items = LoopCounter(
            "axon_inference_items_total", "Items (images) inferred; divided by "
            "axon_model_executions_total it is the batching efficiency", model_version)
        self.executions = LoopCounter("axon_model_executions_total",
                                      "Model executions (batches run)", model_version)
        self.rejected = LoopCounter(
            "axon_rejected_requests_total", "Requests refused without running: the queue was "
            "full (queue_full) or their deadline passed while queued (deadline_expired)",
            [*model_version, "reason"])
        for family in (self.requests, self.request_duration, self.in_flight, self.queue_wait,
                       self.compute, self.batch_size, self.items, self.executions,
                       self.rejected):
            registry.register(family)
        self.load_failures = Counter("axon_model_load_failures", "Model loads that failed",
                                     ["model"], registry=registry)
        self.auth_refusals = Counter(
            "axon_auth_refusals", "Calls refused by token authentication: UNAUTHENTICATED (no "
            "or an unknown token) or PERMISSION_DENIED (a role that may not call the method)",
            ["code"], registry=registry)
        self.load_duration = Histogram("axon_model_load_duration_seconds",
                                       "Time to load a model (all its selected versions)",
                                       ["model"], buckets=LOAD_BUCKETS, registry=registry)
        Info("axon_build", "Axon's version", registry=registry).info(
            {"version": server_version})
        self.state = StateSource()
        registry.register(_StateCollector(self.state))
        registry.register(GpuCollector())
        if process:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(collector)
        self._calls: dict[tuple[str, str, str, str, str],
                          tuple[CounterChild, HistogramChild]] = {}
        self._in_flight: dict[str, GaugeChild] = {}

    def for_model(self, model: str, version: int) -> ModelMetrics:
        return ModelMetrics(self, model, version)

    def begin(self, method: str, protocol: str = "grpc") -> Call:
        """Start timing a request of ``method`` (the gRPC method's name, whichever protocol
        carried it); it becomes this task's current call."""
        call = Call(method, time.perf_counter(), protocol)
        call.token = _current_call.set(call)
        gauge = self._in_flight.get(method)
        if gauge is None:
            gauge = self._in_flight[method] = self.in_flight.child(method)
        gauge.value += 1  # the children's inc and dec written out, here and in end: per call
        return call

    def end(self, call: Call, code: str) -> None:
        """Count ``call`` as finished with status ``code`` (a ``grpc.StatusCode`` name)."""
        elapsed = time.perf_counter() - call.started
        self._in_flight[call.method].value -= 1
        key = (call.model, call.version, call.method, code, call.protocol)
        children = self._calls.get(key)
        if children is None:
            children = self._calls[key] = (
                self.requests.child(*key),
                self.request_duration.child(call.model, call.version, call.method,
                                            call.protocol))
        children[0].value += 1
        children[1].observe(elapsed)
        if call.token is not None:
            # try/except rather than contextlib.suppress: once per request, and cheaper.
            try:
                _current_call.reset(call.token)
            except ValueError:
                return  # ended in another context: nothing to undo

    def model_loaded(self, model: str, seconds: float) -> None:
        self.load_duration.labels(model).observe(seconds)
        self.load_failures.labels(model).inc(0)

    def model_load_failed(self, model: str) -> None:
        self.load_failures.labels(model).inc()

    def auth_refused(self, code: str) -> None:
        self.auth_refusals.labels(code).inc()


class _StateCollector(Collector):
    """Model readiness and queue depth, read from the model manager when scraped."""

    def __init__(self, source: StateSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "axon_model_state", "1 for the state each model version on disk or loaded is in "
            "(READY, LOADING or UNAVAILABLE), 0 for the others",
            labels=["model", "version", "state"])
        info = GaugeMetricFamily(
            "axon_model_version_info", "1 per loaded model version, with the execution "
            "provider that runs it", labels=["model", "version", "provider"])
        depth = GaugeMetricFamily("axon_queue_items", "Items waiting in the batcher's queue",
                                  labels=["model", "version"])
        capacity = GaugeMetricFamily(
            "axon_queue_capacity_items", "Most items the batcher's queue holds; more are "
            "refused with RESOURCE_EXHAUSTED", labels=["model", "version"])
        ready = GaugeMetricFamily(
            "axon_model_ready", "Per model the server means to serve: 1 when a version is "
            "ready, 0 when none is (loading, or its load failed); models unloaded on purpose "
            "are left out", labels=["model"])
        for entry in self._source.versions():
            version = str(entry.version)
            for name in MODEL_STATES:
                state.add_metric([entry.model, version, name], float(entry.state == name))
            if entry.state == "READY":
                info.add_metric([entry.model, version, entry.provider], 1.0)
                depth.add_metric([entry.model, version], float(entry.queued_items))
                capacity.add_metric([entry.model, version], float(entry.queue_capacity))
        for served in self._source.models():
            ready.add_metric([served.model], float(served.ready))
        yield from (state, info, depth, capacity, ready)


@dataclass
class MetricsEndpoint:
    """The HTTP server that exposes ``/metrics``; ``close`` stops it."""

    host: str
    port: int
    _close: Callable[[], None] = field(repr=False)

    def close(self) -> None:
        self._close()


def serve_metrics(registry: CollectorRegistry, address: str) -> MetricsEndpoint:
    """Expose ``registry`` at ``http://address/metrics`` from a daemon thread.

    Raises OSError when the address cannot be bound.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    httpd, thread = start_http_server(int(port), addr=host, registry=registry)

    def close() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    return MetricsEndpoint(host, int(httpd.server_port), close)
