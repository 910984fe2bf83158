"""Pieces the reliability benchmarks share: the server under test and the requests it is sent,
its capacity, its memory, CPU and counters over time, and the per-request records that the load
child processes write.

Every time here is ``time.monotonic()``: on Linux that clock is system-wide, so the parent and
its load child processes agree on one start instant and on each request's due time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt

from axon.benchmarks.bench import machine_ticks, process_cpu_seconds, process_rss_bytes
from axon.benchmarks.loadgen import Call, h2load_available, run_h2load, run_python
from axon.benchmarks.scenarios import Scenario
from axon.benchmarks.target import Target
from axon.client.server_process import ServerProcess, running_server
from axon.client.sync_client import AxonClient

NOT_SENT = -1
"""The code recorded for a request that was due while the outstanding cap was reached."""
CAPACITY_CALLERS = 64
START_DELAY_S = 2.0
"""From launching the load processes to the first request: time for them to connect."""
MIB = 1024 * 1024
_SAMPLE = re.compile(r'^axon_requests_total\{([^}]*)\} (\S+)$', re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def code_name(code: int) -> str:
    """The name of a recorded status code (``grpc.StatusCode`` value, or NOT_SENT)."""
    if code == NOT_SENT:
        return "NOT_SENT"
    return next(c.name for c in grpc.StatusCode if c.value[0] == code)


def machine_cpu_seconds() -> tuple[float, float, float]:
    """(busy, total, steal) CPU seconds of the whole machine, all cores, since boot: see
    ``bench.machine_ticks``."""
    busy, steal, total = machine_ticks()
    ticks = os.sysconf("SC_CLK_TCK")
    return busy / ticks, total / ticks, steal / ticks


def describe_target(client: AxonClient, model: str, server_pid: int,
                    version: str = "") -> Target:
    """The served ``model`` as ``axon bench`` sees it. ``version`` "" makes every request ask
    for the latest version, so the load follows a reload to a new version."""
    description = max((m for m in client.models() if m.name == model),
                      key=lambda m: int(m.version))
    metadata = client.model_metadata(model, description.version)
    return Target(client, model, version, tuple(metadata.inputs[0].shape[1:]),
                  (description.image_height, description.image_width,
                   description.image_channels), server_pid)


@contextmanager
def served_target(repository: Path, log_path: Path, model: str,
                  *flags: str) -> Iterator[tuple[ServerProcess, Target]]:
    """A real server on ``repository`` serving ``model`` (and given ``flags``), ready for load,
    with the model as ``describe_target`` sees it; ``target.client`` talks to that server."""
    with running_server(repository, log_path, "--models", model, *flags) as server, \
            AxonClient(server.address) as client:
        client.wait_ready()
        yield server, describe_target(client, model, server.process.pid)


def pick_generator(name: str) -> str:
    """``auto``: h2load where installed (a C client, so the cores go to the server), else the
    python generator."""
    if name == "auto":
        return "h2load" if h2load_available() else "python"
    if name == "h2load" and not h2load_available():
        raise SystemExit("h2load is not installed (Debian: nghttp2-client); use --generator "
                         "python")
    return name


def measure_capacity(call: Call, generator: str, seconds: float) -> float:
    """Requests/s answered in a closed loop of ``CAPACITY_CALLERS`` single-image callers (after
    a 1 s warm-up)."""
    run = run_h2load if generator == "h2load" else run_python
    scenario = Scenario(1, callers=CAPACITY_CALLERS)
    run(call, scenario, 1.0)
    return run(call, scenario, seconds).requests_per_second


def scrape_codes(metrics_port: int) -> Counter[tuple[str, str]]:
    """The server's own count of answered requests: (method, code) -> requests, all models."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        text = page.read().decode()
    counts: Counter[tuple[str, str]] = Counter()
    for labels, value in _SAMPLE.findall(text):
        named = dict(_LABEL.findall(labels))
        counts[named["method"], named["code"]] += round(float(value))
    return counts


