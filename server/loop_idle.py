"""Whether the event loop has anything else to do: the batcher's signal to stop waiting.

A batch should grow while more requests are on their way and be run the moment none are. Wall
clock timers guess at that (and cost a timer and a wake-up per batch); the event loop knows it.
``LoopTicker`` runs one callback per loop iteration while some batcher is waiting for a
decision, and tells each whether the loop was idle then: no callback ready to run and no I/O
event returned by the iteration's poll. An idle loop means every request that reached the
server is queued or answered, so waiting longer would only add latency; a busy loop means more
calls are being taken in, and they can join the batch.

Reads ``loop._ready``, the ready queue of CPython's own event loops (3.11 to 3.13). On a loop
without one (uvloop, say) every tick reports idle: batches are then cut as soon as the model is
free, as Triton's dynamic batcher does with no queue delay.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sized
from typing import Protocol

log = logging.getLogger(__name__)


class Waiter(Protocol):
    def decide(self, loop_idle: bool) -> bool:
        """Called once per tick; True when it needs no more ticks."""

    def decision_failed(self, exc: Exception) -> None:
        """Called instead of the next tick when ``decide`` raised ``exc``: what waited for a
        decision must not wait on (logging the fault is the waiter's)."""


class LoopTicker:
    """Ticks once per event-loop iteration while anyone waits; one per loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        ready = getattr(loop, "_ready", None)
        self._ready: Sized | None = ready if isinstance(ready, Sized) else None
        self._waiting: dict[Waiter, None] = {}  # insertion-ordered set
        self._scheduled = False

    def idle(self) -> bool:
        """Whether nothing else is ready to run on the loop at this moment."""
        return self._ready is None or not self._ready

    def wait(self, waiter: Waiter) -> None:
        """Call ``waiter.decide`` on each coming iteration until it returns True."""
        self._waiting[waiter] = None
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._scheduled = False
        # Read before deciding: a decision that runs a batch makes work of its own.
        idle = self.idle()
        for waiter in list(self._waiting):
            try:
                done = waiter.decide(idle)
            except Exception as exc:
                # One model's fault must not stall the batches of the others on this loop.
                # Not asked again (a fault that repeats would spin the loop): its next
                # request asks again.
                done = True
                try:
                    waiter.decision_failed(exc)
                except Exception:
                    log.exception("a batcher failed to decide whether to run a batch, then "
                                  "to fail the requests it held")
            if done:
                self._waiting.pop(waiter, None)
        if self._waiting and not self._scheduled:
            self._schedule()


_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopTicker] = \
    weakref.WeakKeyDictionary()


def ticker_for(loop: asyncio.AbstractEventLoop) -> LoopTicker:
    """The one ticker of ``loop`` (every batcher on a loop shares it, so that their ticks do
    not make each other's loop look busy)."""
    ticker = _tickers.get(loop)
    if ticker is None:
        ticker = _tickers[loop] = LoopTicker(loop)
    return ticker
