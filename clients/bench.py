"""``axon bench``: closed-loop load against a real server, next to the raw onnxruntime ceiling.

For each scenario (callers x images per request) it reports throughput, p50/p99 latency, the
batching efficiency (images per model execution, from the server's statistics), the server's
CPU per request (from /proc, when bench started the server) and the load generator's CPU, and
the throughput as a share of in-process onnxruntime on the same model and batch size, measured
in the same run. Numbers compare within one run; absolute figures move between machines.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from clients.client import AxonClient
from clients.loadgen import LoadError, LoadResult, request_bytes, run_h2load, run_python

LATENCY_PERCENTILES = (50, 75, 90, 95, 99, 99.9, 100)
Generator = Callable[[str, bytes, int, float], LoadResult]
GENERATORS: dict[str, Generator] = {"h2load": run_h2load, "python": run_python}


@dataclass(frozen=True)
class Scenario:
    callers: int
    images: int

    @classmethod
    def parse(cls, text: str) -> Scenario:
        callers, _, images = text.partition("x")
        return cls(int(callers), int(images))


@dataclass(frozen=True)
class Measurement:
    generator: str
    callers: int
    images_per_request: int
    requests_per_second: float
    images_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    images_per_execution: float
    server_cpu_us_per_request: float | None
    generator_cpu_us_per_request: float
    ceiling_images_per_second: float
    errors: int
    latency_percentiles_ms: dict[str, float]
    """Latency at LATENCY_PERCENTILES (keys: "50", "90", "99.9", ...), for plots."""

    @property
    def share_of_ceiling(self) -> float:
        return self.images_per_second / self.ceiling_images_per_second


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


@dataclass(frozen=True)
class Target:
    """The served model under load, and the server process when bench started it."""

    client: AxonClient
    model: str
    version: str
    input_shape: tuple[int, ...]
    server_pid: int | None


def measure(target: Target, scenario: Scenario, generator: str, *, seconds: float,
            ceiling: float) -> Measurement:
    """Warm up, then run ``scenario`` for ``seconds`` and read the server's counters."""
    client, model, server_pid = target.client, target.model, target.server_pid
    batch = np.random.default_rng(0).random((scenario.images, *target.input_shape),
                                            dtype=np.float32)
    version = target.version
    expected = client.infer(model, batch, version=version)  # a valid request: real outputs
    assert len(next(iter(expected.values()))) == scenario.images
    body = request_bytes(model, batch, version)
    run = GENERATORS[generator]
    address = client.address
    run(address, body, scenario.callers, min(1.0, seconds))  # warm-up, not measured
    (before,) = client.statistics(model, version)
    cpu_before = process_cpu_seconds(server_pid) if server_pid else 0.0
    result = run(address, body, scenario.callers, seconds)
    cpu_after = process_cpu_seconds(server_pid) if server_pid else 0.0
    (after,) = client.statistics(model, version)
    executions = after.execution_count - before.execution_count
    failed = after.inference_stats.fail.count - before.inference_stats.fail.count
    succeeded = after.inference_stats.success.count - before.inference_stats.success.count
    # Requests in flight when the generator stops are cancelled, which the server does not
    # count as failures; anything else failing means the numbers measure errors.
    if failed or succeeded < result.requests:
        raise LoadError(f"the server counted {succeeded} successes and {failed} failures for "
                           f"{result.requests} requests sent: the load is not what it seems")
    return Measurement(
        generator=generator, callers=scenario.callers, images_per_request=scenario.images,
        requests_per_second=result.requests_per_second,
        images_per_second=result.requests_per_second * scenario.images,
        p50_ms=result.percentile_ms(50), p90_ms=result.percentile_ms(90),
        p99_ms=result.percentile_ms(99), max_ms=result.percentile_ms(100),
        latency_percentiles_ms={f"{q:g}": result.percentile_ms(q)
                                for q in LATENCY_PERCENTILES},
        images_per_execution=(after.inference_count - before.inference_count) / max(executions, 1),
        server_cpu_us_per_request=(cpu_after - cpu_before) / succeeded * 1e6
        if server_pid else None,
        generator_cpu_us_per_request=result.generator_cpu_seconds / max(result.requests, 1) * 1e6,
        ceiling_images_per_second=ceiling, errors=result.errors)


def table(rows: Sequence[Measurement]) -> str:
    lines = ["| load generator | callers | images/request | requests/s | images/s | p50 ms | "
             "p90 ms | p99 ms | max ms | errors | images/execution | server CPU µs/request | "
             "generator CPU µs/request | onnxruntime ceiling images/s | share of ceiling |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: | ---: |"]
    for m in rows:
        cpu = "—" if m.server_cpu_us_per_request is None else f"{m.server_cpu_us_per_request:.0f}"
        lines.append(
            f"| {m.generator} | {m.callers} | {m.images_per_request} | "
            f"{m.requests_per_second:,.0f} | {m.images_per_second:,.0f} | {m.p50_ms:.2f} | "
            f"{m.p90_ms:.2f} | {m.p99_ms:.2f} | {m.max_ms:.2f} | {m.errors} | "
            f"{m.images_per_execution:.1f} | {cpu} | "
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
        axis.plot(range(len(ticks)), [m.latency_percentiles_ms[t] for t in ticks], marker="o",
                  label=f"{m.generator} {m.callers}x{m.images_per_request}: "
                        f"{m.images_per_second:,.0f} images/s")
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
    """The issue's targets, checked against each load generator's rows (where measured)."""
    lines = []
    for m in rows:
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
    scenario: Scenario
    variant: list[Measurement]
    baseline: list[Measurement]


def save_pairs(pairs: Sequence[Pair], path: Path) -> None:
    """Every round of an A/B run, both sides, as JSON."""
    path.write_text(json.dumps([
        {"generator": p.generator, "callers": p.scenario.callers, "images": p.scenario.images,
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
             "| load generator | callers x images | images/s baseline | images/s variant | "
             "throughput ratio | p99 ms baseline | p99 ms variant | server CPU µs/request "
             "baseline | variant | CPU ratio |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for pair in pairs:
        rate = [_median([m.images_per_second for m in side])
                for side in (pair.baseline, pair.variant)]
        p99 = [_median([m.p99_ms for m in side]) for side in (pair.baseline, pair.variant)]
        cpu = [_median([m.server_cpu_us_per_request or 0.0 for m in side])
               for side in (pair.baseline, pair.variant)]
        lines.append(
            f"| {pair.generator} | {pair.scenario.callers}x{pair.scenario.images} | "
            f"{rate[0]:,.0f} | {rate[1]:,.0f} | {rate[1] / rate[0]:.3f} | {p99[0]:.2f} | "
            f"{p99[1]:.2f} | {cpu[0]:.1f} | {cpu[1]:.1f} | "
            f"{cpu[1] / cpu[0] if cpu[0] else float('nan'):.3f} |")
    return "\n".join(lines)
