"""Where a serving process's threads spend a load, next to the naive server's: per thread, CPU
time, time spent runnable but waiting for a CPU (the kernel's run queue), and context
switches, per request.

On 2 cores shared with the load generator, moving work to another thread gains nothing when
no core is free: the thread then runs on the event loop's core, and the loop, which bounds a
Python gRPC server, waits its turn. CPU time alone does not show that; the run-queue wait of
the loop's thread does (docs/performance.md, "Threads on a busier host"). This
benchmark starts Axon (one process, with ``--serve-args``) and the naive server on the same
model, loads each with h2load in alternating rounds, and reads ``/proc/PID/task/*/schedstat``
and ``status`` around every timed run.

    python -m axon.benchmarks.thread_times [--model mnist-compact] [--scenario 16x64]
        [--seconds 5] [--rounds 3] [--serve-args '--max-inline-ms 0']

Threads are named by the kernel's ``comm``: gRPC's core names its own (``event_engine``);
Python 3.11 names none of its threads, so the event loop's thread is told apart as the
process's first thread, and the others (onnxruntime's execution threads, gRPC's poller) are
summed under their ``comm``, the process's name (``python``).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from axon.benchmarks import head_to_head
from axon.benchmarks.bench import cpu_times
from axon.benchmarks.loadgen import Call, run_h2load
from axon.benchmarks.scenarios import parse_scenarios
from axon.markdown import LEFT, RIGHT, markdown_table

LOOP_THREAD = "event loop (first thread)"


@dataclass(frozen=True)
class ThreadTimes:
    """One thread's totals since it started."""

    role: str
    cpu_ns: int
    runqueue_ns: int
    voluntary: int
    involuntary: int


def thread_times(pid: int) -> dict[int, ThreadTimes]:
    """Thread id -> its totals, for every thread of ``pid`` alive now (one that ends while
    being read is left out)."""
    found: dict[int, ThreadTimes] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            cpu_ns, runqueue_ns = (int(f) for f in (task / "schedstat").read_text().split()[:2])
            switches = dict(line.split(":\t") for line in (task / "status").read_text()
                            .splitlines() if line.endswith(tuple("0123456789"))
                            and "ctxt_switches" in line)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        tid = int(task.name)
        found[tid] = ThreadTimes(LOOP_THREAD if tid == pid else comm, cpu_ns, runqueue_ns,
                                 int(switches.get("voluntary_ctxt_switches", 0)),
                                 int(switches.get("nonvoluntary_ctxt_switches", 0)))
    return found


Usage = dict[str, list[float]]
"""Role -> [CPU ns, run-queue ns, voluntary switches, involuntary switches], summed."""


def usage_between(before: dict[int, ThreadTimes], after: dict[int, ThreadTimes]) -> Usage:
    """What each role's threads used between two readings (a thread born in between counts
    from zero)."""
    used: Usage = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for tid, now in after.items():
        then = before.get(tid, ThreadTimes(now.role, 0, 0, 0, 0))
        totals = used[now.role]
        totals[0] += now.cpu_ns - then.cpu_ns
        totals[1] += now.runqueue_ns - then.runqueue_ns
        totals[2] += now.voluntary - then.voluntary
        totals[3] += now.involuntary - then.involuntary
    return dict(used)


def add(total: Usage, more: Usage) -> None:
    for role, values in more.items():
        mine = total.setdefault(role, [0.0, 0.0, 0.0, 0.0])
        for i, value in enumerate(values):
            mine[i] += value


def report(usage: dict[str, Usage], requests: dict[str, int], heading: str) -> str:
    """Per server and role: µs of CPU and of run-queue wait per request, switches per
    request; roles with under 1 µs of CPU per request are summed into one row, left out when
    that rounds to nothing."""
    rows = []
    for server, roles in usage.items():
        count = max(1, requests[server])
        ordered = sorted(roles.items(), key=lambda item: (item[0] != LOOP_THREAD, -item[1][0]))
        small = [0.0, 0.0, 0.0, 0.0]
        for role, (cpu, queued, voluntary, involuntary) in ordered:
            if cpu / 1e3 / count < 1:
                for i, value in enumerate((cpu, queued, voluntary, involuntary)):
                    small[i] += value
                continue
            rows.append([server, role, f"{cpu / 1e3 / count:,.0f}", f"{queued / 1e3 / count:,.0f}",
                         f"{voluntary / count:.2f}", f"{involuntary / count:.2f}"])
        if small[0] / 1e3 / count >= 0.5:
            rows.append([server, "other threads", f"{small[0] / 1e3 / count:,.0f}",
                         f"{small[1] / 1e3 / count:,.0f}", f"{small[2] / count:.2f}",
                         f"{small[3] / count:.2f}"])
        cpu = sum(values[0] for values in roles.values())
        rows.append([server, "**all threads**", f"**{cpu / 1e3 / count:,.0f}**", "", "", ""])
    table = markdown_table(["server", "thread", "CPU µs/request", "run-queue wait µs/request",
                            "voluntary switches/request", "involuntary switches/request"],
                           [LEFT, LEFT, RIGHT, RIGHT, RIGHT, RIGHT], rows)
    return f"{heading}\n{table}"


