"""``axon bench``: closed- and open-loop load against a real server, next to the raw
onnxruntime ceiling.

For each scenario (clients/scenarios.py: callers x images, or requests/s x images) it reports
throughput (in an open loop: the achieved rate, answered OK per second, next to the offered
one), p50/p90/p99/max latency of the answered requests, errors by status code, the batching
efficiency (images per model execution, from the server's statistics), the server's CPU per
request (from /proc, when bench started the server) and the load generator's CPU, and the
throughput as a share of in-process onnxruntime on the same model and batch size, measured in
the same run. Numbers compare within one run; absolute figures move between machines.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from clients.bench_target import Api, Target
from clients.loadgen import Call, LoadError, LoadResult, run_h2load, run_python
from clients.scenarios import DEFAULT_MAX_OUTSTANDING, Mode, Scenario

LATENCY_PERCENTILES = (50, 75, 90, 95, 99, 99.9, 100)


class Generator(Protocol):
    def __call__(self, call: Call, scenario: Scenario, seconds: float, *,
                 max_outstanding: int = ...) -> LoadResult: ...


GENERATORS: dict[str, Generator] = {"h2load": run_h2load, "python": run_python}
SEES_GRPC_STATUS = frozenset({"python"})
"""Generators that see each call's gRPC status (h2load sees HTTP status only)."""


@dataclass(frozen=True)
class Measurement:
    generator: str
    api: Api
    mode: Mode
    callers: int | None
    """Closed loop: callers; None in an open loop."""
    offered_requests_per_second: float | None
    """Open loop: the rate offered; None in a closed loop."""
    images_per_request: int
    requests_per_second: float
    """Answered OK per second (in an open loop, the achieved rate)."""
    images_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    images_per_execution: float
    server_cpu_us_per_request: float | None
    generator_cpu_us_per_request: float
    ceiling_images_per_second: float
    requests_sent: int
    server_successes: int
    """Successes the server counted in the run (its statistics), to set against the above."""
    server_failures: int
    errors: int
    errors_by_code: dict[str, int]
    """gRPC status names (python generator) or HTTP statuses (h2load) -> calls."""
    not_sent: int
    """Open loop: requests due while the outstanding cap was reached, dropped unsent."""
    send_lag_p99_ms: float | None
    """Open loop: how late the generator sent against its schedule (p99)."""
    latency_percentiles_ms: dict[str, float]
    """Latency at LATENCY_PERCENTILES (keys: "50", "90", "99.9", ...), for plots."""

    @property
    def share_of_ceiling(self) -> float:
        return self.images_per_second / self.ceiling_images_per_second

    @property
    def scenario(self) -> str:
        return Scenario(self.images_per_request, self.callers,
                        self.offered_requests_per_second).label


def onnxruntime_ceiling(model_path: Path, batch: npt.NDArray[np.float32], threads: int,
                        seconds: float = 2.0) -> float:
    """Images/s of back-to-back in-process runs on ``batch``: no gRPC, no batcher."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: batch}
    for _ in range(20):
        session.run(None, feed)
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        session.run(None, feed)
        runs += 1
    return runs * len(batch) / elapsed


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(target: Target, scenario: Scenario, generator: str, *, api: Api = "infer",
            seconds: float, ceiling: float,
            max_outstanding: int = DEFAULT_MAX_OUTSTANDING) -> Measurement:
    """Warm up, then run ``scenario`` for ``seconds`` and read the server's counters."""
    client, model, version, server_pid = (target.client, target.model, target.version,
                                          target.server_pid)
    call = target.call(api, scenario.images)  # a valid request: real answers
    run = GENERATORS[generator]
    run(call, scenario, min(1.0, seconds), max_outstanding=max_outstanding)  # not measured
    (before,) = client.statistics(model, version)
    cpu_before = process_cpu_seconds(server_pid) if server_pid else 0.0
    result = run(call, scenario, seconds, max_outstanding=max_outstanding)
    cpu_after = process_cpu_seconds(server_pid) if server_pid else 0.0
    (after,) = client.statistics(model, version)
    executions = after.execution_count - before.execution_count
    succeeded = after.inference_stats.success.count - before.inference_stats.success.count
    failed = after.inference_stats.fail.count - before.inference_stats.fail.count
    check_counters(result, scenario, generator, succeeded=succeeded, failed=failed)
    return Measurement(
        generator=generator, api=api, mode=scenario.mode, callers=scenario.callers,
        offered_requests_per_second=scenario.rate, images_per_request=scenario.images,
        requests_per_second=result.requests_per_second,
        images_per_second=result.requests_per_second * scenario.images,
        p50_ms=result.percentile_ms(50), p90_ms=result.percentile_ms(90),
        p99_ms=result.percentile_ms(99), max_ms=result.percentile_ms(100),
        latency_percentiles_ms={f"{q:g}": result.percentile_ms(q)
                                for q in LATENCY_PERCENTILES},
        images_per_execution=(after.inference_count - before.inference_count) / max(executions, 1),
        server_cpu_us_per_request=(cpu_after - cpu_before) / max(succeeded, 1) * 1e6
        if server_pid else None,
        generator_cpu_us_per_request=result.generator_cpu_seconds / max(result.sent, 1) * 1e6,
        ceiling_images_per_second=ceiling, requests_sent=result.sent,
        server_successes=succeeded, server_failures=failed, errors=result.errors,
        errors_by_code=result.errors_by_code, not_sent=result.not_sent,
        send_lag_p99_ms=result.send_lag_p99_ms)


