"""The dynamic batcher: merges concurrent requests into model executions.

Requests (each 1..N items, rows of one float32 array) wait in a bounded FIFO queue. A batch is
cut when the queued items reach ``max_batch_size``, when the oldest request has waited
``max_queue_delay``, when no request has arrived for a quarter of that delay, or at once while
requests arrive one at a time (see ``_wait_for_batch``); only whole requests go into a batch.
The batch runs in a worker thread, off the event loop, and each request gets back its own rows
of every output. Requests whose caller cancelled, or whose deadline passed while queued, are
dropped before execution.

It knows nothing of gRPC or onnxruntime: it is given an ``execute(batch) -> outputs`` function.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from server.errors import (
    DeadlineExpiredError,
    InvalidInputError,
    ModelExecutionError,
    QueueFullError,
    ServingError,
    ShuttingDownError,
)

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]
Execute = Callable[[Array], Sequence[Array]]


@dataclass(frozen=True)
class BatchingPolicy:
    max_batch_size: int = 256
    """Most items (images) in one model execution; a larger request is refused."""
    max_queue_delay_s: float = 0.004
    """Longest the oldest queued request waits for the batch to fill."""
    max_queue_items: int = 4096
    """Bound on queued items; a request that would exceed it is refused at once."""
    instances: int = 1
    """Model executions that may run at the same time (worker threads)."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.instances < 1:
            raise ValueError("max_batch_size and instances must be at least 1")
        if self.max_queue_delay_s < 0:
            raise ValueError("max_queue_delay must not be negative")
        if self.max_queue_items < self.max_batch_size:
            raise ValueError(f"max_queue_items ({self.max_queue_items}) must be at least "
                             f"max_batch_size ({self.max_batch_size})")


class BatchObserver(Protocol):
    """Told what the batcher did; implemented by the model's statistics and metrics."""

    def batch_executed(self, size: int, gather_ns: int, infer_ns: int, scatter_ns: int) -> None:
        ...

    def request_dequeued(self, waited_ns: int) -> None:
        ...

    def request_dropped(self, expired: bool) -> None:
        """A queued request was not run: its deadline had passed (``expired``) or its caller
        cancelled."""

    def request_refused(self) -> None:
        """A request was refused because the queue was full."""


class _Request:
    __slots__ = ("deadline", "enqueued_ns", "future", "inputs", "items")

    def __init__(self, inputs: Array, future: asyncio.Future[list[Array]],
                 deadline: float | None) -> None:
        self.inputs = inputs
        self.items = len(inputs)
        self.future = future
        self.deadline = deadline
        self.enqueued_ns = time.monotonic_ns()


