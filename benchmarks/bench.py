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
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from axon.benchmarks.loadgen import Call, LoadError, LoadResult, run_h2load, run_python
from axon.benchmarks.scenarios import DEFAULT_MAX_OUTSTANDING, Mode, Scenario
from axon.benchmarks.target import Api, Target
from axon.image_formats import SERVED_FORMATS
from axon.markdown import LEFT, RIGHT, markdown_table
from axon.model_card import ModelCard
from axon.preprocessing import load_image

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
    """One core, in process, no gRPC: onnxruntime alone on the same batch (infer), or Pillow
    decoding the same PNG and onnxruntime on batches of it (classify)."""
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
    steal: float = 0.0
    """Share of the machine's CPU time its host took (steal) during the timed run."""
    attempts: int = 1
    """Timed runs made: one more each time the host stole more than STEAL_LIMIT."""
    protocol: str = "grpc"
    """grpc, http-json or http-binary (target.PROTOCOLS)."""

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


def classify_ceiling(model_path: Path, png: bytes, images: int, threads: int,
                     seconds: float = 2.0) -> float:
    """Images/s one core gets decoding ``png`` with Pillow (as training does) and running the
    model on batches of ``images``: the in-process limit of the Classify API."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    spec = ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map).preprocessing
    decoded, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds / 2:
        load_image(png, spec.height, spec.width, spec.color_mode, formats=SERVED_FORMATS)
        decoded += 1
    decode_s = elapsed / decoded
    pixels = np.stack([load_image(png, spec.height, spec.width, spec.color_mode)] * images)
    model = onnxruntime_ceiling(model_path, spec.apply(pixels), threads, seconds / 2)
    return 1 / (decode_s + 1 / model)


STEAL_LIMIT = 0.05
"""A timed run during which the host stole more than this share of the machine's CPU time is
repeated (these machines are virtual, and their host takes CPU in bursts)."""
STEAL_ATTEMPTS = 3
"""Timed runs at most per measurement; the least-stolen one is kept."""


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) CPU time of the whole machine, all cores, since boot, in clock
    ticks (/proc/stat). Busy is the total less idle, iowait and steal: what ran here."""
    first_line = Path("/proc/stat").read_text().split("\n", 1)[0]
    fields = [int(v) for v in first_line.split()[1:9]]  # user nice system idle iowait ...
    idle, iowait, steal, total = fields[3], fields[4], fields[7], sum(fields)
    return total - idle - iowait - steal, steal, total


def cpu_times() -> tuple[int, int]:
    """(steal, total) CPU time of the whole machine since boot, in clock ticks."""
    _, steal, total = machine_ticks()
    return steal, total


Run = TypeVar("Run")