def check_counters(result: LoadResult, scenario: Scenario, generator: str, *, succeeded: int,
                   failed: int) -> None:
    """Raise LoadError when the server's own counts (``succeeded``, ``failed`` calls in the
    run) contradict what the load generator saw.

    Strict in a closed loop, and for a generator blind to gRPC status: no failures, and a
    success for every request sent. A closed loop is meant to measure answers, and h2load cannot
    tell a failed call from an answered one, so any failure makes their numbers unreadable.
    (Requests in flight when a closed loop stops are cancelled, which the server does not count
    as failures.) An open loop past the server's capacity fails calls by design
    (RESOURCE_EXHAUSTED), so the python generator's open loop is only held to this: the server
    counted at least the successes the generator saw, and no more failures than it saw errors.
    The server counts no failure for calls refused before they reach a model (its
    concurrent-call limit) or abandoned by their caller, so those may differ the other way.
    """
    if scenario.mode == "open" and generator in SEES_GRPC_STATUS:
        if succeeded < result.succeeded or failed > result.errors:
            raise LoadError(f"the server counted {succeeded} successes and {failed} failures "
                            f"where the load generator saw {result.succeeded} answered and "
                            f"{result.errors} errors: the load is not what it seems")
    elif failed or succeeded < result.sent:
        blind = f"; {generator} sees HTTP status only, so it cannot report calls failed past " \
                "the server's capacity: use --generators python for that" \
            if scenario.mode == "open" else ""
        raise LoadError(f"the server counted {succeeded} successes and {failed} failures for "
                        f"{result.sent} requests sent: the load is not what it seems{blind}")


