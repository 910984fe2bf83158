"""``axon serve --workers N``: one server made of N worker processes sharing its port.

One process serves about one core: Python's gRPC path holds the interpreter lock. The
supervisor starts N workers (server/worker.py) that listen on the same ports -- gRPC's and the
HTTP/REST one -- with ``SO_REUSEPORT`` (the kernel spreads connections over them), and answers
for the group:

- it checks the ports are free first, as a one-process server does, and keeps them reserved (a
  bound socket that never listens), so a restart never finds one taken;
- it reports ready (the announce line; each worker's health and ServerReady) only once every
  worker has loaded every model;
- model statistics, the repository index and ``/metrics`` are every worker's, merged
  (server/group_merge.py); model loads and unloads are prepared in every worker, then committed
  in all of them (server/worker_group.py), one change at a time;
- a worker that dies is started again, after a back-off that grows while it keeps dying
  (logged, counted in ``axon_worker_restarts_total``);
- SIGTERM (or SIGINT) drains every worker with the one-process guarantees, then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from axon.cpus import affinity, worker_cpus
from axon.errors import AxonError
from axon.model_repository import ModelRepository
from axon.server.config import ServerSettings
from axon.server.errors import ServingError, WorkerGroupError
from axon.server.group_merge import (
    cumulative,
    merge_index,
    merge_metrics,
    merge_statistics,
    requests_per_worker,
)
from axon.server.main import announce, http_url
from axon.server.metrics import MetricsEndpoint, serve_metrics
from axon.server.status import status_of
from axon.server.worker import WorkerStart, run_worker
from axon.server.worker_group import (
    ABORT,
    COMMIT,
    FAILED,
    GROUP_READY,
    INDEX,
    LOAD,
    METRICS,
    PING,
    PREPARE_LOAD,
    PREPARE_UNLOAD,
    READY,
    REPLY,
    REQUEST,
    STATISTICS,
    UNLOAD,
)

log = logging.getLogger(__name__)

FIRST_RESTART_DELAY_S = 0.5
LONGEST_RESTART_DELAY_S = 30.0
STEADY_AFTER_S = 60.0
"""A worker that served this long before dying is restarted after the first delay again."""
STOP_MARGIN_S = 15.0
"""How long past the grace period a worker may take to close its models and exit before it is
killed."""
METRICS_TIMEOUT_S = 10.0
WORKER_METRICS_TIMEOUT_S = 3.0
"""How long a scrape waits for each worker's metrics; a worker later than that is shown with
its last answer's, and as unresponsive."""
WORKER_ANSWER_TIMEOUT_S = 10.0
"""How long a statistics or index request waits for each worker: a stuck worker must not hold
its callers until their deadlines."""
WATCH_INTERVAL_S = 5.0
"""How often the supervisor checks that every worker's event loop answers."""
MAX_UNANSWERED = 64
"""Requests a worker may leave unanswered before the next is refused: the pipe to it never
fills, so a stuck worker can never block the supervisor on a send."""


class RestartDelays:
    """How long to wait before starting a worker again: the first delay after a worker that
    had served steadily, doubling up to the longest while it keeps dying young or failing to
    start, so that a crash loop does not burn the CPU its siblings serve with."""

    def __init__(self, first_s: float = FIRST_RESTART_DELAY_S,
                 longest_s: float = LONGEST_RESTART_DELAY_S,
                 steady_after_s: float = STEADY_AFTER_S) -> None:
        self._first_s = first_s
        self._longest_s = longest_s
        self._steady_after_s = steady_after_s
        self._next_s: dict[int, float] = {}

    def after_death(self, index: int, lived_s: float) -> float:
        """The delay before starting worker ``index`` again, after it ran ``lived_s``."""
        if lived_s >= self._steady_after_s:
            self._next_s.pop(index, None)
        return self.after_failed_start(index)

    def after_failed_start(self, index: int) -> float:
        """The delay before the next try, after worker ``index`` failed to start again."""
        delay = self._next_s.get(index, self._first_s)
        self._next_s[index] = min(2 * delay, self._longest_s)
        return delay


def supervise(settings: ServerSettings) -> int:
    """Run the worker group until SIGTERM/SIGINT; return the process exit status."""
    return asyncio.run(Supervisor(settings).run())