def least_stolen(timed_run: Callable[[], Run], *,
                 machine_times: Callable[[], tuple[int, int]] = cpu_times,
                 limit: float = STEAL_LIMIT,
                 attempts: int = STEAL_ATTEMPTS) -> tuple[Run, float, int]:
    """Run ``timed_run`` again while the host stole more than ``limit`` of the machine's CPU
    time during it, ``attempts`` times at most; return the least-stolen run, the share stolen
    during it and the number of runs."""
    kept: tuple[Run, float] | None = None
    made = 0
    while made < attempts and (kept is None or kept[1] > limit):
        made += 1
        steal_before, total_before = machine_times()
        outcome = timed_run()
        steal_after, total_after = machine_times()
        steal = (steal_after - steal_before) / max(1, total_after - total_before)
        if kept is None or steal < kept[1]:
            kept = (outcome, steal)
    assert kept is not None
    return kept[0], kept[1], made


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and every process under it, live or ended: a
    server of several workers is its supervisor and their processes (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, and cutime + cstime: the children it has waited for.
    ticks = sum(int(value) for value in fields[11:15])
    total = ticks / os.sysconf("SC_CLK_TCK")
    for child in child_pids(pid):
        try:
            total += process_cpu_seconds(child)
        except OSError:  # it ended meanwhile: its parent's cutime has it once waited for
            continue
    return total


def process_rss_bytes(pid: int) -> int:
    """Resident memory (VmRSS) of a process and every live process under it: a server of
    several workers is its supervisor and their processes (Linux /proc). Pages the processes
    share are counted once per process, as ``ps`` and the workers' own metric count them."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1]) * 1024
            break
    else:
        raise RuntimeError(f"no VmRSS for process {pid}")
    for child in child_pids(pid):
        try:
            total += process_rss_bytes(child)
        except (OSError, RuntimeError):  # it ended meanwhile (a zombie has no VmRSS)
            continue
    return total


def child_pids(pid: int) -> list[int]:
    """The process ids of the live children of process ``pid`` (Linux /proc)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return children


def measure(target: Target, scenario: Scenario, generator: str, *, api: Api = "infer",
            seconds: float, ceiling: float, max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
            protocol: str = "grpc") -> Measurement:
    """Warm up, then run ``scenario`` for ``seconds`` and read the server's counters."""
    client, model, version, server_pid = (target.client, target.model, target.version,
                                          target.server_pid)
    call = target.call(api, scenario.images, protocol)  # a valid request: real answers
    run = GENERATORS[generator]
    run(call, scenario, min(1.0, seconds), max_outstanding=max_outstanding)  # not measured

    def timed_run() -> tuple[LoadResult, float, Any, Any]:
        (before,) = client.statistics(model, version)
        cpu_before = process_cpu_seconds(server_pid) if server_pid else 0.0
        result = run(call, scenario, seconds, max_outstanding=max_outstanding)
        cpu_after = process_cpu_seconds(server_pid) if server_pid else 0.0
        (after,) = client.statistics(model, version)
        return result, cpu_after - cpu_before, before, after

    (result, server_cpu, before, after), steal, attempts = least_stolen(timed_run)
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
        server_cpu_us_per_request=server_cpu / max(succeeded, 1) * 1e6
        if server_pid else None,
        generator_cpu_us_per_request=result.generator_cpu_seconds / max(result.sent, 1) * 1e6,
        ceiling_images_per_second=ceiling, requests_sent=result.sent,
        server_successes=succeeded, server_failures=failed, errors=result.errors,
        errors_by_code=result.errors_by_code, not_sent=result.not_sent,
        send_lag_p99_ms=result.send_lag_p99_ms, steal=steal, attempts=attempts,
        protocol=protocol)


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
    header = ["load generator", "protocol", "callers", "images/request", "api", "mode",
              "offered requests/s", "requests/s", "images/s", "p50 ms", "p90 ms", "p99 ms",
              "max ms", "errors", "not sent", "images/execution", "server CPU µs/request",
              "generator CPU µs/request", "single-core ceiling images/s", "share of ceiling"]
    alignment = [LEFT, LEFT, RIGHT, RIGHT, LEFT, LEFT, *[RIGHT] * 7, LEFT, *[RIGHT] * 6]
    return markdown_table(header, alignment, ([
        m.generator, m.protocol, _optional(m.callers, "d"), m.images_per_request, m.api, m.mode,
        _optional(m.offered_requests_per_second, ",.0f"), f"{m.requests_per_second:,.0f}",
        f"{m.images_per_second:,.0f}", f"{m.p50_ms:.2f}", f"{m.p90_ms:.2f}", f"{m.p99_ms:.2f}",
        f"{m.max_ms:.2f}", _errors(m), f"{m.not_sent:,}", f"{m.images_per_execution:.1f}",
        _optional(m.server_cpu_us_per_request, ".0f"), f"{m.generator_cpu_us_per_request:.0f}",
        f"{m.ceiling_images_per_second:,.0f}", f"{m.share_of_ceiling:.1%}"] for m in rows))


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
    """Why a run without a baseline judges no targets, when it measured a scenario that has
    them: the serving targets are same-run ratios against the naive server, because machines
    of one class differ by 2-6x and a figure from one proves nothing on another."""
    targeted = {shape for targets in SERVING_TARGETS.values() for shape in targets}
    if not any(m.api == "infer" and m.protocol == "grpc" and m.mode == "closed"
               and (m.callers, m.images_per_request) in targeted for m in rows):
        return []
    return ["no targets judged: the serving targets are ratios against a baseline measured in "
            "the same run (axon bench --baseline naive; make bench runs them all)"]


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


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def comparison_table(pairs: Sequence[Pair], variant: str, baseline: str) -> str:
    """Medians over the rounds, and variant/baseline ratios (1.00: no difference)."""
    title = (f"variant: {variant}; baseline: {baseline}; medians of {len(pairs[0].variant)} "
             "alternating rounds" if pairs else "no measurements")
    header = ["load generator", "scenario", "images/s baseline", "images/s variant",
              "throughput ratio", "p50 ms baseline", "p50 ms variant", "p50 ratio",
              "p99 ms baseline", "p99 ms variant", "server CPU µs/request baseline", "variant",
              "CPU ratio", "images/execution variant", "errors baseline", "errors variant",
              "most steal", "api"]
    rows = []
    for pair in pairs:
        sides = (pair.baseline, pair.variant)
        rate = [median([m.images_per_second for m in side]) for side in sides]
        p50 = [median([m.p50_ms for m in side]) for side in sides]
        p99 = [median([m.p99_ms for m in side]) for side in sides]
        cpu = [median([m.server_cpu_us_per_request or 0.0 for m in side]) for side in sides]
        errors = [median([m.errors for m in side]) for side in sides]
        batch = median([m.images_per_execution for m in pair.variant])
        steal = max(m.steal for side in sides for m in side)
        rows.append([
            pair.generator, pair.scenario.label, f"{rate[0]:,.0f}", f"{rate[1]:,.0f}",
            f"{rate[1] / rate[0]:.3f}", f"{p50[0]:.2f}", f"{p50[1]:.2f}",
            f"{p50[1] / p50[0] if p50[0] else float('nan'):.3f}", f"{p99[0]:.2f}",
            f"{p99[1]:.2f}", f"{cpu[0]:.1f}", f"{cpu[1]:.1f}",
            f"{cpu[1] / cpu[0] if cpu[0] else float('nan'):.3f}", f"{batch:.1f}",
            f"{errors[0]:,.0f}", f"{errors[1]:,.0f}", f"{steal:.1%}", pair.api])
    return title + "\n" + markdown_table(header, [LEFT, LEFT, *[RIGHT] * 15, LEFT], rows)


