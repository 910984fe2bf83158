"""Load generators: two implementations of one contract, ``run(call, scenario, seconds, ...) ->
LoadResult``, each for closed loops (callers) and open loops (a fixed rate):

- ``python``: grpc.aio in a child process (what a Python service calling Axon costs; see
  clients/aio_load.py). It sees every call's gRPC status;
- ``h2load``: nghttp2's C HTTP/2 load generator (Debian ``nghttp2-client``), which drives unary
  gRPC for a fraction of the CPU, leaving the cores to the server. It sees HTTP status only,
  not ``grpc-status``: ``axon bench`` checks the server's own counters instead. With ``--h1`` it
  drives the HTTP/REST port (HTTP/1.1, a connection per caller).

The python generator drives the REST port with aiohttp's client (clients/aio_http_load.py).

Both send one serialized request, unchanged, to one method path, so they serve any unary API.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from axon.benchmarks.scenarios import (
    DEFAULT_MAX_OUTSTANDING,
    H2loadPlan,
    OpenLoopSchedule,
    Scenario,
    lateness,
)
from axon.client.common import DEFAULT_CONNECTIONS
from axon.errors import AxonError

H2LOAD_LATE_SHARE = 0.01
"""An h2load open loop is refused when more than this share of its requests went out late."""


class LoadError(AxonError):
    """The load could not be generated, or did not do what it was meant to."""


@dataclass(frozen=True)
class Call:
    """One unary call to repeat: where, which method (``/package.Service/Method``), and its
    serialized request -- or, over HTTP, a POST of ``body`` to the path ``method``."""

    address: str
    method: str
    body: bytes
    security_flags: tuple[str, ...] = ()
    """``axon bench``'s TLS and token flags as given, for the python generator to connect
    the same way (a token in AXON_TOKEN reaches it through the environment)."""
    http: bool = False
    """An HTTP/1.1 request (the REST binding) instead of a gRPC call."""
    headers: tuple[tuple[str, str], ...] = ()
    """HTTP: the request's headers."""


@dataclass(frozen=True)
class LoadResult:
    sent: int
    succeeded: int
    """Calls answered OK, as far as the generator can tell (h2load: HTTP 200)."""
    seconds: float
    """Closed loop: the run. Open loop: from the first send to the last answer, or to the end
    of the schedule if that is later."""
    latencies_ms: npt.NDArray[np.float64]
    """Of the calls answered OK; in an open loop, from the time each was due to be sent."""
    generator_cpu_seconds: float
    errors_by_code: dict[str, int] = field(default_factory=dict)
    """gRPC status names (python) or ``HTTP <status>`` (h2load) -> calls."""
    not_sent: int = 0
    """Open loop: requests due while ``max_outstanding`` were in flight, dropped unsent."""
    send_lag_p99_ms: float | None = None
    """Open loop: how late the generator sent its requests against the schedule (p99)."""

    @property
    def errors(self) -> int:
        return sum(self.errors_by_code.values())

    @property
    def requests_per_second(self) -> float:
        """Answered OK per second: in an open loop, the achieved rate."""
        return self.succeeded / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else 0.0


H2LOAD_THREADS_ENV = "AXON_BENCH_H2LOAD_THREADS"
"""h2load's threads in a closed loop (default 1): on 2 cores every core h2load takes is the
server's; on many cores, several workers may answer faster than one h2load thread can ask."""


def h2load_available() -> bool:
    return shutil.which("h2load") is not None


def run_h2load(call: Call, scenario: Scenario, seconds: float, *,
               max_outstanding: int = DEFAULT_MAX_OUTSTANDING) -> LoadResult:
    """A closed loop of ``scenario.callers`` streams over up to 8 connections for ``seconds``,
    or an open loop (``--rps``) of ``scenario.rate`` requests/s for ``seconds``."""
    if call.security_flags or os.environ.get("AXON_TOKEN"):
        raise LoadError("h2load here speaks plain HTTP/2 without tokens: load a server with "
                        "TLS or tokens with --generators python")
    if scenario.rate is not None:
        return _h2load_open(call, OpenLoopSchedule(scenario.rate, seconds), max_outstanding)
    rows, cpu = _h2load(call, closed_loop_flags(call, scenario, seconds))
    return LoadResult(len(rows.status), int((rows.status == 200).sum()), seconds,
                      rows.latency_ms[rows.status == 200], cpu, rows.errors_by_code())


