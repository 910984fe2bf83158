"""What the overload benchmark prints: per phase rates, errors and latency, memory, and the
recovery time once the overload ends (``benchmarks.overload`` measures; this only reads)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from axon.benchmarks.common import CAPACITY_CALLERS, MIB, Records, Sample, ms
from axon.benchmarks.h2load_bulk import BulkRun
from axon.markdown import LEFT, RIGHT, markdown_table

WINDOW_S = 0.1
RECOVERY_FACTOR = 1.5
RECOVERY_WINDOWS = 10
"""Recovered: this many 100 ms windows in a row (1 s) are normal."""
INFER = "ModelInfer"


@dataclass(frozen=True)
class PhasePlan:
    name: str
    multiple: float
    """Of the measured capacity."""
    rate: float
    """Requests/s offered, probe and bulk together."""
    start: float
    seconds: float

    @property
    def stop(self) -> float:
        return self.start + self.seconds


@dataclass(frozen=True)
class OverloadRun:
    flags: str
    generator: str
    images: int
    """Per request."""
    capacity: float
    phases: list[PhasePlan]
    probe_rate: float | None
    """Requests/s the python probe sent throughout (None: the probe was the whole load)."""
    probe: Records
    bulk: list[BulkRun]
    samples: list[Sample]

    def phase(self, name: str) -> PhasePlan:
        return next(p for p in self.phases if p.name == name)

    def idle_seconds(self) -> float:
        """How long the last sample came after the last phase ended."""
        return self.samples[-1].at - max(p.stop for p in self.phases)

    def sample_at(self, at: float) -> Sample:
        return min(self.samples, key=lambda s: abs(s.at - at))

    def server_codes(self, phase: PhasePlan) -> Counter[str]:
        """ModelInfer answers the server counted in the phase, by status code."""
        before, after = self.sample_at(phase.start).codes, self.sample_at(phase.stop).codes
        return Counter({code: after[key] - before[key] for key in after
                        if (code := key[1]) and key[0] == INFER and after[key] > before[key]})

    def sent(self, phase: PhasePlan) -> int:
        """Requests that went out during the phase (by when they went out, not when due)."""
        went = self.probe.due + self.probe.lag
        bulk = sum(int(np.count_nonzero((b.sent_at >= phase.start) & (b.sent_at < phase.stop)))
                   for b in self.bulk)
        return int(np.count_nonzero((went >= phase.start) & (went < phase.stop))) + bulk


@dataclass(frozen=True)
class Recovery:
    """How the probe's 100 ms windows (by due time) of phase C compare with phase A."""

    threshold_ms: float
    """RECOVERY_FACTOR x phase A's p99."""
    p99_ms: list[float]
    """Each window's p99 (OK answers)."""
    first_s: float | None
    """From the end of the overload to the first normal window: every probe call in it answered
    OK and its p99 at most the threshold (None: none in phase C)."""
    sustained_s: float | None
    """...to the first window from which RECOVERY_WINDOWS windows in a row (1 s) are normal."""


def recovery(run: OverloadRun) -> Recovery:
    base, after = run.phase("A"), run.phase("C")
    threshold = RECOVERY_FACTOR * ms(run.probe.between(base.start, base.stop).ok_latency(), 99)
    edges = np.arange(after.start, after.stop - WINDOW_S / 2, WINDOW_S)
    normal, p99s = [], []
    for edge in edges:
        window = run.probe.between(edge, edge + WINDOW_S)
        p99s.append(ms(window.ok_latency(), 99))
        normal.append(not window.errors() and not p99s[-1] > threshold)
    first = next((float(e - after.start) for e, ok in zip(edges, normal, strict=True) if ok),
                 None)
    sustained = next((float(edges[i] - after.start)
                      for i in range(len(normal) - RECOVERY_WINDOWS + 1)
                      if all(normal[i:i + RECOVERY_WINDOWS])), None)
    return Recovery(threshold, p99s, first, sustained)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _codes(counts: Counter[str], seconds: float | None = None) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{code} {n / seconds:,.0f}/s" if seconds else f"{code} {n:,}"
                     for code, n in counts.most_common())


def phase_table(run: OverloadRun) -> str:
    header = ["phase", "offered req/s", "sent req/s", "OK req/s (server)",
              "other codes (server counted)", "not seen by Axon req/s", "probe calls",
              "probe errors by code", "probe OK p50 / p99 / max ms", "probe errors p50 / p99 ms",
              "probe sent late p99 ms", "server CPU", "machine busy", "host steal",
              "RSS MiB (end)"]
    rows = []
    for phase in run.phases:
        probe = run.probe.between(phase.start, phase.stop)
        server = run.server_codes(phase)
        ok = server.pop("OK", 0)
        unseen = run.sent(phase) - ok - sum(server.values())
        ok_latency = probe.ok_latency()
        failed = probe.latency[(probe.code != 0) & ~np.isnan(probe.latency)]
        first, last = run.sample_at(phase.start), run.sample_at(phase.stop)
        cpu = last.cpu_seconds - first.cpu_seconds
        rows.append([
            f"{phase.name} ({phase.multiple:g}x, {phase.seconds:g} s)", f"{phase.rate:,.0f}",
            f"{run.sent(phase) / phase.seconds:,.0f}", f"{ok / phase.seconds:,.0f}",
            _codes(server, phase.seconds), f"{max(0, unseen) / phase.seconds:,.0f}",
            f"{len(probe.due):,}", _codes(probe.errors()),
            f"{ms(ok_latency, 50):.1f} / {ms(ok_latency, 99):.1f} / {ms(ok_latency, 100):.1f}",
            f"{ms(failed, 50):.1f} / {ms(failed, 99):.1f}",
            f"{ms(probe.lag[~np.isnan(probe.lag)], 99):.1f}", f"{cpu / phase.seconds:.0%}",
            f"{last.machine_busy(first):.0%}", f"{last.machine_stolen(first):.1%}",
            f"{run.sample_at(phase.stop).rss / MIB:.1f}"])
    return markdown_table(header, [LEFT, *[RIGHT] * 6, LEFT, *[RIGHT] * 7], rows)


