"""A worker's side of a worker group (``axon serve --workers N``): one server seen from outside.

Every worker serves the same port (SO_REUSEPORT) from the same repository. What must describe
the whole server -- model statistics, the repository index -- and what must change every worker
-- loading and unloading models, reloads found by polling -- goes through the supervisor
(server/supervisor.py), which asks every worker and answers for all. Messages are tuples over
a ``multiprocessing`` pipe, read by the worker's event loop (``add_reader``): the serving path
never waits on them.

A load or unload is two-phase: every worker prepares it (builds and warms the new versions
while the old ones serve), then the supervisor commits it by raising a generation counter in
shared memory (a ``multiprocessing.RawValue``), and tells each worker. A worker applies a
prepared change the moment it sees the counter move -- at its next request lookup, even before
the supervisor's message arrives -- so that once any worker answers with a new version, none
answers with the old one again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import grpc

from axon.server.errors import WorkerGroupError
from axon.server.metrics import Metrics
from axon.server.model_manager import IndexEntry, ModelManager, Prepared
from axon.server.status import status_of

log = logging.getLogger(__name__)

# Messages, supervisor -> worker: (kind, op, ...); worker -> supervisor: (kind, op, ...).
PREPARE_LOAD, PREPARE_UNLOAD, COMMIT, ABORT = "prepare-load", "prepare-unload", "commit", "abort"
STATISTICS, INDEX, METRICS, PING = "statistics", "index", "metrics", "ping"
GROUP_READY, REPLY = "group-ready", "reply"
REQUEST, READY, FAILED = "request", "ready", "failed"
LOAD, UNLOAD = "load", "unload"
"""What a worker asks of the group (REQUEST kinds); STATISTICS and INDEX too."""


class WorkerGroup:
    """A worker's link to its supervisor and siblings."""

    def __init__(self, worker: int, connection: Connection, generation: Any,
                 models: ModelManager, metrics: Metrics | None) -> None:
        """``generation``: the group's shared counter, a ``RawValue("q")``."""
        self.worker = worker
        """This worker's number in the group (0, 1, ...)."""
        self._connection = connection
        self._counter = generation
        self._models = models
        self._metrics = metrics
        self._generation: int = generation.value
        self._pending: tuple[int, Prepared] | None = None
        """A prepared change and the generation that commits it."""
        self._requests = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_group_ready: Callable[[], None] = lambda: None
        self.on_orphaned: Callable[[], None] = lambda: None
        """Called when the supervisor is gone: the worker should stop."""
        models.sync = self.sync

    def start(self, failed: dict[str, str]) -> None:
        """Listen to the supervisor. ``failed``: models the group could not load, and why (a
        restarted worker describes them as its siblings do)."""
        for name, reason in failed.items():
            self._models.load_failed_elsewhere(name, reason)
        asyncio.get_running_loop().add_reader(self._connection.fileno(), self._receive)

    def stop(self) -> None:
        if not self._connection.closed:
            asyncio.get_running_loop().remove_reader(self._connection.fileno())

    def tell(self, *message: object) -> None:
        """Send ``message`` to the supervisor."""
        if self._connection.closed:
            raise WorkerGroupError("the server is stopping", grpc.StatusCode.UNAVAILABLE)
        self._connection.send(message)

    def sync(self) -> None:
        """Apply the prepared change if the supervisor has committed it (called before every
        model lookup: one read of shared memory when nothing changed)."""
        generation: int = self._counter.value
        if generation != self._generation:
            self._generation = generation
            pending, self._pending = self._pending, None
            if pending is not None and pending[0] <= generation:
                self._models.commit(pending[1])

    # What this worker asks of the whole group (its servicers call these).

    async def load(self, name: str) -> list[int]:
        """Load or reload ``name`` in every worker; return the versions now served."""
        result: list[int] = await self._ask(LOAD, name)
        return result

    async def unload(self, name: str) -> None:
        await self._ask(UNLOAD, name)

    async def statistics(self, name: str, version: str) -> bytes:
        """The group's ModelStatisticsResponse, serialized (the supervisor sums the
        workers')."""
        result: bytes = await self._ask(STATISTICS, name, version)
        return result

    async def index(self) -> list[IndexEntry]:
        result: list[IndexEntry] = await self._ask(INDEX)
        return result

    async def _ask(self, kind: str, *arguments: object) -> Any:
        request = next(self._requests)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request] = future
        try:
            self.tell(REQUEST, request, kind, *arguments)
            return await future
        finally:
            self._waiting.pop(request, None)

    # What the supervisor asks of this worker.

    def _receive(self) -> None:
        while self._connection.poll():
            try:
                message = self._connection.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                log.error("worker %d lost its supervisor; stopping", self.worker)
                self.stop()
                self._connection.close()
                for future in self._waiting.values():
                    if not future.done():
                        future.set_exception(WorkerGroupError(
                            "the server is stopping", grpc.StatusCode.UNAVAILABLE))
                self.on_orphaned()
                return
            self._handle(message)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == REPLY:
            _, request, error, result = message
            future = self._waiting.get(request)
            if future is not None and not future.done():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(WorkerGroupError.from_wire(error))
        elif kind == GROUP_READY:
            self.on_group_ready()
        elif kind == PING:  # answered by the loop itself: it turns
            self.tell(REPLY, message[1], None, None)
        elif kind == COMMIT:
            self.sync()
            self.tell(REPLY, message[1], None, None)
        elif kind == ABORT:
            pending, self._pending = self._pending, None
            if pending is not None:
                self._models.discard(pending[1], message[2])
            self.tell(REPLY, message[1], None, None)
        else:
            self.spawn(self._answer(message))

    async def _answer(self, message: tuple[Any, ...]) -> None:
        kind, operation, *arguments = message
        try:
            if kind == PREPARE_LOAD:
                name, generation = arguments
                prepared = await self._models.prepare_load(name)
                self._pending = (generation, prepared)
                result: object = list(prepared.selected)
            elif kind == PREPARE_UNLOAD:
                name, generation = arguments
                self._pending = (generation, self._models.prepare_unload(name))
                result = None
            elif kind == STATISTICS:
                result = self._local_statistics(*arguments)
            elif kind == INDEX:
                result = self._models.index()
            elif kind == METRICS:
                # Collected here, on the loop that owns the counters; the supervisor merges.
                result = [] if self._metrics is None else list(self._metrics.registry.collect())
            else:
                raise ValueError(f"unknown message {kind!r}")
        except Exception as error:  # any error: the supervisor waits for every reply
            # Unanswered, the supervisor would wait for this worker for ever, holding the
            # group's change lock: every later load, unload and restart would wedge behind it.
            code, said = status_of(error, f"worker {self.worker}: {kind}")
            self.tell(REPLY, operation, (code.name, said), None)
            return
        self.tell(REPLY, operation, None, result)

    def _local_statistics(self, name: str, version: str) -> bytes:
        from axon.protocol import open_inference_pb2 as pb
        from axon.server.data_plane import local_statistics

        return pb.ModelStatisticsResponse(
            model_stats=local_statistics(self._models, name, version)).SerializeToString()

    def spawn(self, work: Any) -> None:
        """Run ``work`` (a coroutine) as a task kept until it ends."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