def closed_loop_flags(call: Call, scenario: Scenario, seconds: float) -> list[str]:
    """h2load's flags for ``scenario.callers`` streams over up to 8 connections (or the
    scenario's ``@N``), on ``AXON_BENCH_H2LOAD_THREADS`` threads (at most one per connection)."""
    callers = scenario.callers or 1
    # HTTP/1.1 answers one request at a time per connection: a caller each.
    connections = callers if call.http else scenario.connections or min(callers, 8)
    while callers % connections:
        connections -= 1
    return ["-D", f"{max(1, round(seconds * 1000))}ms", "-c", str(connections),
            "-m", str(callers // connections), "-t", str(min(connections, h2load_threads()))]


def h2load_threads() -> int:
    value = os.environ.get(H2LOAD_THREADS_ENV, "1")
    if not value.isdigit() or int(value) < 1:
        raise LoadError(f"{H2LOAD_THREADS_ENV} must be a whole number of threads, at least 1, "
                        f"not {value!r}")
    return int(value)


def _h2load_open(call: Call, schedule: OpenLoopSchedule, max_outstanding: int) -> LoadResult:
    """h2load measures latency from when it actually sent a request. That is when the request
    was due only while no connection is at its stream limit: past it h2load holds requests
    back and sends them late (coordinated omission), so a run that sent late is refused."""
    plan = H2loadPlan.for_rate(schedule.rate, schedule.count, max_outstanding)
    rows, cpu = _h2load(call, ["-n", str(schedule.count), *plan.flags()])
    late = np.array(lateness(rows.start_s.tolist(), schedule.rate))
    tolerance = 1 / plan.rate_per_connection + 0.02  # timer ticks, connection start times
    late_share = float((late > tolerance).mean()) if len(late) else 0.0
    if late_share > H2LOAD_LATE_SHARE:
        raise LoadError(
            f"h2load fell behind the offered {schedule.rate:g} requests/s: {late_share:.1%} of "
            f"its requests went out more than {tolerance * 1000:.0f} ms late, and its latencies "
            "leave that wait out; lower the rate or use --generators python")
    ends = rows.start_s + rows.latency_ms / 1000
    elapsed = max(float(ends.max() - rows.start_s.min()) if len(ends) else 0.0,
                  schedule.count / schedule.rate)
    return LoadResult(len(rows.status), int((rows.status == 200).sum()), elapsed,
                      rows.latency_ms[rows.status == 200], cpu, rows.errors_by_code(),
                      send_lag_p99_ms=float(np.percentile(late, 99)) * 1000 if len(late) else 0.0)


@dataclass(frozen=True)
class _H2loadLog:
    """h2load's ``--log-file``: one row per request."""

    start_s: npt.NDArray[np.float64]
    """When it was sent, in seconds since the epoch."""
    status: npt.NDArray[np.int64]
    """HTTP status; -1 for a failed stream."""
    latency_ms: npt.NDArray[np.float64]

    def errors_by_code(self) -> dict[str, int]:
        return dict(Counter(f"HTTP {s}" if s > 0 else "stream failed"
                            for s in self.status.tolist() if s != 200))


def _h2load(call: Call, flags: list[str]) -> tuple[_H2loadLog, float]:
    """Run h2load with ``flags`` on ``call``; its log and its CPU seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        body_path, log_path = Path(tmp) / "body", Path(tmp) / "log"
        if call.http:
            body_path.write_bytes(call.body)
            protocol = ["--h1", *(f for name, value in call.headers
                                  for f in ("-H", f"{name}: {value}"))]
        else:
            body_path.write_bytes(b"\x00" + struct.pack(">I", len(call.body)) + call.body)
            protocol = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        before = _children_cpu()
        completed = subprocess.run(
            ["h2load", *flags, "-d", str(body_path), *protocol,
             "--log-file", str(log_path), f"http://{call.address}{call.method}"],
            capture_output=True, text=True, check=False)
        cpu = _children_cpu() - before
        if completed.returncode != 0:
            raise LoadError(f"h2load failed: {completed.stderr or completed.stdout}")
        rows = [line.split("\t") for line in log_path.read_text().splitlines() if line]
    return _H2loadLog(np.array([int(r[0]) / 1e6 for r in rows], dtype=np.float64),
                      np.array([int(r[1]) for r in rows], dtype=np.int64),
                      np.array([int(r[2]) / 1000 for r in rows], dtype=np.float64)), cpu


def run_python(call: Call, scenario: Scenario, seconds: float, *,
               max_outstanding: int = DEFAULT_MAX_OUTSTANDING) -> LoadResult:
    """The grpc.aio load generator, in a child process so its CPU is its own."""
    load = ["--callers", str(scenario.callers)] if scenario.rate is None else \
        ["--rate", f"{scenario.rate!r}", "--max-outstanding", str(max_outstanding)]
    module = "aio_http_load" if call.http else "aio_load"
    headers = [f"--header={name}: {value}" for name, value in call.headers]
    connections = scenario.connections or min(DEFAULT_CONNECTIONS, scenario.callers or 64)
    load += ["--connections", str(connections)]
    with tempfile.TemporaryDirectory() as tmp:
        body_path, out_path = Path(tmp) / "body", Path(tmp) / "out.json"
        body_path.write_bytes(call.body)
        before = _children_cpu()
        completed = subprocess.run(
            [sys.executable, "-m", f"axon.benchmarks.{module}", call.address, call.method,
             str(body_path), f"{seconds!r}", str(out_path), *load, *headers,
             *call.security_flags], capture_output=True, text=True, check=False)
        cpu = _children_cpu() - before
        if completed.returncode != 0:
            raise LoadError("the python load generator failed: "
                            + (completed.stderr.strip().splitlines() or ["no output"])[-1])
        result = json.loads(out_path.read_text())
    return LoadResult(result["sent"], result["succeeded"], result["seconds"],
                      np.array(result["latencies_ms"], dtype=np.float64), cpu,
                      result["errors_by_code"], result["not_sent"], result["send_lag_p99_ms"])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