def measure(repository: Path, model: str, scenario_text: str, seconds: float, rounds: int,
            *, serve_args: Sequence[str]) -> tuple[dict[str, Usage], dict[str, int],
                                               list[tuple[str, float, float]]]:
    """Both servers under the same load in alternating rounds: each one's usage by role and
    requests over the timed runs, and each round's (server, requests/s, share of the
    machine's CPU the host stole during it)."""
    from axon.benchmarks.common import describe_target
    from axon.benchmarks.naive_server import running_naive_server
    from axon.client.server_process import running_server
    from axon.client.sync_client import AxonClient
    from axon.model_repository import ModelRepository

    scenario = parse_scenarios(scenario_text)[0]
    models = ModelRepository(repository)
    version = models.latest_version(model)
    if version is None:
        raise SystemExit(f"thread_times: model {model!r} has no version in {repository}")
    usage: dict[str, Usage] = {"axon": {}, "naive": {}}
    requests = {"axon": 0, "naive": 0}
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="axon-threads-") as folder, \
            running_server(repository, Path(folder) / "axon.log", "--models", model,
                           "--workers", "1", "--no-http", *serve_args) as axon_server, \
            running_naive_server(models.model_file(model, version), model) as naive_server, \
            AxonClient(axon_server.address) as client:
        client.wait_ready()
        axon_call = describe_target(client, model, axon_server.process.pid).call(
            "infer", scenario.images)
        calls = {"axon": axon_call,
                 "naive": Call(naive_server.address, axon_call.method, axon_call.body)}
        pids = {"axon": axon_server.process.pid, "naive": naive_server.process.pid}
        for round_ in range(rounds):
            order = ["naive", "axon"] if round_ % 2 == 0 else ["axon", "naive"]
            for name in order:
                run_h2load(calls[name], scenario, 1.0)  # warm-up, not counted
                steal_before, total_before = cpu_times()
                before = thread_times(pids[name])
                result = run_h2load(calls[name], scenario, seconds)
                after = thread_times(pids[name])
                steal_after, total_after = cpu_times()
                add(usage[name], usage_between(before, after))
                requests[name] += result.succeeded
                stolen = (steal_after - steal_before) / max(1, total_after - total_before)
                rows.append((name, result.requests_per_second, stolen))
    return usage, requests, rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m axon.benchmarks.thread_times",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    head_to_head.add_arguments(parser, scenario="16x64", scenario_help="16x64", rounds=3)
    parser.add_argument("--serve-args", default="", help="extra `axon serve` flags for Axon")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    head_to_head.check_arguments(parser, args)
    if not Path("/proc/thread-self/schedstat").exists():
        parser.error("needs /proc/PID/task/TID/schedstat: Linux with scheduler statistics "
                     "(CONFIG_SCHED_INFO)")
    usage, requests, rows = measure(args.model_repository, args.model, args.scenario,
                                    args.seconds, args.rounds,
                                    serve_args=shlex.split(args.serve_args))
    for name in ("axon", "naive"):
        mine = [row for row in rows if row[0] == name]
        print(f"{name}: {statistics.median(r[1] for r in mine):,.0f} requests/s (median of "
              f"{len(mine)} rounds)")
    print(head_to_head.steal_line(max(row[2] for row in rows)))
    flags = f", Axon with {args.serve_args}" if args.serve_args else ""
    print(report(usage, requests, f"{args.model}, {args.scenario}, h2load, {args.rounds} rounds "
                                  f"of {args.seconds:g} s each{flags}: per thread, every timed "
                                  "request"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
