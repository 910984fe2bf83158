"""Cumulative per model version statistics, in the shape of the protocol's statistics extension.

Updated from the event loop only (the batcher reports after its executor returns), so plain
integers suffice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Duration:
    """How often something happened and its total duration in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchSizeStatistics:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ModelStatistics:
    """What one model version has done since it was loaded."""

    inference_count: int = 0
    """Items (images) answered successfully."""
    execution_count: int = 0
    """Model executions (batches)."""
    last_inference_ms: int = 0
    """Wall-clock time of the last success, in milliseconds since the epoch."""
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    dropped: int = 0
    """Requests dropped before execution: cancelled by the caller or past their deadline."""
    batches: dict[int, BatchSizeStatistics] = field(default_factory=dict)

    def batch_executed(self, size: int, gather_ns: int, infer_ns: int, scatter_ns: int) -> None:
        # Once per execution, on the serving path: fields updated in place, no calls.
        self.execution_count += 1
        per_size = self.batches.get(size)
        if per_size is None:
            per_size = self.batches[size] = BatchSizeStatistics()
        for durations in (self, per_size):
            durations.compute_input.count += 1
            durations.compute_input.ns += gather_ns
            durations.compute_infer.count += 1
            durations.compute_infer.ns += infer_ns
            durations.compute_output.count += 1
            durations.compute_output.ns += scatter_ns

    def request_dequeued(self, waited_ns: int) -> None:
        queue = self.queue  # Duration.add written out, here and below: once per request
        queue.count += 1
        queue.ns += waited_ns

    def request_dropped(self, expired: bool) -> None:
        self.dropped += 1

    def request_refused(self) -> None:
        """Refused at the door (queue full): counted as a failed request by ``ServedModel``."""

    def request_succeeded(self, items: int, elapsed_ns: int) -> None:
        self.inference_count += items
        success = self.success
        success.count += 1
        success.ns += elapsed_ns
        self.last_inference_ms = time.time_ns() // 1_000_000

    def request_failed(self, elapsed_ns: int) -> None:
        self.fail.add(elapsed_ns)
