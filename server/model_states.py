"""What the metrics report of the models at scrape time: states, providers, queue depths."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from axon.server.metrics import Metrics, ModelState, ServedModelState
from axon.server.model_manager import ModelManager

log = logging.getLogger(__name__)

T = TypeVar("T")
_SCRAPE_WAIT_S = 2.0


def watch_models(metrics: Metrics, models: ModelManager,
                 loop: asyncio.AbstractEventLoop) -> None:
    """Let the metrics read model states and queue depths when scraped.

    Scrapes arrive on the metrics server's thread; the manager belongs to the event loop, so
    the snapshot is taken there (a scrape waits at most ``_SCRAPE_WAIT_S`` for it), while the
    repository's folders are listed on the scrape's own thread. A failure leaves those series
    out of one scrape, never fails the scrape (which would read as the server being down).
    """
    def versions() -> list[ModelState]:
        try:
            on_disk = models.on_disk()
        except Exception:  # whatever the folder holds, the scrape goes on
            log.exception("metrics: cannot list the model repository")
            on_disk = {}
        return _on_loop(loop, lambda: snapshot(on_disk), [])

    def snapshot(on_disk: dict[str, list[int]]) -> list[ModelState]:
        loaded = {(m.name, m.version): m for m in models.loaded()}
        states = []
        for entry in models.index(on_disk):
            model = loaded.get((entry.name, entry.version))
            states.append(ModelState(
                entry.name, entry.version, entry.state,
                provider=model.provider if model else "",
                queued_items=model.batcher.queued_items if model else 0,
                queue_capacity=model.batching.max_queue_size if model else 0))
        return states

    def served() -> list[ServedModelState]:
        return [ServedModelState(name, bool(models.loaded(name)))
                for name in models.served_names()]

    metrics.state.versions = versions
    metrics.state.models = lambda: _on_loop(loop, served, [])


def _on_loop(loop: asyncio.AbstractEventLoop, read: Callable[[], T], otherwise: T) -> T:
    """``read()`` run on ``loop``, from another thread; ``otherwise`` if the loop is gone or
    does not get to it in time. On the loop's own thread (a worker of a group collects there
    for its supervisor), ``read()`` at once."""
    if asyncio._get_running_loop() is loop:
        return read()
    result: Future[T] = Future()

    def run() -> None:
        try:
            result.set_result(read())
        except Exception as exc:  # handed to the waiting thread
            result.set_exception(exc)

    try:
        loop.call_soon_threadsafe(run)
    except RuntimeError:  # the loop is closed: the server is stopping
        return otherwise
    try:
        return result.result(timeout=_SCRAPE_WAIT_S)
    except TimeoutError:
        log.warning("metrics: the event loop did not answer a scrape within %.0f s",
                    _SCRAPE_WAIT_S)
        return otherwise
    except Exception:
        log.exception("metrics: reading the model states failed")
        return otherwise