@dataclass(frozen=True)
class Sample:
    at: float
    """Seconds since the run's start instant."""
    rss: int
    cpu_seconds: float
    """The server's utime + stime so far."""
    codes: Counter[tuple[str, str]]
    """The server's request counters (empty without a metrics port)."""
    machine: tuple[float, float, float]
    """``machine_cpu_seconds()``: other work on the box shows here, not in the server's CPU."""

    def machine_busy(self, earlier: Sample) -> float:
        """Share of the machine's cores busy (everything on it) since ``earlier``."""
        return self._share(0, earlier)

    def machine_stolen(self, earlier: Sample) -> float:
        """Share of the machine's CPU time its host took (steal) since ``earlier``: figures
        from a window the host stole much of say little about Axon."""
        return self._share(2, earlier)

    def _share(self, field: int, earlier: Sample) -> float:
        total = self.machine[1] - earlier.machine[1]
        return (self.machine[field] - earlier.machine[field]) / total if total else 0.0


@dataclass
class Watcher:
    """Samples the server every ``interval`` seconds, on a grid from ``start``, in a thread."""

    pid: int
    start: float
    interval: float
    metrics_port: int | None = None
    on_sample: Callable[[Sample], None] | None = None
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(max(0.0, self.start + tick * self.interval
                                      - time.monotonic())):
            codes = scrape_codes(self.metrics_port) if self.metrics_port else Counter()
            sample = Sample(time.monotonic() - self.start, process_rss_bytes(self.pid),
                            process_cpu_seconds(self.pid), codes, machine_cpu_seconds())
            self.samples.append(sample)
            if self.on_sample is not None:
                self.on_sample(sample)
            tick += 1


@dataclass(frozen=True)
class Records:
    """One row per request a load child process was due to send."""

    due: npt.NDArray[np.float64]
    """Seconds after the run's start instant at which it was due."""
    lag: npt.NDArray[np.float64]
    """Seconds it went out late (NaN: not sent)."""
    latency: npt.NDArray[np.float64]
    """Seconds from its due time to its answer (NaN: not sent)."""
    code: npt.NDArray[np.int64]
    """``grpc.StatusCode`` value (0: OK), or NOT_SENT."""

    def save(self, path: Path) -> None:
        np.savez(path, due=self.due, lag=self.lag, latency=self.latency, code=self.code)

    @classmethod
    def load(cls, path: Path) -> Records:
        with np.load(path) as data:
            return cls(data["due"], data["lag"], data["latency"], data["code"])

    @classmethod
    def concat(cls, parts: Sequence[Records]) -> Records:
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("due", "lag", "latency", "code")))

    def between(self, start: float, stop: float) -> Records:
        """The requests due in [start, stop)."""
        keep = (self.due >= start) & (self.due < stop)
        return Records(self.due[keep], self.lag[keep], self.latency[keep], self.code[keep])

    def ok_latency(self) -> npt.NDArray[np.float64]:
        answered: npt.NDArray[np.float64] = self.latency[self.code == 0]
        return answered

    def errors(self) -> Counter[str]:
        return Counter(code_name(int(c)) for c in self.code[self.code != 0])


def ms(values: npt.NDArray[np.float64], q: float) -> float:
    """Percentile ``q`` of ``values`` (seconds) in milliseconds; NaN when empty."""
    return float(np.percentile(values, q)) * 1000 if len(values) else float("nan")


def child_command(module: str, *args: str) -> list[str]:
    """``python -m axon.benchmarks.MODULE ARGS``, on this interpreter."""
    return [sys.executable, "-m", f"axon.benchmarks.{module}", *args]


def phased_load_child(call: Call, tmp: Path, name: str, phases: str, start: float,
                      *options: str) -> tuple[subprocess.Popen[bytes], Path]:
    """A ``phased_load`` child process sending ``call`` on the schedule ``phases``
    (``RATE:SECONDS,...``) from the instant ``start``; it and the file it records to.
    ``name`` names its files in ``tmp``."""
    body, out = tmp / f"{name}.body", tmp / f"{name}.npz"
    body.write_bytes(call.body)
    return subprocess.Popen(child_command(
        "phased_load", call.address, call.method, str(body), str(out), "--phases", phases,
        "--start", repr(start), *options)), out


def wait_for_children(children: Iterable[subprocess.Popen[bytes]]) -> None:
    """Wait for every load child process; stop the benchmark if one failed."""
    for child in children:
        if child.wait() != 0:
            raise SystemExit(f"a load process failed with status {child.returncode}")