@dataclass(frozen=True)
class ServingTarget:
    """What Axon must do against the naive baseline in one scenario, as same-run ratios."""

    throughput: float | None = None
    """Least Axon/baseline throughput (images/s)."""
    cpu: float | None = None
    """Most Axon/baseline server CPU per request."""
    p50: float | None = None
    """Most Axon/baseline median latency."""
    ceiling_share: float | None = None
    """Least share of onnxruntime's single-thread ceiling (images/s)."""
    images_per_execution: float | None = None
    """Least images per model execution (Axon's median over the rounds)."""


_LONE = ServingTarget(p50=1.2, cpu=1.1)
SERVING_TARGETS: dict[str, dict[tuple[int, int], ServingTarget]] = {
    # The compact net costs little to run: checks, metrics, batching and auth must cost
    # nothing net.
    "compact": {(64, 1): ServingTarget(throughput=1.0, cpu=1.0),
                (16, 64): ServingTarget(throughput=1.0), (1, 1): _LONE},
    # The default net costs more to run than a gRPC call: batching and running the model off
    # the event loop must pay.
    "default": {(64, 1): ServingTarget(throughput=1.4, cpu=0.85, images_per_execution=16),
                (16, 64): ServingTarget(throughput=1.3, ceiling_share=0.8), (1, 1): _LONE},
}
"""The serving targets by the model's preset (issue 14); other models get ratios only."""


