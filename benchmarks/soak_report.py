"""What the soak benchmark prints and the criteria it is held to (``benchmarks.soak`` measures;
this only reads)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from axon.benchmarks.common import MIB, Records, Sample, ms
from axon.markdown import RIGHT, markdown_table

EVENT_WINDOW_S = 10.0
"""Latency is compared over this long before and after a reload."""


@dataclass(frozen=True)
class Event:
    at: float
    """Seconds after the start of the load."""
    what: str
    seconds: float
    """How long the call took."""
    detail: str
    """What came of it; starts with FAILED when it failed."""


@dataclass(frozen=True)
class SoakRun:
    capacity: float
    rates: dict[str, float]
    """API -> requests/s (ClassifyStream: messages/s)."""
    records: dict[str, Records]
    samples: list[Sample]
    events: list[Event]
    warmup_seconds: float

    @property
    def seconds(self) -> float:
        return max(float(r.due.max()) for r in self.records.values())

    def under_load(self) -> list[Sample]:
        """The samples taken while the load ran (not the one after it ended)."""
        return [s for s in self.samples if s.at <= self.seconds + 0.5]

    def warm(self) -> Sample:
        """The first sample at or after the warm-up (at most half the run)."""
        after = min(self.warmup_seconds, self.seconds / 2)
        return next(s for s in self.samples if s.at >= after - 0.5)

    def growth(self) -> float:
        """From the first sample after warm-up to the last one under load."""
        warm = self.warm()
        return (self.under_load()[-1].rss - warm.rss) / warm.rss

    def server_errors(self) -> Counter[str]:
        """Non-OK answers the server counted during the load, as ``method code``."""
        first, last = self.samples[0].codes, self.samples[-1].codes
        return Counter({f"{method} {code}": last[key] - first[key]
                        for key in last if (method := key[0]) and (code := key[1]) != "OK"
                        and last[key] > first[key]})


def minute_table(run: SoakRun) -> str:
    apis = list(run.records)
    header = ["minute", *(f"{api} calls / failed / p50 ms / p99 ms" for api in apis),
              "server CPU", "machine busy", "host steal"]
    rows = []
    for minute in range(math.ceil(run.seconds / 60)):
        first = min(run.samples, key=lambda s: abs(s.at - minute * 60))
        last = min(run.samples, key=lambda s: abs(s.at - (minute + 1) * 60))
        span = max(last.at - first.at, 1e-9)
        cells = []
        for api in apis:
            part = run.records[api].between(minute * 60, (minute + 1) * 60)
            ok = part.ok_latency()
            cells.append(f"{len(part.due):,} / {sum(part.errors().values()):,} / "
                         f"{ms(ok, 50):.1f} / {ms(ok, 99):.1f}")
        rows.append([minute + 1, *cells, f"{(last.cpu_seconds - first.cpu_seconds) / span:.0%}",
                     f"{last.machine_busy(first):.0%}", f"{last.machine_stolen(first):.1%}"])
    return markdown_table(header, [RIGHT] * len(header), rows)


def _around(api: str, records: Records, at: float) -> str:
    before = records.between(at - EVENT_WINDOW_S, at)
    after = records.between(at, at + EVENT_WINDOW_S)
    return (f"{api} p99 {ms(before.ok_latency(), 99):.1f} -> {ms(after.ok_latency(), 99):.1f} "
            f"ms, failed {sum(before.errors().values())} -> {sum(after.errors().values())}")


def report(run: SoakRun) -> str:
    warm, last = run.warm(), run.under_load()[-1]
    rss = [s.rss for s in run.under_load()]
    lines = ["", minute_table(run), ""]
    for api, records in run.records.items():
        errors = records.errors()
        lines.append(f"{api}: {len(records.due):,} requests at {run.rates[api]:,.0f}/s, failed: "
                     + (", ".join(f"{c} {n:,}" for c, n in errors.most_common()) or "none")
                     + f"; p50 {ms(records.ok_latency(), 50):.1f} ms, p99 "
                     f"{ms(records.ok_latency(), 99):.1f} ms, max "
                     f"{ms(records.ok_latency(), 100):.1f} ms over the run; the load generator "
                     f"sent p99 {ms(records.lag[~np.isnan(records.lag)], 99):.1f} ms late")
    server = run.server_errors()
    lines.append("server's own counters, codes other than OK during the load: "
                 + (", ".join(f"{k} {n:,}" for k, n in server.most_common()) or "none"))
    for event in run.events:
        lines.append(f"at {event.at:.0f} s: {event.what} in {event.seconds:.2f} s; "
                     f"{event.detail}")
        lines.append(f"  {EVENT_WINDOW_S:g} s before -> {EVENT_WINDOW_S:g} s after it: "
                     + "; ".join(_around(api, records, event.at)
                                 for api, records in run.records.items()))
    lines.append(f"memory (server VmRSS every {run.samples[1].at - run.samples[0].at:.0f} s): "
                 f"{rss[0] / MIB:.1f} MiB at the start, {warm.rss / MIB:.1f} MiB after warm-up "
                 f"({warm.at:.0f} s), {last.rss / MIB:.1f} MiB at the end of the load "
                 f"({last.at:.0f} s): growth after warm-up {run.growth():+.2%}; under load min "
                 f"{min(rss) / MIB:.1f}, max {max(rss) / MIB:.1f} MiB; "
                 f"{run.samples[-1].rss / MIB:.1f} MiB at {run.samples[-1].at:.0f} s, idle")
    return "\n".join(lines)


def verdicts(run: SoakRun, max_growth: float) -> list[str]:
    """The criteria that failed (empty: all met)."""
    failed = []
    for api, records in run.records.items():
        if errors := records.errors():
            failed.append(f"FAILED: {sum(errors.values()):,} {api} requests failed "
                          f"({', '.join(f'{c} {n:,}' for c, n in errors.most_common())})")
    if server := run.server_errors():
        failed.append(f"FAILED: the server counted non-OK answers: {dict(server)}")
    failed.extend(f"FAILED: {e.what}: {e.detail}" for e in run.events
                  if e.detail.startswith("FAILED"))
    if run.growth() >= max_growth:
        failed.append(f"FAILED: memory grew {run.growth():.2%} after warm-up (bound "
                      f"{max_growth:.0%})")
    return failed