def _optional(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _errors(m: Measurement) -> str:
    by_code = ", ".join(f"{code} {count:,}" for code, count in sorted(m.errors_by_code.items()))
    return f"{m.errors:,}" + (f" ({by_code})" if by_code else "")


def table(rows: Sequence[Measurement]) -> str:
    lines = ["| load generator | callers | images/request | api | mode | offered requests/s | "
             "requests/s | images/s | p50 ms | p90 ms | p99 ms | max ms | errors | not sent | "
             "images/execution | server CPU µs/request | generator CPU µs/request | "
             "onnxruntime ceiling images/s | share of ceiling |",
             "| --- | ---: | ---: | --- | --- |" + " ---: |" * 7 + " --- |" + " ---: |" * 6]
    for m in rows:
        lines.append(
            f"| {m.generator} | {_optional(m.callers, 'd')} | {m.images_per_request} | "
            f"{m.api} | {m.mode} | {_optional(m.offered_requests_per_second, ',.0f')} | "
            f"{m.requests_per_second:,.0f} | {m.images_per_second:,.0f} | {m.p50_ms:.2f} | "
            f"{m.p90_ms:.2f} | {m.p99_ms:.2f} | {m.max_ms:.2f} | {_errors(m)} | "
            f"{m.not_sent:,} | {m.images_per_execution:.1f} | "
            f"{_optional(m.server_cpu_us_per_request, '.0f')} | "
            f"{m.generator_cpu_us_per_request:.0f} | {m.ceiling_images_per_second:,.0f} | "
            f"{m.share_of_ceiling:.1%} |")
    return "\n".join(lines)


def plot(rows: Sequence[Measurement], path: Path) -> None:
    """Latency against percentile, one line per scenario and load generator (a PNG)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise LoadError("--plot needs matplotlib (pip install matplotlib, or the train "
                        "extra)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    ticks = [f"{q:g}" for q in LATENCY_PERCENTILES]
    for m in rows:
        errors = f", {m.errors:,} errors" if m.errors else ""
        axis.plot(range(len(ticks)), [m.latency_percentiles_ms[t] for t in ticks], marker="o",
                  label=f"{m.generator} {m.api} {m.scenario}: "
                        f"{m.images_per_second:,.0f} images/s{errors}")
    axis.set_xticks(range(len(ticks)), [f"p{t}" if t != "100" else "max" for t in ticks])
    axis.set_yscale("log")
    axis.set_ylabel("latency, ms (log)")
    axis.set_title("axon bench: latency by percentile")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def save(rows: Sequence[Measurement], path: Path) -> None:
    path.write_text(json.dumps([asdict(m) for m in rows], indent=2) + "\n")


def verdicts(rows: Sequence[Measurement]) -> list[str]:
    """The issue's targets, checked against each load generator's closed-loop rows of the
    tensor API (the targets were set for it; classify adds PNG decoding on the server)."""
    lines = []
    for m in rows:
        if m.api != "infer":
            continue
        if (m.callers, m.images_per_request) == (64, 1):
            lines.append(f"{m.generator}: 64 single-image callers: {m.images_per_second:,.0f} "
                         f"images/s (target >= 5,000), p99 {m.p99_ms:.1f} ms (<= 25), "
                         f"{m.images_per_execution:.1f} images/execution (>= 8): "
                         + ("met" if m.images_per_second >= 5000 and m.p99_ms <= 25
                            and m.images_per_execution >= 8 else "MISSED"))
        if (m.callers, m.images_per_request) == (16, 64):
            lines.append(f"{m.generator}: 16 callers x 64 images: {m.images_per_second:,.0f} "
                         f"images/s (target >= 100,000), {m.share_of_ceiling:.0%} of the "
                         "onnxruntime ceiling: "
                         + ("met" if m.images_per_second >= 100_000 else "MISSED"))
    return lines


@dataclass(frozen=True)
class Pair:
    """One scenario measured in alternating rounds on two servers that differ in one setting."""

    generator: str
    api: Api
    scenario: Scenario
    variant: list[Measurement]
    baseline: list[Measurement]


def save_pairs(pairs: Sequence[Pair], path: Path) -> None:
    """Every round of an A/B run, both sides, as JSON."""
    path.write_text(json.dumps([
        {"generator": p.generator, "api": p.api, "mode": p.scenario.mode,
         "callers": p.scenario.callers, "offered_requests_per_second": p.scenario.rate,
         "images": p.scenario.images,
         "variant": [asdict(m) for m in p.variant],
         "baseline": [asdict(m) for m in p.baseline]} for p in pairs], indent=2) + "\n")


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def comparison_table(pairs: Sequence[Pair], variant: str, baseline: str) -> str:
    """Medians over the rounds, and variant/baseline ratios (1.00: no difference)."""
    lines = [f"variant: {variant}; baseline: {baseline}; medians of {len(pairs[0].variant)} "
             "alternating rounds" if pairs else "no measurements",
             "| load generator | scenario | images/s baseline | images/s variant | "
             "throughput ratio | p99 ms baseline | p99 ms variant | server CPU µs/request "
             "baseline | variant | CPU ratio | errors baseline | errors variant | api |",
             "| --- | --- |" + " ---: |" * 10 + " --- |"]
    for pair in pairs:
        sides = (pair.baseline, pair.variant)
        rate = [_median([m.images_per_second for m in side]) for side in sides]
        p99 = [_median([m.p99_ms for m in side]) for side in sides]
        cpu = [_median([m.server_cpu_us_per_request or 0.0 for m in side]) for side in sides]
        errors = [_median([m.errors for m in side]) for side in sides]
        lines.append(
            f"| {pair.generator} | {pair.scenario.label} | "
            f"{rate[0]:,.0f} | {rate[1]:,.0f} | {rate[1] / rate[0]:.3f} | {p99[0]:.2f} | "
            f"{p99[1]:.2f} | {cpu[0]:.1f} | {cpu[1]:.1f} | "
            f"{cpu[1] / cpu[0] if cpu[0] else float('nan'):.3f} | {errors[0]:,.0f} | "
            f"{errors[1]:,.0f} | {pair.api} |")
    return "\n".join(lines)
