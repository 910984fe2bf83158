"""Counters and histograms recorded without locks, from the event loop's thread only.

prometheus-client guards every increment with a mutex (a histogram observation takes two, after
a linear walk of the buckets): about 0.6 µs. On the serving path everything is recorded from the
one event-loop thread, so plain Python numbers suffice: an observation is a ``bisect`` and two
additions (about 0.1 µs). Prometheus scrapes from the metrics server's thread; it reads whole
numbers and lists, each read atomic under the GIL. A scrape that races an observation may see
a bucket and the sum one observation apart, never a torn value, and each histogram's count is
derived from its buckets so the two always agree.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

ChildT = TypeVar("ChildT")


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


class HistogramChild:
    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        """Observations per bucket, not cumulative; the last is above every bound."""
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.total += value


class _Family(Collector, Generic[ChildT]):
    """One metric name and its children by label values, made on first use."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self._children: dict[tuple[str, ...], ChildT] = {}

    def child(self, *values: str) -> ChildT:
        found = self._children.get(values)
        if found is None:
            if len(values) != len(self.labels):
                raise ValueError(f"{self.name} takes labels {self.labels}, got {values}")
            found = self._children[values] = self._new_child()
        return found

    def _new_child(self) -> ChildT:
        raise NotImplementedError

    def _snapshot(self) -> list[tuple[tuple[str, ...], ChildT]]:
        # A copy: the event loop may add a child while a scrape iterates.
        return list(self._children.items())


class LoopCounter(_Family[CounterChild]):
    """``name`` with or without the ``_total`` suffix; the exposition writes it."""

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, child in self._snapshot():
            family.add_metric(values, child.value)
        yield family


class LoopGauge(_Family[GaugeChild]):
    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, child in self._snapshot():
            family.add_metric(values, child.value)
        yield family


class LoopHistogram(_Family[HistogramChild]):
    def __init__(self, name: str, documentation: str, labels: Sequence[str],
                 buckets: Sequence[float]) -> None:
        super().__init__(name, documentation, labels)
        self.bounds = tuple(float(b) for b in buckets)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"{name}: buckets must increase strictly")

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, child in self._snapshot():
            counts, cumulative, buckets = list(child.counts), 0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append((_bound_text(bound), float(cumulative)))
            family.add_metric(values, buckets, child.total)
        yield family


def _bound_text(bound: float) -> str:
    """The ``le`` label as prometheus-client writes it: ``0.005``, ``1.0``, ``+Inf``."""
    return "+Inf" if bound == float("inf") else repr(bound)
