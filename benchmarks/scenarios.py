"""``axon bench`` scenarios: what load to offer, and when an open loop sends each request.

Two kinds of load, as ``--scenarios`` spells them:

- ``CALLERSxIMAGES`` (``64x1``): a closed loop. CALLERS callers each send a request of IMAGES
  images and wait for its answer before sending the next, so the server's speed sets the rate.
  ``@CONNECTIONS`` spreads them over that many HTTP/2 connections (``64x1@64``: one each;
  ``64x1@4``: 4 connections of 16 streams); by default h2load uses up to 8, the python
  generator as many as Axon's clients (``DEFAULT_CONNECTIONS``, 4).
- ``RATE/sxIMAGES`` (``2000/sx1``): an open loop. RATE requests per second are sent on a fixed
  schedule whether or not earlier ones were answered, so the load does not ease off when the
  server slows down, as real independent clients do not.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from axon.errors import AxonError

Mode = Literal["closed", "open"]
DEFAULT_MAX_OUTSTANDING = 10_000
"""Open loop: the most requests in flight at once, unless told otherwise."""
SYNTAX = "CALLERSxIMAGES[@CONNECTIONS] (closed loop, e.g. 64x1 or 64x1@4) or RATE/sxIMAGES " \
    "(open loop, e.g. 2000/sx1)"
_CLOSED = re.compile(r"(\d+)x(\d+)(?:@(\d+))?")
_OPEN = re.compile(r"(\d+(?:\.\d*)?)/sx(\d+)")


class ScenarioError(AxonError, ValueError):
    """A scenario string that follows neither syntax."""


@dataclass(frozen=True)
class Scenario:
    """One load to measure: a closed loop of ``callers`` or an open loop at ``rate``."""

    images: int
    """Images per request."""
    callers: int | None = None
    """Closed loop: callers, each with one request in flight."""
    rate: float | None = None
    """Open loop: requests per second offered."""
    connections: int | None = None
    """Closed loop: HTTP/2 connections the callers share (None: the generator's default)."""

    def __post_init__(self) -> None:
        if (self.callers is None) == (self.rate is None):
            raise ScenarioError("a scenario has either callers (closed loop) or a rate (open)")
        if self.connections is not None and (
                self.callers is None or not 1 <= self.connections <= self.callers
                or self.callers % self.connections):
            raise ScenarioError(f"{self.connections} connections cannot share {self.callers} "
                                "callers evenly")

    @property
    def mode(self) -> Mode:
        return "closed" if self.callers is not None else "open"

    @property
    def label(self) -> str:
        """The scenario as ``--scenarios`` spells it."""
        if self.rate is not None:
            return f"{self.rate:g}/sx{self.images}"
        spread = "" if self.connections is None else f"@{self.connections}"
        return f"{self.callers}x{self.images}{spread}"

    @classmethod
    def parse(cls, text: str) -> Scenario:
        text = text.strip()
        if closed := _CLOSED.fullmatch(text):
            callers, images = int(closed[1]), int(closed[2])
            if callers < 1 or images < 1:
                raise ScenarioError(f"bad scenario {text!r}: callers and images must be at "
                                    "least 1")
            return cls(images, callers=callers,
                       connections=int(closed[3]) if closed[3] else None)
        if opened := _OPEN.fullmatch(text):
            rate, images = float(opened[1]), int(opened[2])
            if rate <= 0 or images < 1:
                raise ScenarioError(f"bad scenario {text!r}: the rate must be positive and "
                                    "images at least 1")
            return cls(images, rate=rate)
        raise ScenarioError(f"bad scenario {text!r}: use {SYNTAX}")


def parse_scenarios(text: str) -> list[Scenario]:
    """A comma-separated list of scenarios, e.g. ``64x1,2000/sx1,16x64``."""
    scenarios = [Scenario.parse(part) for part in text.split(",") if part.strip()]
    if not scenarios:
        raise ScenarioError(f"no scenarios given: use {SYNTAX}")
    return scenarios


@dataclass(frozen=True)
class OpenLoopSchedule:
    """When each request of an open loop is due: constant spacing, request ``i`` at ``i / rate``
    seconds after the start.

    Constant spacing rather than Poisson arrivals: runs repeat exactly and compare cleanly
    between servers. Poisson arrivals come in bursts and would show a higher tail at the same
    rate; constant spacing is the kinder of the two, so read its tail as a lower bound.
    """

    rate: float
    seconds: float

    @property
    def count(self) -> int:
        """Requests in the window (at least one)."""
        return max(1, round(self.rate * self.seconds))

    def due(self, index: int) -> float:
        """Seconds after the start at which request ``index`` is due."""
        return index / self.rate

    @property
    def span(self) -> float:
        """Seconds from the first request due to the last."""
        return self.due(self.count - 1)


def lateness(sent_at: list[float], rate: float) -> list[float]:
    """How late each send was against constant spacing from the first one (seconds; sends are
    taken in time order, early ones count as 0)."""
    ordered = sorted(sent_at)
    first = ordered[0] if ordered else 0.0
    return [max(0.0, at - first - index / rate) for index, at in enumerate(ordered)]


@dataclass(frozen=True)
class H2loadPlan:
    """How h2load offers ``rate`` requests per second: ``--rps`` is per connection.

    Each connection sends on a timer that fires every ``1 / rps`` seconds, but at most every
    10 ms, in a burst of whatever is due. So enough connections (at most 64) keep each one at
    up to 100 requests/s, one request per tick; and the connections start staggered (``-r``
    connections every ``--rate-period``), or their ticks would line up into bursts of one
    request per connection. ``-m`` is the outstanding cap shared out: a connection that reaches
    it holds requests back and sends them late, which bench detects and refuses to report.
    """

    connections: int
    rate_per_connection: float
    streams_per_connection: int
    """``-m``: the most requests one connection keeps in flight."""
    connections_per_period: int
    period_ms: int
    """h2load starts ``connections_per_period`` connections every ``period_ms`` (whole ms)."""

    @classmethod
    def for_rate(cls, rate: float, requests: int, max_outstanding: int) -> H2loadPlan:
        connections = max(1, min(64, requests, math.ceil(rate / 100)))
        per_connection = rate / connections
        tick_ms = 1000 * max(0.01, 1 / per_connection)
        if connections <= tick_ms:
            started, period = 1, max(1, math.floor(tick_ms / connections))
        else:
            started, period = math.ceil(connections / tick_ms), 1
        return cls(connections, per_connection,
                   max(1, math.ceil(max_outstanding / connections)), started, period)

    def flags(self) -> list[str]:
        return ["-c", str(self.connections), f"--rps={self.rate_per_connection:.6g}",
                "-m", str(self.streams_per_connection), "-r", str(self.connections_per_period),
                f"--rate-period={self.period_ms}ms"]
