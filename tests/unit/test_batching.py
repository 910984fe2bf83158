"""The dynamic batcher, driven by a fake model that doubles its rows and records every batch.

Tests assert on which rows ran together and in what order, never on exact timings; delays are
either tiny or so long that only the size rule can have cut the batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import numpy as np
import pytest

from server.batching import Array, BatchingPolicy, DynamicBatcher
from server.errors import (
    DeadlineExpiredError,
    InvalidInputError,
    ModelExecutionError,
    QueueFullError,
    ShuttingDownError,
)
from server.statistics import ModelStatistics

WIDTH = 3
LONG = 10.0
"""A queue delay no test may wait out: a batch cut before it was cut by size."""


class FakeModel:
    """Returns (2x, row sums); records the batches it ran; can be held at a gate."""

    def __init__(self, *, held: bool = False,
                 barrier: threading.Barrier | None = None) -> None:
        self.batches: list[Array] = []
        self.gate = threading.Event()
        self._barrier = barrier
        self._lock = threading.Lock()
        if not held:
            self.gate.set()

    def execute(self, batch: Array) -> Sequence[Array]:
        with self._lock:
            self.batches.append(batch.copy())
        if not self.gate.wait(timeout=LONG):
            raise TimeoutError("the test never released the model")
        if self._barrier is not None:
            self._barrier.wait()
        if (batch < 0).any():
            raise RuntimeError("boom: negative input")
        return reference(batch)

    @property
    def batch_sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    @property
    def executed_ids(self) -> list[int]:
        """The id (first value) of every row that was executed, in execution order."""
        return [int(row[0]) for batch in self.batches for row in batch]


def reference(batch: Array) -> list[Array]:
    """What the model gives for ``batch`` run on its own."""
    return [batch * 2, batch.sum(axis=1, keepdims=True)]


def rows(*ids: int) -> Array:
    """One row per id, ``[id, id + 0.25, id + 0.5]``: each row says where it came from."""
    return np.array([[i, i + 0.25, i + 0.5] for i in ids], dtype=np.float32).reshape(-1, WIDTH)


def assert_own_rows(request: Array, answer: list[Array]) -> None:
    expected = reference(request)
    assert len(answer) == len(expected)
    for got, want in zip(answer, expected, strict=True):
        np.testing.assert_array_equal(got, want)


async def wait_until(condition: Callable[[], bool], timeout: float = LONG / 2) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


@asynccontextmanager
async def batcher_for(model: FakeModel, policy: BatchingPolicy,
                      observer: ModelStatistics | None = None) -> AsyncIterator[DynamicBatcher]:
    """A batcher over ``model``; on exit the model is released and the batcher closed."""
    batcher = DynamicBatcher(model.execute, policy, observer, name="fake")
    try:
        yield batcher
    finally:
        model.gate.set()
        await batcher.close()


async def executing(model: FakeModel, batcher: DynamicBatcher,
                    request: Array) -> asyncio.Task[list[Array]]:
    """Submit ``request`` and return once the (held) model has started on it."""
    count = len(model.batches)
    task = asyncio.create_task(batcher.submit(request))
    await wait_until(lambda: len(model.batches) > count)
    return task


def test_concurrent_requests_within_the_delay_run_as_one_execution() -> None:
    model = FakeModel()
    requests = [rows(1), rows(2, 3), rows(4, 5, 6)]

    async def scenario() -> None:
        async with batcher_for(model, BatchingPolicy(16, max_queue_delay_s=0.4)) as batcher:
            first = asyncio.create_task(batcher.submit(requests[0]))
            await asyncio.sleep(0.01)  # later, but well within the delay (and its pause rule)
            answers = await asyncio.gather(first, *(batcher.submit(r) for r in requests[1:]))
            for request, answer in zip(requests, answers, strict=True):
                assert_own_rows(request, answer)
            assert model.batch_sizes == [6]
            assert model.executed_ids == [1, 2, 3, 4, 5, 6]  # FIFO

    asyncio.run(scenario())


def test_requests_after_a_batch_was_cut_run_separately() -> None:
    model = FakeModel()

    async def scenario() -> None:
        async with batcher_for(model, BatchingPolicy(16, max_queue_delay_s=0.001)) as batcher:
            assert_own_rows(rows(1), await batcher.submit(rows(1)))
            assert_own_rows(rows(2), await batcher.submit(rows(2)))
        assert model.batch_sizes == [1, 1]

    asyncio.run(scenario())


def test_a_full_batch_is_cut_at_once_and_holds_only_whole_requests() -> None:
    model = FakeModel()
    requests = [rows(1, 2, 3), rows(4, 5), rows(6, 7)]

    async def scenario() -> None:
        policy = BatchingPolicy(4, max_queue_delay_s=LONG)
        async with batcher_for(model, policy) as batcher, asyncio.timeout(LONG / 2):
            answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
            for request, answer in zip(requests, answers, strict=True):
                assert_own_rows(request, answer)
        # [1, 2, 3] + [4, 5] would be 5 > 4: the 2-item request waits for the next batch
        # rather than being split.
        assert [[int(r[0]) for r in b] for b in model.batches] == [[1, 2, 3], [4, 5, 6, 7]]

    asyncio.run(scenario())


def test_every_caller_gets_exactly_its_own_rows() -> None:
    model = FakeModel()
    rng = np.random.default_rng(7)
    sizes = [int(n) for n in rng.integers(1, 6, size=30)]
    starts = np.cumsum([0, *sizes])
    requests = [rows(*range(int(s), int(s) + n)) for s, n in zip(starts, sizes, strict=False)]

    async def scenario() -> None:
        async with batcher_for(model, BatchingPolicy(5, max_queue_delay_s=0.02)) as batcher:
            answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
            for request, answer in zip(requests, answers, strict=True):
                assert_own_rows(request, answer)
        assert len(model.batches) > 1 and max(model.batch_sizes) <= 5
        # Each row ran exactly once, oldest request first.
        assert model.executed_ids == list(range(sum(sizes)))

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [0, 5])
def test_a_request_outside_one_to_max_batch_size_is_refused(size: int) -> None:
    model = FakeModel()

    async def scenario() -> None:
        async with batcher_for(model, BatchingPolicy(4)) as batcher:
            with pytest.raises(InvalidInputError, match=f"1 to 4 items .* got {size}"):
                await batcher.submit(rows(*range(size)))
            assert batcher.queued_items == 0
        assert model.batches == []

    asyncio.run(scenario())


def test_submits_beyond_the_queue_bound_are_refused_at_once() -> None:
    model = FakeModel(held=True)

    async def scenario() -> None:
        policy = BatchingPolicy(2, max_queue_delay_s=0, max_queue_items=4)
        async with batcher_for(model, policy) as batcher:
            running = await executing(model, batcher, rows(1, 2))
            waiting = (rows(3, 4), rows(5), rows(6))
            queued = [asyncio.create_task(batcher.submit(r)) for r in waiting]
            await wait_until(lambda: batcher.queued_items == 4)
            async with asyncio.timeout(1):
                with pytest.raises(QueueFullError, match="4 items queued, the bound is 4"):
                    await batcher.submit(rows(99))
            model.gate.set()
            assert_own_rows(rows(1, 2), await running)
            for task, request in zip(queued, waiting, strict=True):
                assert_own_rows(request, await task)
            # Room again once the queue drained.
            assert_own_rows(rows(7), await batcher.submit(rows(7)))
        assert 99 not in model.executed_ids
        assert sorted(model.executed_ids) == [1, 2, 3, 4, 5, 6, 7]

    asyncio.run(scenario())


def test_a_request_whose_deadline_passes_in_the_queue_is_never_run() -> None:
    model = FakeModel(held=True)
    statistics = ModelStatistics()

    async def scenario() -> None:
        async with batcher_for(model, BatchingPolicy(4, max_queue_delay_s=0),
                               statistics) as batcher:
            running = await executing(model, batcher, rows(1))
            late = asyncio.create_task(batcher.submit(rows(2), time.monotonic() + 0.03))
            patient = asyncio.create_task(batcher.submit(rows(3), time.monotonic() + LONG))
            await wait_until(lambda: batcher.queued_items == 2)
            await asyncio.sleep(0.06)
            model.gate.set()
            assert_own_rows(rows(1), await running)
            with pytest.raises(DeadlineExpiredError, match="deadline passed"):
                await late
            assert_own_rows(rows(3), await patient)
        assert model.executed_ids == [1, 3]
        assert statistics.dropped == 1

    asyncio.run(scenario())


def test_a_cancelled_request_is_dropped_before_execution() -> None:
    model = FakeModel(held=True)
    statistics = ModelStatistics()

    async def scenario() -> None:
        async with batcher_for(model, BatchingPolicy(4, max_queue_delay_s=0),
                               statistics) as batcher:
            running = await executing(model, batcher, rows(1))
            abandoned = asyncio.create_task(batcher.submit(rows(2)))
            await wait_until(lambda: batcher.queued_items == 1)
            abandoned.cancel()
            with pytest.raises(asyncio.CancelledError):
                await abandoned
            model.gate.set()
            assert_own_rows(rows(1), await running)
            assert_own_rows(rows(3), await batcher.submit(rows(3)))
        assert model.executed_ids == [1, 3]
        assert statistics.dropped == 1

    asyncio.run(scenario())


def test_a_failing_execution_fails_its_whole_batch_and_the_batcher_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """Callers learn that the batch failed, not the model's own error text (it can name files
    and internals); that goes to the log with its traceback."""
    model = FakeModel()

    async def scenario() -> None:
        async with batcher_for(model, BatchingPolicy(8, max_queue_delay_s=0.05)) as batcher:
            outcomes = await asyncio.gather(batcher.submit(rows(-1)), batcher.submit(rows(2)),
                                            return_exceptions=True)
            for outcome in outcomes:
                assert isinstance(outcome, ModelExecutionError)
                assert "failed on a batch of 2 (incident " in str(outcome)
                assert "the server log has the details" in str(outcome)
                assert "boom" not in str(outcome)
            assert_own_rows(rows(3), await batcher.submit(rows(3)))
        assert model.batch_sizes == [2, 1]

    with caplog.at_level(logging.ERROR, logger="server.batching"):
        asyncio.run(scenario())
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


def test_close_finishes_queued_requests_then_refuses_new_ones() -> None:
    model = FakeModel(held=True)

    async def scenario() -> None:
        batcher = DynamicBatcher(model.execute, BatchingPolicy(4, max_queue_delay_s=LONG))
        try:
            running = await executing(model, batcher, rows(1, 2, 3, 4))
            queued = [asyncio.create_task(batcher.submit(r)) for r in (rows(5), rows(6))]
            await wait_until(lambda: batcher.queued_items == 2)
            closing = asyncio.create_task(batcher.close())
            await asyncio.sleep(0.02)
            assert not closing.done()  # the held batch and two queued requests remain
            with pytest.raises(ShuttingDownError, match="being unloaded"):
                await batcher.submit(rows(7))
            model.gate.set()
            async with asyncio.timeout(LONG / 2):
                await closing  # closing also cuts the half-full batch without the long delay
            assert_own_rows(rows(1, 2, 3, 4), running.result())
            for task, request in zip(queued, (rows(5), rows(6)), strict=True):
                assert_own_rows(request, task.result())
            with pytest.raises(ShuttingDownError):
                await batcher.submit(rows(8))
        finally:
            model.gate.set()
            await batcher.close()
        assert model.executed_ids == [1, 2, 3, 4, 5, 6]

    asyncio.run(scenario())


def test_the_observer_hears_of_executions_batch_sizes_and_queue_time() -> None:
    model = FakeModel(held=True)
    statistics = ModelStatistics()
    held_s = 0.05

    async def scenario() -> None:
        async with batcher_for(model, BatchingPolicy(8, max_queue_delay_s=0.001),
                               statistics) as batcher:
            running = await executing(model, batcher, rows(1))
            queued = [asyncio.create_task(batcher.submit(r)) for r in (rows(2), rows(3, 4))]
            await wait_until(lambda: batcher.queued_items == 3)
            await asyncio.sleep(held_s)  # the two queued requests wait for the busy model
            model.gate.set()
            await asyncio.gather(running, *queued)

    asyncio.run(scenario())
    assert model.batch_sizes == [1, 3]
    assert statistics.execution_count == 2
    assert sorted(statistics.batches) == [1, 3]
    assert statistics.batches[3].compute_infer.count == 1
    assert statistics.compute_infer.count == statistics.compute_output.count == 2
    assert statistics.queue.count == 3
    assert statistics.queue.ns >= 2 * held_s * 1e9
    assert statistics.dropped == 0


@pytest.mark.parametrize(("instances", "concurrent"), [(2, True), (1, False)])
def test_instances_bound_the_executions_that_run_at_once(instances: int,
                                                          concurrent: bool) -> None:
    # Each execution waits for a second one at a barrier: with one instance it never comes.
    barrier = threading.Barrier(2, timeout=LONG / 2 if concurrent else 0.3)
    model = FakeModel(barrier=barrier)

    async def scenario() -> None:
        policy = BatchingPolicy(1, max_queue_delay_s=0, instances=instances)
        async with batcher_for(model, policy) as batcher:
            outcomes = await asyncio.gather(batcher.submit(rows(1)), batcher.submit(rows(2)),
                                            return_exceptions=True)
        if concurrent:
            for request, outcome in zip((rows(1), rows(2)), outcomes, strict=True):
                assert isinstance(outcome, list)
                assert_own_rows(request, outcome)
        else:
            assert all(isinstance(o, ModelExecutionError) for o in outcomes)
        assert model.batch_sizes == [1, 1]

    asyncio.run(scenario())


def test_a_pause_in_arrivals_cuts_the_batch_before_the_full_delay() -> None:
    """Closed-loop callers all queued and nothing more coming: the batch is cut after a quarter
    of the delay without arrivals, instead of waiting out the whole delay."""
    model = FakeModel()

    async def scenario() -> float:
        async with batcher_for(model, BatchingPolicy(64, max_queue_delay_s=1.0)) as batcher:
            started = time.monotonic()
            answers = await asyncio.gather(*(batcher.submit(rows(i)) for i in range(5)))
            for i, answer in enumerate(answers):
                assert_own_rows(rows(i), answer)
            return time.monotonic() - started

    elapsed = asyncio.run(scenario())
    assert model.batch_sizes == [5]
    assert 0.25 <= elapsed < 0.75


def test_requests_arriving_one_at_a_time_run_at_once() -> None:
    """A lone caller waits out the pause once; after a batch of one with nothing queued
    behind it, the next request runs without waiting."""
    model = FakeModel()

    async def scenario() -> float:
        async with batcher_for(model, BatchingPolicy(64, max_queue_delay_s=1.0)) as batcher:
            await batcher.submit(rows(0))  # waits out the 0.25 s pause: nothing is known yet
            started = time.monotonic()
            for i in range(1, 6):
                assert_own_rows(rows(i), await batcher.submit(rows(i)))
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 0.25  # five requests, none of them waited the pause
    assert model.batch_sizes == [1] * 6