class DynamicBatcher:
    """Batches ``submit`` calls of one model; must be used from one event loop."""

    def __init__(self, execute: Execute, policy: BatchingPolicy,
                 observer: BatchObserver | None = None, name: str = "model") -> None:
        self.policy = policy
        self._execute = execute
        self._observer = observer
        self._name = name
        self._queue: deque[_Request] = deque()
        self._queued_items = 0
        self._running = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(policy.instances, thread_name_prefix=f"run-{name}")
        self._closed = False
        self._lone_caller = False

    @property
    def queued_items(self) -> int:
        return self._queued_items

    async def submit(self, inputs: Array, deadline: float | None = None) -> list[Array]:
        """Run ``inputs`` ([N, ...]) as part of a batch; return this request's output rows.

        ``deadline`` is a ``time.monotonic()`` instant after which the request is not run.
        Raises QueueFullError, DeadlineExpiredError, ShuttingDownError, InvalidInputError or
        ModelExecutionError.
        """
        if self._closed:
            raise ShuttingDownError(f"model {self._name} is being unloaded")
        items = len(inputs)
        if not 0 < items <= self.policy.max_batch_size:
            raise InvalidInputError(f"a request must hold 1 to {self.policy.max_batch_size} items "
                                    f"for model {self._name}, got {items}")
        if self._queued_items + items > self.policy.max_queue_items:
            if self._observer is not None:
                self._observer.request_refused()
            raise QueueFullError(f"model {self._name} has {self._queued_items} items queued, the "
                                 f"bound is {self.policy.max_queue_items}; retry later")
        future: asyncio.Future[list[Array]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(inputs, future, deadline))
        self._queued_items += items
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(), name=f"batcher-{self._name}")
                             for _ in range(self.policy.instances)]
        # Wake a worker only when it has something new to do: a first request to time, or a
        # full batch. Waking it on every arrival would cost a loop iteration per request.
        if len(self._queue) == 1 or self._queued_items >= self.policy.max_batch_size:
            self._wakeup.set()
        return await future

    def refuse_new(self) -> None:
        """From now on ``submit`` raises ShuttingDownError; queued requests still run."""
        self._closed = True
        self._wakeup.set()

    async def close(self) -> None:
        """Refuse new requests, finish the queued ones, then stop the workers."""
        self.refuse_new()
        try:
            while self._queue or self._running:
                self._idle.clear()
                await self._idle.wait()
        finally:  # also when cancelled: never leave workers or threads behind
            for worker in self._workers:
                worker.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._executor.shutdown(wait=False)

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._wait_for_batch()
            batch = self._take_batch()
            if batch:
                self._running += 1
                try:
                    await self._run(batch)
                except Exception as exc:  # a bug here must not leave the model without a worker
                    self._fail(batch, exc)
                finally:
                    self._running -= 1
            if not self._queue and not self._running:
                self._idle.set()

    async def _wait_for_batch(self) -> None:
        """Return when a batch should be cut: it is full, the oldest request has waited
        max_queue_delay, or arrivals have paused for a quarter of that delay -- or at once
        while requests come one at a time.

        The pause rule matters under closed-loop load: once every caller's request is queued,
        nothing more will arrive until they are answered, and waiting out the full delay would
        only add it to every call. The lone-caller rule: when the last batch was a single
        request and nothing arrived while it ran, there is nobody to wait for; the first
        request that arrives during an execution turns waiting back on. New arrivals do not
        wake this task; it re-checks when its timer fires.
        """
        if self._lone_caller:
            return
        delay_ns = int(self.policy.max_queue_delay_s * 1e9)
        fire_at_ns = self._queue[0].enqueued_ns + delay_ns
        while self._queue and self._queued_items < self.policy.max_batch_size \
                and not self._closed:
            wake_at_ns = min(fire_at_ns, self._queue[-1].enqueued_ns + delay_ns // 4)
            remaining = (wake_at_ns - time.monotonic_ns()) / 1e9
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                continue

    def _take_batch(self) -> list[_Request]:
        """Pop whole requests, oldest first, up to max_batch_size items; drop dead ones."""
        batch: list[_Request] = []
        items = 0
        now = time.monotonic()
        while self._queue and items + self._queue[0].items <= self.policy.max_batch_size:
            request = self._queue.popleft()
            self._queued_items -= request.items
            expired = request.deadline is not None and request.deadline <= now
            if request.future.done():
                # Cancelled: by its caller, or by gRPC when the deadline passed (which gRPC
                # usually notices before this does).
                self._report_drop(expired)
            elif expired:
                request.future.set_exception(DeadlineExpiredError(
                    f"the deadline passed while the request waited for model {self._name}"))
                self._report_drop(expired)
            else:
                batch.append(request)
                items += request.items
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        dequeued_ns = time.monotonic_ns()
        if self._observer is not None:
            for request in batch:
                self._observer.request_dequeued(dequeued_ns - request.enqueued_ns)
        loop = asyncio.get_running_loop()
        try:
            outputs, gather_ns, infer_ns = await loop.run_in_executor(
                self._executor, self._gather_and_execute, [r.inputs for r in batch])
        except Exception as exc:
            self._fail(batch, exc)
            return
        scatter_start = time.monotonic_ns()
        start = 0
        for request in batch:
            stop = start + request.items
            if not request.future.done():
                request.future.set_result([output[start:stop] for output in outputs])
            start = stop
        self._lone_caller = len(batch) == 1 and not self._queue
        if self._observer is not None:
            self._observer.batch_executed(start, gather_ns, infer_ns,
                                          time.monotonic_ns() - scatter_start)

    def _fail(self, batch: list[_Request], exc: Exception) -> None:
        """Answer every request of ``batch`` with the error (logged unless a ServingError)."""
        items = sum(r.items for r in batch)
        if isinstance(exc, ServingError):
            error: ServingError = exc
        else:
            # The model's own error text can name files and internals: it goes to the log,
            # the callers get the fact and where to look.
            incident = uuid.uuid4().hex[:12]
            log.error("incident %s: model %s failed on a batch of %d", incident, self._name,
                      items, exc_info=exc)
            error = ModelExecutionError(f"model {self._name} failed on a batch of {items} "
                                        f"(incident {incident}); the server log has the details")
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)

    def _gather_and_execute(self, inputs: list[Array]) -> tuple[Sequence[Array], int, int]:
        started = time.monotonic_ns()
        batch = inputs[0] if len(inputs) == 1 else np.concatenate(inputs)
        gathered = time.monotonic_ns()
        outputs = self._execute(batch)
        return outputs, gathered - started, time.monotonic_ns() - gathered

    def _report_drop(self, expired: bool) -> None:
        if self._observer is not None:
            self._observer.request_dropped(expired)