def target_verdicts(pairs: Sequence[Pair], preset: str) -> list[str]:
    """Each closed-loop pair's targets for the model's preset, met or MISSED."""
    targets = SERVING_TARGETS.get(preset)
    if targets is None:
        return [f"no serving targets for preset {preset!r} (only {', '.join(SERVING_TARGETS)})"]
    lines = []
    for pair in pairs:
        target = targets.get((pair.scenario.callers or 0, pair.scenario.images))
        if target is None or pair.scenario.mode != "closed":
            continue
        axon, naive = _medians(pair.variant), _medians(pair.baseline)
        checks = []
        if target.throughput is not None:
            ratio = axon["images"] / naive["images"]
            checks.append((f"throughput {ratio:.2f}x (>= {target.throughput})",
                           ratio >= target.throughput))
        if target.cpu is not None:
            ratio = axon["cpu"] / naive["cpu"]
            checks.append((f"server CPU/request {ratio:.2f}x (<= {target.cpu})",
                           ratio <= target.cpu))
        if target.p50 is not None:
            ratio = axon["p50"] / naive["p50"]
            checks.append((f"p50 {ratio:.2f}x (<= {target.p50})", ratio <= target.p50))
        if target.ceiling_share is not None:
            share = axon["images"] / pair.variant[0].ceiling_images_per_second
            checks.append((f"{share:.0%} of onnxruntime's single-thread ceiling "
                           f"(>= {target.ceiling_share:.0%})", share >= target.ceiling_share))
        if target.images_per_execution is not None:
            batch = median([m.images_per_execution for m in pair.variant])
            checks.append((f"{batch:.1f} images per execution "
                           f"(>= {target.images_per_execution:g})",
                           batch >= target.images_per_execution))
        verdict = "met" if all(ok for _, ok in checks) else "MISSED"
        lines.append(f"{pair.generator} {pair.scenario.label} ({preset}): "
                     + ", ".join(text for text, _ in checks) + f": {verdict}")
        spreads = {side: spread([m.images_per_second for m in rounds])
                   for side, rounds in (("Axon", pair.variant), ("baseline", pair.baseline))}
        if max(spreads.values()) > NOISY_SPREAD:
            paired = round_by_round(pair)
            lines.append("  noisy: throughput by round spread "
                         + ", ".join(f"{value:.2f}x ({side})" for side, value in spreads.items())
                         + (f"; Axon/baseline {paired}" if paired else "")
                         + "; one round more or less could turn this verdict (--rounds 5 or "
                         "more, or a quieter machine)")
    return lines


def round_by_round(pair: Pair) -> str | None:
    """The variant/baseline throughput ratio of each round: its range, median, and the rounds
    the variant was ahead in. Each round measures both servers back to back, so a slower spell
    of the machine that lasts a round slows both sides of that round's ratio, while each side's
    median may come from rounds of different speed (docs/performance.md, "Requests that gain
    nothing from company"). None under 2 rounds with a baseline that served anything."""
    ratios = [variant.images_per_second / baseline.images_per_second
              for variant, baseline in zip(pair.variant, pair.baseline, strict=True)
              if baseline.images_per_second > 0]
    if len(ratios) < 2:
        return None
    ahead = sum(ratio > 1 for ratio in ratios)
    return (f"round by round {min(ratios):.2f}-{max(ratios):.2f}x, median {median(ratios):.2f}x, "
            f"ahead in {ahead} of {len(ratios)}")


NOISY_SPREAD = 1.25
"""A side whose fastest round is more than this times its slowest is flagged under the verdict.
In the fifteenth session's three `make bench` runs on the AMD machine of docs/performance.md,
the naive server's rounds spread 1.01-1.15x and Axon's 1.01-1.29x (the default net's 64 x 1
row, 1.35x to 1.62x the naive server by round). On 2 cores of an Intel Xeon the naive server's
spread up to 1.83x, and verdicts there flipped between runs (docs/performance.md, "On an Intel
Xeon")."""


def spread(values: Sequence[float]) -> float:
    """The largest of ``values`` over the smallest: 1.0 for one value or none, infinite when
    only the smallest is 0 (a round that served nothing)."""
    low, high = min(values, default=0.0), max(values, default=0.0)
    if low > 0:
        return high / low
    return math.inf if high > 0 else 1.0


def _medians(side: Sequence[Measurement]) -> dict[str, float]:
    return {"images": median([m.images_per_second for m in side]),
            "cpu": median([m.server_cpu_us_per_request or 0.0 for m in side]),
            "p50": median([m.p50_ms for m in side])}
