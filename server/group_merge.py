"""One server seen from outside: the answers of a worker group's workers, merged.

The supervisor (server/supervisor.py) asks every worker and answers with what this module makes
of their replies: model statistics summed, one repository index, one Prometheus page. Pure
functions over plain data, so each rule is tested without processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from axon.protocol import open_inference_pb2 as pb

if TYPE_CHECKING:  # the supervisor runs no models: it need not import them
    from axon.server.model_manager import IndexEntry

_STATE_ORDER = {"READY": 0, "LOADING": 1, "UNAVAILABLE": 2}
"""Worse is higher: the group reports a version as its least ready worker has it."""

SUMMED_GAUGES = frozenset({"axon_in_flight_requests", "axon_queue_items",
                           "axon_queue_capacity_items"})
"""Gauges that count something each worker has its own share of."""
LEAST_GAUGES = frozenset({"axon_model_ready"})
"""Gauges that hold for the group only when they hold in every worker."""
AGREED_FAMILIES = frozenset({"axon_model_load_failures", "axon_model_load_duration_seconds"})
"""Counts of what every worker does alike (each loads every model the group loads): the group
did it once, not once per worker."""
PER_WORKER_PREFIXES = ("process_", "python_")
"""Metrics of a process (CPU, memory, file descriptors, the collector): each worker's series
keeps a ``worker`` label instead of being added up."""


def merge_statistics(replies: Sequence[bytes]) -> pb.ModelStatisticsResponse:
    """The workers' serialized ModelStatisticsResponses as one: counts and durations summed
    per model version (and per batch size), the latest inference time kept."""
    merged: dict[tuple[str, str], pb.ModelStatistics] = {}
    for reply in replies:
        for stats in pb.ModelStatisticsResponse.FromString(reply).model_stats:
            key = (stats.name, stats.version)
            if key in merged:
                _add(merged[key], stats)
            else:
                merged[key] = stats
    return pb.ModelStatisticsResponse(model_stats=[merged[key] for key in sorted(merged)])


def _add(into: pb.ModelStatistics, other: pb.ModelStatistics) -> None:
    into.inference_count += other.inference_count
    into.execution_count += other.execution_count
    into.last_inference = max(into.last_inference, other.last_inference)
    _add_durations(into.inference_stats, other.inference_stats)
    sizes = {batch.batch_size: batch for batch in into.batch_stats}
    for batch in other.batch_stats:
        if batch.batch_size in sizes:
            _add_durations(sizes[batch.batch_size], batch)
        else:
            into.batch_stats.append(batch)
    ordered = sorted(into.batch_stats, key=lambda batch: batch.batch_size)
    del into.batch_stats[:]
    into.batch_stats.extend(ordered)


def _add_durations(into: pb.InferStatistics | pb.InferBatchStatistics,
                   other: pb.InferStatistics | pb.InferBatchStatistics) -> None:
    """Sum every StatisticDuration field of ``other`` into ``into``."""
    for field, duration in other.ListFields():
        if isinstance(duration, pb.StatisticDuration):
            target = getattr(into, field.name)
            target.count += duration.count
            target.ns += duration.ns


def merge_index(replies: Sequence[tuple[int, Sequence[IndexEntry]]]) -> list[IndexEntry]:
    """Every model version any worker knows (``replies``: each worker's number and index), in
    the state of its least ready worker; when the workers disagree, the reason names it."""
    seen: dict[tuple[str, int], list[tuple[int, IndexEntry]]] = {}
    for worker, entries in replies:
        for entry in entries:
            seen.setdefault((entry.name, entry.version), []).append((worker, entry))
    merged = []
    for key in sorted(seen):
        worker, worst = max(seen[key], key=lambda pair: _STATE_ORDER.get(pair[1].state, 3))
        if len({entry.state for _, entry in seen[key]}) > 1 and worst.reason:
            worst = dataclasses.replace(worst, reason=f"worker {worker}: {worst.reason}")
        merged.append(worst)
    return merged


def merge_metrics(replies: Sequence[tuple[int, Sequence[Metric]]]) -> list[Metric]:
    """The workers' collected metric families (with each worker's number) as one server's:
    counters and histograms summed; gauges summed, reduced to their least, or to their greatest
    value (a state every worker reports alike); process metrics labelled with their worker."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for worker, metrics in replies:
        for metric in metrics:
            family = families.get(metric.name)
            if family is None:
                family = families[metric.name] = Metric(metric.name, metric.documentation,
                                                        metric.type, metric.unit)
                values[metric.name] = {}
            combine = _combination(metric)
            series = values[metric.name]
            for sample in metric.samples:
                labels = dict(sample.labels)
                if combine == "worker":
                    labels["worker"] = str(worker)
                key = (sample.name, tuple(sorted(labels.items())))
                if key not in series:
                    series[key] = sample.value
                elif combine == "sum" or (combine == "worker" and
                                          metric.type in CUMULATIVE_TYPES):
                    # (a process counter twice for one worker: it died, and was replaced)
                    series[key] += sample.value
                elif combine == "min":
                    series[key] = min(series[key], sample.value)
                else:
                    series[key] = max(series[key], sample.value)
    for name, family in families.items():
        family.samples = [Sample(sample_name, dict(labels), value)
                          for (sample_name, labels), value in values[name].items()]
    return list(families.values())


CUMULATIVE_TYPES = frozenset({"counter", "histogram", "summary"})


def cumulative(metrics: Sequence[Metric]) -> list[Metric]:
    """The families of ``metrics`` that only ever grow: what a dead worker leaves to be added
    to the group's, so that they never go down when it is replaced."""
    return [metric for metric in metrics if metric.type in CUMULATIVE_TYPES]


def requests_per_worker(replies: Sequence[tuple[int, Sequence[Metric]]]) -> Metric:
    """How the kernel spread the calls: each worker's total of ``axon_requests_total``."""
    answered: dict[int, float] = {}
    for worker, metrics in replies:
        answered[worker] = answered.get(worker, 0.0) + sum(
            sample.value for metric in metrics if metric.name == "axon_requests"
            for sample in metric.samples if sample.name == "axon_requests_total")
    family = Metric("axon_worker_requests", "Requests answered by each worker process (of "
                    "axon_requests_total)", "counter")
    for worker in sorted(answered):
        family.add_sample("axon_worker_requests_total", {"worker": str(worker)},
                          answered[worker])
    return family


def _combination(metric: Metric) -> str:
    if metric.name.startswith(PER_WORKER_PREFIXES):
        return "worker"
    if metric.name in AGREED_FAMILIES:
        return "max"
    if metric.type in CUMULATIVE_TYPES or metric.name in SUMMED_GAUGES:
        return "sum"
    if metric.name in LEAST_GAUGES:
        return "min"
    return "max"