def reserve_port(address: str, what: str = "") -> tuple[socket.socket, int]:
    """Check that nothing holds ``address`` (host:port, port 0: any free one) and keep it
    reserved for the workers: a socket bound with SO_REUSEPORT that never listens takes no
    connections, yet keeps every program that does not share ports off it. ``what`` follows
    the address in the error (" (HTTP)"), as a one-process server words it."""
    host, _, port = address.rpartition(":")
    address += what
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise AxonError(f"cannot listen on {address}: {exc.strerror}") from exc
    with socket.socket(family, kind, proto) as probe:
        # No SO_REUSEPORT on the probe: it fails on a port that another server holds, even
        # one that shares it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError as exc:
            raise AxonError(f"cannot listen on {address}: {exc.strerror or exc}") from exc
        chosen: int = probe.getsockname()[1]
    reservation = socket.socket(family, kind, proto)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reservation.bind((where[0], chosen, *where[2:]))
    except OSError as exc:
        reservation.close()
        raise AxonError(f"cannot listen on {address}: {exc.strerror or exc}") from exc
    return reservation, chosen


class WorkerFailedError(AxonError):
    """A worker could not start (its one-line reason) or died while starting."""


@dataclass(eq=False)
class _Worker:
    index: int
    process: BaseProcess
    connection: Connection
    ready: asyncio.Future[int]
    """The model versions it loaded, once it serves; WorkerFailedError if it cannot."""
    exited: asyncio.Future[int | None] = field(default_factory=lambda: asyncio.get_running_loop()
                                                .create_future())
    asks: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    metrics: asyncio.Future[list[Metric]] | None = None
    """Its answer to the latest metrics request, awaited across scrapes while it is late."""
    member: bool = False
    """Takes part in the group's changes and answers (it has loaded the group's models)."""
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(self, settings: ServerSettings) -> None:
        self._settings = settings
        self._count = settings.worker_count
        cpus = affinity() if settings.pin_workers else None
        self._cpus = {index: worker_cpus(index, self._count, cpus or ()) for index in
                      range(self._count)}
        """Each worker's share of the CPUs (None: it runs on any), kept by its restarts."""
        self._instances = settings.batching.instances
        """Worked out here, from every CPU: a worker kept to its share counts only those."""
        self._context = multiprocessing.get_context("spawn")
        self._generation = self._context.RawValue("q", 0)
        self._workers: dict[int, _Worker] = {}
        self._delays = RestartDelays()
        self._serving: list[str] = []
        """The models the group serves: what a restarted worker loads."""
        self._failed: dict[str, str] = {}
        """Models the group could not load (since last loaded or unloaded), and why."""
        self._operations = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._address = settings.address
        self._http_address = settings.http_address
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self._registry = CollectorRegistry()
        self._restarts = Counter("axon_worker_restarts", "Worker processes started again after "
                                 "one died", ["worker"], registry=self._registry)
        for index in range(self._count):  # 0 from the start: rate() needs a first sample
            self._restarts.labels(str(index))
        self._registry.register(_GroupCollector(self))
        self._last_metrics: dict[int, list[Metric]] = {}
        """Each worker's metrics at the last scrape."""
        self._retired: dict[int, list[Metric]] = {}
        """The counters and histograms of the workers that died, per worker number: added to
        the live ones so that the group's never go down."""

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._changes = asyncio.Lock()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, stop.set)
        reservations = [reserve_port(self._settings.address)]
        port = reservations[0][1]
        host = self._settings.address.rpartition(":")[0]
        self._address = f"{host}:{port}"
        endpoint: MetricsEndpoint | None = None
        try:
            http = self._reserve_http(reservations, port)
            if self._settings.metrics:
                endpoint = self._serve_metrics()
            await self._start_group(stop)
            if stop.is_set():
                log.info("stopped while starting")
            else:
                log.info("%d workers serve %s (pids %s)", self._count, self._address,
                         ", ".join(str(w.process.pid) for w in self._workers.values()))
                announce(self._versions, self._settings.address, port, endpoint, http)
                if self._settings.worker_timeout_seconds > 0:
                    self._spawn_task(self._watch(self._settings.worker_timeout_seconds))
                await stop.wait()
                log.info("stopping %d workers: in-flight requests get up to %.1f s",
                         len(self._workers), self._settings.grace_seconds)
        finally:
            self._stopping = True
            await self._stop_workers(self._settings.grace_seconds)
            if endpoint is not None:
                await asyncio.to_thread(endpoint.close)
            for reservation, _ in reservations:
                reservation.close()
        log.info("stopped")
        return 0

    def _reserve_http(self, reservations: list[tuple[socket.socket, int]],
                      grpc_port: int) -> str | None:
        """Reserve the HTTP/REST port as the gRPC one is (the workers get its number, port 0
        chosen here once for all); its URL, or None when the settings turn HTTP off."""
        settings = self._settings
        if not settings.serves_http:
            return None
        host, _, wanted = settings.http_address.rpartition(":")
        if wanted.isdigit() and int(wanted) == grpc_port:
            # The probe cannot see it: the gRPC port is only reserved, nobody listens yet.
            raise AxonError(f"cannot listen on {settings.http_address} (HTTP): Address "
                            "already in use (by the gRPC port)")
        reservations.append(reserve_port(settings.http_address, " (HTTP)"))
        port = reservations[-1][1]
        self._http_address = f"{host}:{port}"
        return http_url(host.strip("[]"), port, tls=settings.tls_cert is not None)

    async def _start_group(self, stop: asyncio.Event) -> None:
        settings = self._settings
        names = list(settings.models)
        if not names and settings.model_repository.is_dir():
            names = ModelRepository(settings.model_repository).model_names()
        self._serving = names
        log.info("starting %d worker processes, each running %d execution(s) per model at "
                 "once%s", self._count, self._instances, _shares(self._cpus))
        for index in range(self._count):
            self._workers[index] = self._spawn(index, names, bind_first=True)
        ready: asyncio.Future[list[int]] = asyncio.gather(
            *(w.ready for w in self._workers.values()))
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        await asyncio.wait([ready, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not ready.done():
            ready.cancel()
            ready.add_done_callback(lambda f: f.cancelled() or f.exception())
            return
        counts = ready.result()  # raises the first WorkerFailedError
        self._versions = counts[0]
        for worker in self._workers.values():
            if not self._admit(worker):
                # Loaded, then died while the others loaded (out of memory, say): its slot
                # starts again, as any dead worker's does; the group serves meanwhile.
                delay = self._delays.after_failed_start(worker.index)
                log.error("worker %d died after loading its models; starting it again in "
                          "%.1f s", worker.index, delay)
                self._restarts.labels(str(worker.index)).inc()
                self._spawn_task(self._restart(worker.index, delay))

    def _admit(self, worker: _Worker) -> bool:
        """Make a worker that said READY a member of the group; False if it has died since
        (its death was not handled as a member's: nobody else starts its slot again)."""
        if worker.exited.done():
            return False
        worker.member = True
        try:
            self._send(worker, GROUP_READY)
        except WorkerGroupError:
            worker.member = False
            return False
        return True

    # The workers' processes.

    def _spawn(self, index: int, models: list[str], *, bind_first: bool) -> _Worker:
        ours, theirs = self._context.Pipe()
        ports = {"address": self._address, "http_address": self._http_address}
        start = WorkerStart(index, self._settings.model_dump() | ports
                            | {"instances": self._instances},
                            theirs, self._generation, tuple(models), bind_first,
                            logging.getLogger().getEffectiveLevel(), dict(self._failed),
                            self._cpus[index])
        process = self._context.Process(target=run_worker, args=(start,),
                                        name=f"axon worker {index}")
        process.start()
        theirs.close()
        worker = _Worker(index, process, ours, self._loop.create_future())
        self._loop.add_reader(ours.fileno(), self._receive, worker)
        self._loop.add_reader(process.sentinel, self._exited, worker)
        return worker

    def _exited(self, worker: _Worker) -> None:
        self._loop.remove_reader(worker.process.sentinel)
        worker.process.join(1)  # its pipe closes a moment before it can be reaped
        status = worker.process.exitcode
        self._receive(worker)  # what it said last (FAILED) comes before its death
        if not worker.connection.closed:
            self._loop.remove_reader(worker.connection.fileno())
            worker.connection.close()
        gone = WorkerGroupError(f"exited ({_status(status)})", grpc.StatusCode.UNAVAILABLE)
        for ask in worker.asks.values():
            if not ask.done():
                ask.set_exception(gone)
        if not worker.ready.done():
            worker.ready.set_exception(WorkerFailedError(
                f"worker {worker.index} exited with status {_status(status)} while starting"))
        worker.exited.set_result(status)
        if self._stopping or not worker.member or self._workers.get(worker.index) is not worker:
            return
        worker.member = False
        self._retire_metrics(worker.index)
        lived = time.monotonic() - worker.started
        delay = self._delays.after_death(worker.index, lived)
        log.error("worker %d (pid %s) died (%s) after %.0f s; starting it again in %.1f s",
                  worker.index, worker.process.pid, _status(status), lived, delay)
        self._restarts.labels(str(worker.index)).inc()
        self._spawn_task(self._restart(worker.index, delay))

    async def _restart(self, index: int, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._changes:
            if self._stopping:
                return
            try:
                # Binds its port only once its models are in: it never takes a call it cannot
                # answer.
                worker = self._workers[index] = self._spawn(index, self._serving,
                                                            bind_first=False)
                await worker.ready
                if not self._admit(worker):
                    raise WorkerFailedError(f"worker {index} died right after loading its "
                                            "models")
            except Exception as failure:
                # WorkerFailedError, or no process to start (out of memory, out of pids): a
                # slot given up on would be a worker lost for good, so it is tried again
                # after a longer pause, as after any failed start.
                if self._stopping:
                    return
                delay = self._delays.after_failed_start(index)
                log.error("worker %d did not start again: %s; next try in %.1f s", index,
                          failure, delay)
                self._restarts.labels(str(index)).inc()
                self._spawn_task(self._restart(index, delay))
                return
            log.info("worker %d (pid %s) serves again", index, worker.process.pid)

    async def _watch(self, timeout: float) -> None:
        """Every few seconds, check that each worker's event loop answers; kill one that has
        not for ``timeout`` s (it is started again, as if it had died). Alive but stuck, it
        would keep the connections the kernel gives it, and their calls, for ever."""
        while not self._stopping:
            await asyncio.sleep(WATCH_INTERVAL_S)
            members = [w for w in self._workers.values() if w.member]
            await asyncio.gather(*(self._check(w, timeout) for w in members))

    async def _check(self, worker: _Worker, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._ask(worker, PING), timeout)
        except TimeoutError:
            if worker.member and not worker.exited.done() and not self._stopping:
                log.error("worker %d (pid %s) has not answered for %g s; killing it",
                          worker.index, worker.process.pid, timeout)
                worker.process.kill()
        except WorkerGroupError:  # died meanwhile, or too many requests unanswered: next round
            return

    async def _stop_workers(self, grace: float) -> None:
        """SIGTERM every worker (each drains as a one-process server does); kill those still
        running past the grace period and the margin."""
        workers = list(self._workers.values())
        for worker in workers:
            if not worker.exited.done():
                worker.process.terminate()
        pending = [w.exited for w in workers if not w.exited.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace + STOP_MARGIN_S)
            for worker in workers:
                if worker.exited in late:
                    log.error("worker %d did not stop in time; killing it", worker.index)
                    worker.process.kill()
            if late:
                await asyncio.wait(late, timeout=5)
        for worker in workers:
            status = worker.process.exitcode
            if status not in (0, None) and worker.member:
                log.warning("worker %d exited with status %s", worker.index, _status(status))
        for task in self._tasks:
            task.cancel()

    # Messages.

    def _receive(self, worker: _Worker) -> None:
        connection = worker.connection
        while not connection.closed:
            try:
                if not connection.poll():
                    return
                message = connection.recv()
            except (EOFError, OSError):
                self._loop.remove_reader(connection.fileno())
                connection.close()
                return
            self._handle(worker, message)

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == REPLY:
            _, operation, error, result = message
            ask = worker.asks.pop(operation, None)
            if ask is not None and not ask.done():
                if error is None:
                    ask.set_result(result)
                else:
                    ask.set_exception(WorkerGroupError.from_wire(error))
        elif kind == REQUEST:
            _, request, what, *arguments = message
            self._spawn_task(self._answer(worker, request, what, arguments))
        elif kind == READY and not worker.ready.done():
            worker.ready.set_result(message[1])
        elif kind == FAILED and not worker.ready.done():
            worker.ready.set_exception(WorkerFailedError(message[1]))

    def _send(self, worker: _Worker, *message: object) -> None:
        if worker.connection.closed:
            raise WorkerGroupError(f"worker {worker.index} stopped",
                                   grpc.StatusCode.UNAVAILABLE)
        try:
            worker.connection.send(message)
        except OSError as exc:
            raise WorkerGroupError(f"worker {worker.index} stopped",
                                   grpc.StatusCode.UNAVAILABLE) from exc

    async def _ask(self, worker: _Worker, kind: str, *arguments: object) -> Any:
        if len(worker.asks) >= MAX_UNANSWERED:
            raise WorkerGroupError(f"worker {worker.index} is not answering ({MAX_UNANSWERED} "
                                   "requests to it unanswered)", grpc.StatusCode.UNAVAILABLE)
        operation = next(self._operations)
        answer: asyncio.Future[Any] = self._loop.create_future()
        worker.asks[operation] = answer
        try:
            self._send(worker, kind, operation, *arguments)
            return await answer
        finally:
            worker.asks.pop(operation, None)

    async def _answer(self, worker: _Worker, request: int, what: str,
                      arguments: list[Any]) -> None:
        """Do what a worker asked for the group; reply to it."""
        try:
            if what == LOAD:
                result: object = await self.change(PREPARE_LOAD, arguments[0])
            elif what == UNLOAD:
                result = await self.change(PREPARE_UNLOAD, arguments[0])
            elif what == STATISTICS:
                result = merge_statistics([answer for _, answer in await self._ask_members(
                    STATISTICS, *arguments)]).SerializeToString()
            elif what == INDEX:
                result = merge_index(await self._ask_members(INDEX))
            else:
                raise WorkerGroupError(f"unknown request {what!r}")
            error = None
        except Exception as exc:  # any error: the asking worker's caller waits for a reply
            code, message = status_of(exc, f"the supervisor: {what}")
            result, error = None, (code.name, message)
        # It may have died meanwhile; its caller's call failed with it.
        with contextlib.suppress(WorkerGroupError):
            self._send(worker, REPLY, request, error, result)

    async def _ask_members(self, kind: str, *arguments: object) -> list[tuple[int, Any]]:
        """Every member's number and answer to ``kind``; those that die meanwhile are left out
        (what they counted died with them), an error any other gives is raised."""
        members = [w for w in self._workers.values() if w.member]
        answers = await asyncio.gather(*(asyncio.wait_for(
            self._ask(w, kind, *arguments), WORKER_ANSWER_TIMEOUT_S) for w in members),
            return_exceptions=True)
        for worker, answer in zip(members, answers, strict=True):
            if isinstance(answer, TimeoutError) and not worker.exited.done():
                raise WorkerGroupError(f"worker {worker.index} did not answer in "
                                       f"{WORKER_ANSWER_TIMEOUT_S:g} s",
                                       grpc.StatusCode.UNAVAILABLE)
            if isinstance(answer, BaseException) and not worker.exited.done():
                raise answer
        results = [(w.index, a) for w, a in zip(members, answers, strict=True)
                   if not isinstance(a, BaseException)]
        if members and not results:
            raise WorkerGroupError("no worker answered", grpc.StatusCode.UNAVAILABLE)
        return results

    async def change(self, prepare: str, name: str) -> list[int]:
        """Load (``PREPARE_LOAD``) or unload (``PREPARE_UNLOAD``) ``name`` in every worker:
        all prepare, then all commit, or, when any cannot, none does and the caller gets its
        error. Returns the versions now served."""
        async with self._changes:
            members = [w for w in self._workers.values() if w.member]
            if not members:
                # Before the group is ready, or while every worker starts again: applied to
                # no worker, a change would answer OK and change nothing, and the workers
                # started next would disagree with the ones serving.
                raise WorkerGroupError("no worker process serves yet (the server is starting, "
                                       "or its workers are starting again); try again once "
                                       "it is ready", grpc.StatusCode.UNAVAILABLE)
            generation = self._generation.value + 1
            answers = await asyncio.gather(
                *(self._ask(w, prepare, name, generation) for w in members),
                return_exceptions=True)
            failed = [(w, a) for w, a in zip(members, answers, strict=True)
                      if isinstance(a, BaseException)]
            if failed:
                error = _group_error(failed, len(members))
                if prepare == PREPARE_LOAD and name not in self._serving:
                    self._failed[name] = str(error)
                await asyncio.gather(*(self._ask(w, ABORT, str(error)) for w, a in zip(
                    members, answers, strict=True) if not isinstance(a, BaseException)),
                    return_exceptions=True)
                raise error
            # From here on every worker serves the change at its next lookup, before the
            # commit message reaches it: once one answers with it, none answers without.
            self._generation.value = generation
            await asyncio.gather(*(self._ask(w, COMMIT) for w in members),
                                 return_exceptions=True)
            self._failed.pop(name, None)
            if prepare == PREPARE_LOAD:
                if name not in self._serving:
                    self._serving.append(name)
            elif name in self._serving:
                self._serving.remove(name)
            selected: list[int] = answers[0] if members else []  # type: ignore[assignment]
            return selected

    # Metrics.

    def _serve_metrics(self) -> MetricsEndpoint:
        try:
            return serve_metrics(self._registry, self._settings.metrics_address)
        except OSError as exc:
            raise AxonError(f"cannot serve metrics on {self._settings.metrics_address}: "
                            f"{exc.strerror or exc}") from exc

    def collect(self) -> list[Metric]:
        """The workers' metrics, merged (called from the metrics endpoint's thread)."""
        future = asyncio.run_coroutine_threadsafe(self._merged_metrics(), self._loop)
        try:
            return future.result(timeout=METRICS_TIMEOUT_S)
        except Exception:  # a scrape must not fail for one worker
            log.warning("the workers did not report their metrics in time")
            return []

    async def _merged_metrics(self) -> list[Metric]:
        members = [w for w in self._workers.values() if w.member]
        for worker in members:
            # One request at a time: a late worker's is awaited again, not sent again.
            if worker.metrics is None or worker.metrics.done():
                worker.metrics = asyncio.ensure_future(self._ask(worker, METRICS))
                worker.metrics.add_done_callback(_retrieved)
        asks = [w.metrics for w in members if w.metrics is not None]
        if asks:
            await asyncio.wait(asks, timeout=WORKER_METRICS_TIMEOUT_S)
        unresponsive = GaugeMetricFamily(
            "axon_worker_unresponsive", "1 while a worker process does not answer the "
            "supervisor in time (a stuck event loop): its counters show its last answer's",
            labels=["worker"])
        for worker in members:
            reply = _answer_of(worker.metrics)
            if reply is not None:
                self._last_metrics[worker.index] = reply
            elif not worker.exited.done():
                log.warning("worker %d did not report its metrics in %g s; its last ones are "
                            "shown", worker.index, WORKER_METRICS_TIMEOUT_S)
            unresponsive.add_metric([str(worker.index)], 0.0 if reply is not None else 1.0)
        replies = [(w.index, self._last_metrics[w.index]) for w in members
                   if w.index in self._last_metrics]
        replies += self._retired.items()
        merged = merge_metrics(replies)
        merged.append(requests_per_worker(replies))
        workers = GaugeMetricFamily("axon_workers", "Worker processes serving (the workers "
                                    "setting; fewer while one is being restarted)")
        workers.add_metric([], float(len(members)))
        merged += [workers, unresponsive]
        return merged

    def _retire_metrics(self, index: int) -> None:
        last = cumulative(self._last_metrics.pop(index, []))
        self._retired[index] = merge_metrics([(index, self._retired.get(index, [])),
                                              (index, last)])

    def _spawn_task(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _GroupCollector(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        yield from self._supervisor.collect()


def _answer_of(future: asyncio.Future[list[Metric]] | None) -> list[Metric] | None:
    """``future``'s result if it has one by now; None while pending, or if it failed."""
    if future is None or not future.done() or future.cancelled() or future.exception():
        return None
    return future.result()


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark ``future``'s error as seen: a late answer's is not worth a warning at exit."""
    if not future.cancelled():
        future.exception()


def _group_error(failed: list[tuple[_Worker, BaseException]], members: int) -> ServingError:
    """The error a change gets when some workers could not make it: theirs, said once when
    every worker said the same, else each with its worker's number."""
    messages = [str(error) for _, error in failed]
    code = getattr(failed[0][1], "code", grpc.StatusCode.INTERNAL)
    if len(failed) == members and len(set(messages)) == 1:
        return WorkerGroupError(messages[0], code)
    return WorkerGroupError("; ".join(f"worker {w.index}: {error}" for w, error in failed)
                            + " (no worker changed)", code)


def _status(exitcode: int | None) -> str:
    if exitcode is None:
        return "running"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"


def _shares(cpus: dict[int, frozenset[int] | None]) -> str:
    """How the workers share the CPUs, for the start's log line."""
    if any(share is None for share in cpus.values()):
        return ""
    return "; " + ", ".join(f"worker {index} on {_cpu_list(share)}"
                            for index, share in cpus.items() if share is not None)


def _cpu_list(cpus: frozenset[int]) -> str:
    ordered = sorted(cpus)
    return f"CPU {ordered[0]}" if len(ordered) == 1 else f"CPUs {', '.join(map(str, ordered))}"
