"""How a worker group's answers are merged into one server's (server/group_merge.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric

from axon.protocol import open_inference_pb2 as pb
from axon.server.group_merge import (
    cumulative,
    merge_index,
    merge_metrics,
    merge_statistics,
    requests_per_worker,
)
from axon.server.model_manager import IndexEntry


def statistics(count: int, last: int, sizes: dict[int, int]) -> bytes:
    return pb.ModelStatisticsResponse(model_stats=[pb.ModelStatistics(
        name="m", version="1", last_inference=last, inference_count=count,
        execution_count=len(sizes),
        inference_stats=pb.InferStatistics(success=pb.StatisticDuration(count=count,
                                                                         ns=10 * count)),
        batch_stats=[pb.InferBatchStatistics(
            batch_size=size, compute_infer=pb.StatisticDuration(count=runs, ns=runs * 7))
            for size, runs in sizes.items()])]).SerializeToString()


def test_statistics_are_summed_per_version_and_batch_size_with_the_latest_time() -> None:
    merged = merge_statistics([statistics(3, 100, {1: 1, 2: 1}),
                               statistics(5, 250, {2: 2, 4: 1})])
    (model,) = merged.model_stats
    assert (model.inference_count, model.execution_count, model.last_inference) == (8, 4, 250)
    assert (model.inference_stats.success.count, model.inference_stats.success.ns) == (8, 80)
    assert [(b.batch_size, b.compute_infer.count, b.compute_infer.ns)
            for b in model.batch_stats] == [(1, 1, 7), (2, 3, 21), (4, 1, 7)]


def test_the_index_reports_each_version_as_its_least_ready_worker_has_it() -> None:
    ready = IndexEntry("m", 1, "READY", "")
    failed = IndexEntry("m", 2, "UNAVAILABLE", "failed to load: out of memory")
    merged = merge_index([(0, [ready, IndexEntry("m", 2, "READY", "")]), (1, [ready, failed])])
    assert merged == [ready, IndexEntry("m", 2, "UNAVAILABLE",
                                        "worker 1: failed to load: out of memory")]
    # Workers that agree are quoted as they are.
    assert merge_index([(0, [failed]), (1, [failed])]) == [failed]


def collected(requests: float, in_flight: float, ready: float, cpu: float,
              loads: float) -> list[Metric]:
    registry = CollectorRegistry()
    Counter("axon_requests", "", ["code"], registry=registry).labels("OK").inc(requests)
    Gauge("axon_in_flight_requests", "", registry=registry).set(in_flight)
    Gauge("axon_model_ready", "", ["model"], registry=registry).labels("m").set(ready)
    Gauge("axon_model_state", "", ["state"], registry=registry).labels("READY").set(1)
    Counter("axon_model_load_failures", "", ["model"], registry=registry).labels("m").inc(loads)
    Counter("process_cpu_seconds", "", registry=registry).inc(cpu)
    histogram = Histogram("axon_batch_size_items", "", buckets=(1, 4), registry=registry)
    for size in (1, 3):
        histogram.observe(size)
    return list(registry.collect())


def samples(metrics: list[Metric]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value for m in metrics for s in m.samples}


def test_metrics_are_summed_combined_or_labelled_by_worker() -> None:
    merged = samples(merge_metrics([(0, collected(10, 2, 1, 1.5, 1)),
                                    (1, collected(5, 1, 0, 2.5, 1))]))
    assert merged[("axon_requests_total", frozenset({("code", "OK")}))] == 15
    assert merged[("axon_in_flight_requests", frozenset())] == 3
    # Ready only when every worker is; a state every worker reports is 1, not 2.
    assert merged[("axon_model_ready", frozenset({("model", "m")}))] == 0
    assert merged[("axon_model_state", frozenset({("state", "READY")}))] == 1
    # Every worker loads what the group loads: one failed load, not one per worker.
    assert merged[("axon_model_load_failures_total", frozenset({("model", "m")}))] == 1
    # Histograms bucket by bucket.
    assert merged[("axon_batch_size_items_bucket", frozenset({("le", "1.0")}))] == 2
    assert merged[("axon_batch_size_items_bucket", frozenset({("le", "+Inf")}))] == 4
    assert merged[("axon_batch_size_items_count", frozenset())] == 4
    # A process's own metrics stay per worker.
    assert merged[("process_cpu_seconds_total", frozenset({("worker", "0")}))] == 1.5
    assert merged[("process_cpu_seconds_total", frozenset({("worker", "1")}))] == 2.5


def test_a_dead_workers_counts_are_kept_so_the_groups_never_go_down() -> None:
    retired = cumulative(collected(10, 2, 1, 1.5, 1))
    assert {m.name for m in retired} == {"axon_requests", "axon_model_load_failures",
                                         "process_cpu_seconds", "axon_batch_size_items"}
    replacement = collected(4, 0, 1, 0.5, 0)
    merged = samples(merge_metrics([(1, replacement), (1, retired)]))
    assert merged[("axon_requests_total", frozenset({("code", "OK")}))] == 14
    assert merged[("process_cpu_seconds_total", frozenset({("worker", "1")}))] == 2.0
    assert merged[("axon_in_flight_requests", frozenset())] == 0  # gauges: the living only
    per_worker = samples([requests_per_worker([(0, collected(7, 0, 1, 0, 0)),
                                               (1, replacement), (1, retired)])])
    assert per_worker == {("axon_worker_requests_total", frozenset({("worker", "0")})): 7,
                          ("axon_worker_requests_total", frozenset({("worker", "1")})): 14}
