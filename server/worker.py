"""A worker process of ``axon serve --workers N``: the whole server, sharing its ports.

Started by the supervisor (server/supervisor.py) with multiprocessing's ``spawn`` (a fresh
interpreter: onnxruntime and gRPC do not survive ``fork``). It serves like a one-process server
(server/main.py) but reports to the supervisor, stops on SIGTERM or when the supervisor is
gone, and leaves SIGINT to the supervisor: a Ctrl-C in a terminal reaches the whole process
group, and the supervisor is the one that drains every worker and decides the exit status.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from axon.cpus import keep_to
from axon.server.allocator import keep_freed_memory
from axon.server.app import AxonServer, GroupLink, build_server
from axon.server.config import ServerSettings
from axon.server.worker_group import FAILED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerStart:
    """Everything a worker is started with (pickled by ``spawn``)."""

    worker: int
    settings: dict[str, Any]
    """The server's settings (``model_dump``), its addresses on the group's ports (gRPC and
    HTTP)."""
    connection: Connection
    generation: Any
    models: tuple[str, ...]
    bind_first: bool
    log_level: int
    failed: dict[str, str]
    """Models the group could not load, and why."""
    cpus: frozenset[int] | None = None
    """The CPUs it keeps to (``pin_workers``); None: any."""


def run_worker(start: WorkerStart) -> None:
    """The worker process's entry point; its exit status says how it ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=start.log_level, datefmt="%H:%M:%S",
                        format=f"%(asctime)s %(levelname)-7s worker {start.worker}: "
                        "%(message)s")
    if start.cpus is not None:
        _keep_to(start.cpus)
    keep_freed_memory()
    sys.exit(asyncio.run(_serve(start)))


def _keep_to(cpus: frozenset[int]) -> None:
    """Done before the server starts: every thread started later (gRPC's, onnxruntime's, the
    executors') inherits it, but the image decoders', which run anywhere (server/app.py)."""
    try:
        keep_to(cpus)
    except OSError as error:  # a CPU taken offline since the supervisor looked, say
        log.warning("could not keep to CPUs %s (%s); running on any", sorted(cpus), error)


async def _serve(start: WorkerStart) -> int:
    from axon.server.main import after_start

    settings = ServerSettings.model_construct(**start.settings)
    link = GroupLink(start.worker, start.connection, start.generation, start.models,
                     start.bind_first, start.failed)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        running = await build_server(settings, link)
    except Exception as error:  # the supervisor reports it, once for the group
        start.connection.send((FAILED, _one_line(error)))
        return 1
    after_start()
    assert running.group is not None
    running.group.on_orphaned = stop.set
    await stop.wait()
    await _stop(running, settings.grace_seconds)
    return 0


async def _stop(running: AxonServer, grace: float) -> None:
    log.info("stopping: in-flight requests get up to %.1f s", grace)
    await running.stop(grace)
    log.info("stopped")


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())
