"""The lock-free collectors expose exactly what prometheus-client's own would."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from axon.server.loop_collectors import LoopCounter, LoopGauge, LoopHistogram
from axon.server.metrics import LATENCY_BUCKETS


def test_histogram_and_counter_pages_equal_prometheus_clients() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = LoopHistogram("x_seconds", "doc", ["model"], LATENCY_BUCKETS)
    counter = LoopCounter("x_events_total", "doc", ["model", "code"])
    ours.register(histogram)
    ours.register(counter)
    reference = Histogram("x_seconds", "doc", ["model"], buckets=LATENCY_BUCKETS,
                          registry=theirs)
    reference_counter = Counter("x_events", "doc", ["model", "code"], registry=theirs)
    rng = random.Random(0)
    # Exact bucket bounds included: a value equal to a bound belongs to that bucket (le).
    values = [rng.lognormvariate(-6, 2) for _ in range(2000)] + list(LATENCY_BUCKETS) + [0.0]
    for value in values:
        model = rng.choice("ab")
        histogram.child(model).observe(value)
        reference.labels(model).observe(value)
        counter.child(model, "OK").inc()
        reference_counter.labels(model, "OK").inc()

    def page(registry: CollectorRegistry) -> list[str]:
        return sorted(line for line in generate_latest(registry).decode().splitlines()
                      if "_created" not in line and not line.startswith("#"))

    ours_page, theirs_page = page(ours), page(theirs)
    sums = [line for line in ours_page if "_sum" in line]
    assert len(ours_page) == len(theirs_page) == 2 * (len(LATENCY_BUCKETS) + 3) + 2
    for mine, reference_line in zip(ours_page, theirs_page, strict=True):
        if mine in sums:  # float sums may differ in the last digit by summation order
            name, number = mine.rsplit(" ", 1)
            assert reference_line.startswith(name)
            assert float(number) == pytest.approx(float(reference_line.rsplit(" ", 1)[1]))
        else:
            assert mine == reference_line


def test_gauge_goes_up_and_down_and_labels_are_checked() -> None:
    registry = CollectorRegistry()
    gauge = LoopGauge("x_in_flight", "doc", ["method"])
    registry.register(gauge)
    child = gauge.child("M")
    child.inc()
    child.inc()
    child.dec()
    assert registry.get_sample_value("x_in_flight", {"method": "M"}) == 1
    with pytest.raises(ValueError, match="takes labels"):
        gauge.child("M", "extra")
    with pytest.raises(ValueError, match="increase"):
        LoopHistogram("y", "doc", [], (1.0, 0.5))
