"""The bulk of the overload benchmark's load: h2load (nghttp2's C HTTP/2 client) sending one
request at a fixed rate for one phase, so that the cores go to the server, not to the load.

Unlike ``axon bench``'s h2load open loop (clients/loadgen.py), a run that falls behind its
schedule is not refused: under overload that is part of what is measured, so when each request
actually went out is kept and reported. h2load sees HTTP status only, not ``grpc-status``: the
python probe that runs beside it says what the calls ended with.
"""

from __future__ import annotations

import struct
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from axon.benchmarks.loadgen import Call
from axon.benchmarks.scenarios import H2loadPlan


@dataclass(frozen=True)
class BulkRun:
    phase: str
    rate: float
    sent_at: npt.NDArray[np.float64]
    """When each request went out, in seconds after the benchmark's start instant."""
    statuses: Counter[str]
    """``HTTP 200`` (whatever the gRPC status) or ``stream failed`` -> requests."""
    late_p99_s: float
    """p99 of how late requests went out against the phase's schedule."""
    error: str | None = None
    """Why h2load failed, if it did (then nothing else is known)."""

    @property
    def sent(self) -> int:
        return len(self.sent_at)


def run_bulk(call: Call, phase: str, *, rate: float, seconds: float, origin: float,
             offset: float, max_outstanding: int) -> BulkRun:
    """``rate`` requests/s for ``seconds``, from ``offset`` seconds after the benchmark's start
    instant ``origin`` (``time.monotonic()``)."""
    count = max(1, round(rate * seconds))
    plan = H2loadPlan.for_rate(rate, count, max_outstanding)
    with tempfile.TemporaryDirectory() as tmp:
        body, log = Path(tmp) / "body", Path(tmp) / "log"
        body.write_bytes(b"\x00" + struct.pack(">I", len(call.body)) + call.body)
        time.sleep(max(0.0, origin + offset - time.monotonic()))
        wall_minus_monotonic = time.time() - time.monotonic()
        completed = subprocess.run(
            ["h2load", "-n", str(count), *plan.flags(), "-d", str(body),
             "-H", "content-type: application/grpc", "-H", "te: trailers",
             "--log-file", str(log), f"http://{call.address}{call.method}"],
            capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            return BulkRun(phase, rate, np.empty(0), Counter(), float("nan"),
                           (completed.stderr or completed.stdout).strip()[-300:])
        rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    # Log rows: start (µs since the epoch), HTTP status (-1: the stream failed), duration (µs).
    sent_at = np.sort(np.array([int(r[0]) / 1e6 for r in rows])) - wall_minus_monotonic - origin
    statuses = Counter("HTTP 200" if int(r[1]) == 200 else
                       "stream failed" if int(r[1]) < 0 else f"HTTP {r[1]}" for r in rows)
    late = sent_at - offset - np.arange(len(sent_at)) / rate
    return BulkRun(phase, rate, sent_at, statuses,
                   float(np.percentile(late, 99)) if len(late) else 0.0)
