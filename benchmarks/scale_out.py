"""Scale-out benchmark: throughput and p99 through nginx with 1, 2 and 3 replicas, against one
replica called directly, and where the CPU goes (replicas, proxy, load generator).

    python -m axon.benchmarks.scale_out --model mnist-compact --model-repository model_repository

Everything runs on this machine: replicas, nginx (deploy/nginx/nginx.conf, upstreams rewritten
to loopback) and h2load share its cores, so the numbers say what one more replica buys *here*
and what the proxy costs per request; the capacity model in docs/performance.md turns them into
requests/s per core.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from axon.benchmarks.bench import process_cpu_seconds
from axon.benchmarks.common import machine_cpu_seconds
from axon.benchmarks.loadgen import Call, LoadResult, run_h2load
from axon.benchmarks.nginx_process import NginxProcess, loopback_config
from axon.benchmarks.scenarios import Scenario
from axon.client.common import infer_request
from axon.client.server_process import ServerProcess, free_port, start_server
from axon.client.sync_client import AxonClient
from axon.cpus import cpus_label
from axon.markdown import LEFT, RIGHT, markdown_table

METHOD = "/inference.GRPCInferenceService/ModelInfer"
LAYOUTS = (("direct", 1), ("nginx", 1), ("nginx", 2), ("nginx", 3))


@dataclass(frozen=True)
class Row:
    layout: str
    replicas: int
    scenario: str
    requests_per_second: float
    images_per_second: float
    p50_ms: float
    p99_ms: float
    replica_cpu_us: float
    """Server CPU per request, all replicas together."""
    proxy_cpu_us: float
    generator_cpu_us: float
    machine_busy: float
    """Share of all cores busy during the run (everything on the machine)."""
    host_steal: float
    """Share of the machine's CPU time its host took during the run."""


@contextlib.contextmanager
def layout(kind: str, replicas: int, repository: Path, model: str,
           folder: Path) -> Iterator[tuple[str, list[ServerProcess], NginxProcess | None]]:
    # One worker each: the replicas this models are the one-core pods of deploy/kubernetes
    # (AXON_WORKERS=1), which an autoscaler adds; --workers auto would give each replica every
    # core of the machine.
    servers = [start_server(repository, folder / f"replica-{n}.log", "--models", model,
                            "--workers", "1")
               for n in range(replicas)]
    proxy = None
    try:
        if kind == "nginx":
            port = free_port()
            proxy = NginxProcess(loopback_config([s.port for s in servers], port, folder), port)
        for server in servers:
            with AxonClient(server.address) as client:
                client.wait_ready()
        yield (proxy.address if proxy else servers[0].address), servers, proxy
    finally:
        if proxy is not None:
            proxy.stop()
        for server in servers:
            server.stop()


def successes(servers: list[ServerProcess], model: str) -> int:
    total = 0
    for server in servers:
        with AxonClient(server.address) as client:
            total += sum(s.inference_stats.success.count for s in client.statistics(model))
    return total


def measure(address: str, servers: list[ServerProcess], proxy: NginxProcess | None, *,
            model: str, scenario: Scenario,
            seconds: float) -> tuple[LoadResult, dict[str, float]]:
    batch = np.random.default_rng(0).random((scenario.images, 784), dtype=np.float32)
    call = Call(address, METHOD, infer_request(model, batch).SerializeToString())
    run_h2load(call, scenario, 1.0)  # warm-up: connections, batch sizes, caches
    before = successes(servers, model)
    pids = [s.process.pid for s in servers]
    proxy_pids = proxy.pids() if proxy else []
    cpu = [process_cpu_seconds(p) for p in pids]
    proxy_cpu = [process_cpu_seconds(p) for p in proxy_pids]
    machine = machine_cpu_seconds()
    result = run_h2load(call, scenario, seconds)
    machine_after = machine_cpu_seconds()
    answered = successes(servers, model) - before
    if result.errors or answered < result.succeeded:
        raise SystemExit(f"{address}: {result.errors} errors, the servers counted {answered} "
                         f"successes for {result.succeeded} answers: the load is not what it "
                         "seems")
    requests = max(result.succeeded, 1)
    return result, {
        "replica": sum(process_cpu_seconds(p) - c for p, c in zip(pids, cpu, strict=True)),
        "proxy": sum(process_cpu_seconds(p) - c for p, c in zip(proxy_pids, proxy_cpu,
                                                                strict=True)),
        "generator": result.generator_cpu_seconds,
        "busy": (machine_after[0] - machine[0]) / max(machine_after[1] - machine[1], 1e-9),
        "steal": (machine_after[2] - machine[2]) / max(machine_after[1] - machine[1], 1e-9),
        "requests": requests,
    }


def run(args: argparse.Namespace) -> list[Row]:
    rows = []
    scenarios = [Scenario.parse(s) for s in args.scenarios.split(",")]
    for kind, replicas in LAYOUTS:
        with tempfile.TemporaryDirectory() as tmp, \
                layout(kind, replicas, args.model_repository, args.model, Path(tmp)) as (
                    address, servers, proxy):
            for scenario in scenarios:
                result, cpu = measure(address, servers, proxy, model=args.model,
                                      scenario=scenario, seconds=args.seconds)
                per = 1e6 / cpu["requests"]
                row = Row(kind, replicas, scenario.label, result.requests_per_second,
                          result.requests_per_second * scenario.images,
                          result.percentile_ms(50), result.percentile_ms(99),
                          cpu["replica"] * per, cpu["proxy"] * per, cpu["generator"] * per,
                          cpu["busy"], cpu["steal"])
                print(f"  {kind} x{replicas} {scenario.label}: {row.images_per_second:,.0f} "
                      f"images/s, p99 {row.p99_ms:.1f} ms", flush=True)
                rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    header = ["layout", "replicas", "load", "requests/s", "images/s", "p50 ms", "p99 ms",
              "replica CPU µs/req", "nginx CPU µs/req", "h2load CPU µs/req", "machine busy",
              "host steal"]
    return markdown_table(header, [LEFT, RIGHT, LEFT, *[RIGHT] * 9], ([
        r.layout, r.replicas, r.scenario, f"{r.requests_per_second:,.0f}",
        f"{r.images_per_second:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
        f"{r.replica_cpu_us:.0f}", f"{r.proxy_cpu_us:.0f}", f"{r.generator_cpu_us:.0f}",
        f"{r.machine_busy:.0%}", f"{r.host_steal:.1%}"] for r in rows))


def ratios(rows: list[Row]) -> list[str]:
    """Throughput of each layout against one replica called directly, per load."""
    lines = []
    for scenario in dict.fromkeys(r.scenario for r in rows):
        base = next(r for r in rows if r.scenario == scenario and r.layout == "direct")
        for r in rows:
            if r.scenario == scenario and r.layout == "nginx":
                lines.append(f"{scenario}: nginx x{r.replicas} / direct x1 = "
                             f"{r.images_per_second / base.images_per_second:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist-compact")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--scenarios", default="64x1,16x64",
                        help="closed-loop CALLERSxIMAGES loads (h2load)")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"{cpus_label()}; replicas, nginx and h2load share them", flush=True)
    rows = run(args)
    print(table(rows))
    print("\n".join(ratios(rows)))


if __name__ == "__main__":
    main()
