"""Overload benchmark (issue 7): an open loop at about twice the server's measured capacity.

For each server configuration (``--serve-args``, one per configuration) it starts a real server,
measures its capacity (a closed loop of 64 single-image callers), then offers ModelInfer an open
loop in three phases: A at 0.5x capacity (the baseline), B at 2x for 20 s (the overload), C at
0.5x again (the recovery). A python probe sends a fixed share of the load all along and records
every call (status code, latency from its due time); h2load, a C client, sends the rest, so the
two cores go to the server rather than to the load generator. Server memory (VmRSS), CPU and
the server's own request counters are sampled every second.

It prints, per phase: offered and sent rates, the OK rate and the other codes the server
counted, requests the server's statistics never saw, the probe's errors by code and latency of
OK answers and of refusals, server CPU and memory; then memory over the overload and the
recovery time (defined where it is printed); last, one summary row per configuration.

    python -m benchmarks.overload --model mnist-compact --model-repository model_repository
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
import threading
import time
from pathlib import Path

from axon.benchmarks.common import (
    START_DELAY_S,
    Records,
    Watcher,
    measure_capacity,
    phased_load_child,
    pick_generator,
    served_target,
    wait_for_children,
)
from axon.benchmarks.h2load_bulk import BulkRun, run_bulk
from axon.benchmarks.loadgen import Call
from axon.benchmarks.overload_report import OverloadRun, PhasePlan, report, summary
from axon.benchmarks.phased_load import Phase

BULK_MAX_OUTSTANDING = 64_000
"""h2load's outstanding cap: high, so that it never holds requests back (and sends them late)
merely because the server is slow to answer."""


def plan(capacity: float, args: argparse.Namespace) -> list[PhasePlan]:
    phases, start = [], 0.0
    for name, multiple, seconds in (("A", args.low, args.baseline_seconds),
                                    ("B", args.high, args.overload_seconds),
                                    ("C", args.low, args.recovery_seconds)):
        phases.append(PhasePlan(name, multiple, multiple * capacity, start, seconds))
        start += seconds
    return phases


def run_probe(call: Call, phases: list[Phase], start: float, parts: int,
              tmp: Path) -> Records:
    """The python probe: ``parts`` child processes sharing the schedule; their records."""
    children = [phased_load_child(call, tmp, f"probe-{part}", ",".join(map(str, phases)),
                                  start, "--part", str(part), "--parts", str(parts))
                for part in range(parts)]
    wait_for_children(child for child, _ in children)
    return Records.concat([Records.load(out) for _, out in children])


def run_config(args: argparse.Namespace, flags: str, generator: str) -> OverloadRun:
    with tempfile.TemporaryDirectory() as tmp, served_target(
            args.model_repository, Path(tmp) / "server.log", args.model,
            *shlex.split(flags)) as (server, target):
        call = target.call("infer", args.images)  # checked once through the real client
        capacity = measure_capacity(call, generator, args.capacity_seconds)
        phases = plan(capacity, args)
        probe_rate = max(args.min_probe_rate, args.probe_share * capacity) \
            if generator == "h2load" else None
        probe_phases = [Phase(probe_rate if probe_rate is not None else p.rate, p.seconds)
                        for p in phases]
        start = time.monotonic() + START_DELAY_S
        bulk: list[BulkRun] = []

        def send_bulk(phase: PhasePlan, rate: float) -> None:
            # A thread per phase: an overloaded server may still be answering the last one.
            bulk.append(run_bulk(call, phase.name, rate=rate, seconds=phase.seconds,
                                 origin=start, offset=phase.start,
                                 max_outstanding=BULK_MAX_OUTSTANDING))

        threads = [threading.Thread(target=send_bulk, args=(p, p.rate - probe_rate))
                   for p in phases if probe_rate is not None and p.rate > probe_rate]
        with Watcher(server.process.pid, start, 1.0, server.metrics_port) as watcher:
            for thread in threads:
                thread.start()
            probe = run_probe(call, probe_phases, start, 1 if probe_rate else args.parts,
                              Path(tmp))
            for thread in threads:
                thread.join()
            # Samples after the last answer: what the server keeps, and what it gives back once
            # idle (server/memory_release.py).
            time.sleep(args.idle_seconds)
    return OverloadRun(flags, generator, args.images, capacity, phases, probe_rate, probe,
                       sorted(bulk, key=lambda b: b.phase), watcher.samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist-compact")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--serve-args", action="append",
                        help="extra `axon serve` flags of one configuration; repeat for more "
                        "(default: the defaults, then --max-queue-size 512)")
    parser.add_argument("--images", type=int, default=1, help="images per request")
    parser.add_argument("--generator", choices=("auto", "h2load", "python"), default="auto",
                        help="capacity and bulk load: h2load where installed (auto), else "
                        "python child processes carry the whole load")
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    parser.add_argument("--low", type=float, default=0.5, help="phases A and C, x capacity")
    parser.add_argument("--high", type=float, default=2.0, help="phase B, x capacity")
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument("--overload-seconds", type=float, default=20.0)
    parser.add_argument("--recovery-seconds", type=float, default=10.0)
    parser.add_argument("--idle-seconds", type=float, default=15.0,
                        help="memory is sampled this long after the last answer, with no load")
    parser.add_argument("--probe-share", type=float, default=0.1,
                        help="the python probe's rate, x capacity (with h2load)")
    parser.add_argument("--min-probe-rate", type=float, default=200.0)
    parser.add_argument("--parts", type=int, default=2,
                        help="python processes carrying the load without h2load")
    args = parser.parse_args()
    generator = pick_generator(args.generator)
    runs = []
    for flags in args.serve_args or ["", "--max-queue-size 512"]:
        runs.append(run_config(args, flags, generator))
        print(report(runs[-1]), "\n", flush=True)
    print(summary(runs))


if __name__ == "__main__":
    main()