def memory_line(run: OverloadRun) -> str:
    overload = run.phase("B")
    during = [s.rss for s in run.samples if overload.start <= s.at <= overload.stop + 0.5]
    start, end = run.sample_at(overload.start).rss, run.sample_at(overload.stop).rss
    last = run.samples[-1]
    return (f"memory (server VmRSS, sampled every second): {start / MIB:.1f} MiB when the "
            f"overload began, peak {max(during) / MIB:.1f} MiB during it, {end / MIB:.1f} MiB "
            f"when it ended ({(end - start) / start:+.1%}), {last.rss / MIB:.1f} MiB at "
            f"{last.at:.0f} s, the end of the run, {run.idle_seconds():.0f} s after the load "
            f"({(last.rss - start) / start:+.1%})")


def report(run: OverloadRun) -> str:
    a, b, c = run.phase("A"), run.phase("B"), run.phase("C")
    probe = (f"a python probe sends {run.probe_rate:,.0f} req/s of it throughout and records "
             f"every call; {run.generator} sends the rest" if run.probe_rate is not None else
             "python processes send all of it and record every call")
    back = recovery(run)
    lines = [
        f"== server flags: {run.flags or '(defaults)'}",
        f"capacity: {run.capacity:,.0f} requests/s of {run.images} image(s) ({run.generator}, "
        f"closed loop, {CAPACITY_CALLERS} callers)",
        "load: " + ", ".join(f"{p.name} {p.multiple:g}x = {p.rate:,.0f} req/s for "
                              f"{p.seconds:g} s" for p in (a, b, c)) + f"; {probe}",
        phase_table(run),
        memory_line(run),
        f"recovery after the overload ended: first normal 100 ms window at "
        f"{_seconds(back.first_s)}, normal for {RECOVERY_WINDOWS} windows in a row from "
        f"{_seconds(back.sustained_s)} (in the {c.seconds:g} s of phase C; a window, by due "
        f"time, is normal when every probe call in it is OK and its p99 <= "
        f"{RECOVERY_FACTOR:g} x phase A's p99 = {back.threshold_ms:.1f} ms)",
        "probe p99 per 100 ms window, first 2 s after the overload (ms): "
        + " ".join(f"{p:.0f}" for p in back.p99_ms[:20]),
    ]
    for bulk in run.bulk:
        lines.append(f"h2load in phase {bulk.phase}: " + (f"failed: {bulk.error}" if bulk.error
                     else f"{bulk.sent:,} sent at {bulk.rate:,.0f}/s, p99 "
                     f"{bulk.late_p99_s * 1000:,.0f} ms late; {_codes(bulk.statuses)}"))
    return "\n".join(lines)


def summary(runs: Sequence[OverloadRun]) -> str:
    header = ["server flags", "capacity req/s", "overload offered req/s",
              "OK req/s in overload (server)", "probe calls refused in overload, by code",
              "refusal p50 / p99 ms", "admitted (OK) p99 ms A / B / C",
              "RSS MiB start / peak / end of overload / end of run",
              "recovery: first normal window / 1 s normal"]
    rows = []
    for run in runs:
        a, b, c = run.phase("A"), run.phase("B"), run.phase("C")
        overload = run.probe.between(b.start, b.stop)
        refused = overload.latency[(overload.code != 0) & ~np.isnan(overload.latency)]
        ok = run.server_codes(b)["OK"]
        p99 = [ms(run.probe.between(p.start, p.stop).ok_latency(), 99) for p in (a, b, c)]
        rss = [s.rss for s in run.samples if b.start <= s.at <= b.stop + 0.5]
        back = recovery(run)
        rows.append([
            run.flags or "(defaults)", f"{run.capacity:,.0f}", f"{b.rate:,.0f}",
            f"{ok / b.seconds:,.0f}", f"{_codes(overload.errors())} of {len(overload.due):,}",
            f"{ms(refused, 50):.1f} / {ms(refused, 99):.1f}",
            " / ".join(f"{v:.1f}" for v in p99),
            f"{run.sample_at(b.start).rss / MIB:.1f} / {max(rss) / MIB:.1f} / "
            f"{run.sample_at(b.stop).rss / MIB:.1f} / {run.samples[-1].rss / MIB:.1f} "
            f"({run.idle_seconds():.0f} s idle)",
            f"{_seconds(back.first_s)} / {_seconds(back.sustained_s)}"])
    return markdown_table(header, [LEFT, *[RIGHT] * 3, LEFT, *[RIGHT] * 4], rows)
