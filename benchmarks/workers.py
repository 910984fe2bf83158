"""Worker processes against one: ``axon serve --workers N`` for each N, in one run.

    python -m axon.benchmarks.workers FOLDER [--workers 1,2] [--model mnist-compact]
        [--rounds 3] [--seconds 5]

For each worker count, in alternating order round by round (1, 2, then 2, 1, ...) and with one
server alive at a time, a real server is started and measured under:

- h2load, 64 single-image callers on 64 connections (``64x1@64``), and 16 callers of 64 images
  (``16x64``);
- the python generator (grpc.aio), 64 single-image callers over the clients' default number of
  connections;
- ``axon classify`` over FOLDER (e.g. 10,000 exported MNIST digits), timed from its start to its
  exit, with its default settings;

and its memory is read per worker process (their ``process_resident_memory_bytes``). A timed run
during which the host stole more than 5 % of the machine's CPU time is repeated, as ``axon
bench`` does, and each row says the most steal among the runs kept. Medians of the rounds are
printed with each count's ratio to the first one and the targets for two workers against one
(docs/performance.md, "Worker processes"). Every load generator shares the machine
with the server, as a client on the same host would. On many cores, give h2load more threads
than its default one with ``AXON_BENCH_H2LOAD_THREADS`` (4 on the 16-core machine of
docs/performance.md's "Many cores and a GPU").
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from axon.benchmarks.bench import measure
from axon.benchmarks.classify_limit import ClassifyRun, classify_against, least_stolen_run
from axon.benchmarks.scenarios import Scenario
from axon.benchmarks.target import Target
from axon.client.file_stream import image_paths
from axon.client.server_process import ServerProcess, running_server
from axon.client.sync_client import AxonClient
from axon.cpus import cpus_label
from axon.markdown import LEFT, RIGHT, markdown_table

LOADS = (("h2load", "64x1@64"), ("h2load", "16x64"), ("python", "64x1"))
TARGETS = {"h2load 64x1@64": 1.4, "h2load 16x64": 1.3, "axon classify": 1.4}
"""Least throughput of two workers against one, per load (issue 15)."""


@dataclass(frozen=True)
class Round:
    """One server of ``workers`` workers, measured under every load."""

    workers: int
    images_per_second: dict[str, float]
    p99_ms: dict[str, float]
    server_cpu_us_per_image: dict[str, float]
    classify_client_cpu_us_per_image: float
    """What ``axon classify`` itself spent per image (on the cores it shares with the server)."""
    memory_mib_per_worker: list[float]
    supervisor_mib: float
    steal: dict[str, float]
    """Share of the machine's CPU time its host took during each load's kept run (a run above
    bench's limit is repeated, as ``bench.least_stolen`` does)."""


def measure_workers(workers: int, repository: Path, model: str, *, folder: Path, files: int,
                    seconds: float, serve_args: list[str]) -> Round:
    rates, p99s, cpus, steals = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp, running_server(
            repository, Path(tmp) / "server.log", "--models", model,
            "--workers", str(workers), *serve_args) as server:
        target = _target(server, model)
        try:
            for generator, scenario in LOADS:
                row = measure(target, Scenario.parse(scenario), generator, seconds=seconds,
                              ceiling=0.0)
                label = f"{generator} {scenario}"
                rates[label], p99s[label] = row.images_per_second, row.p99_ms
                cpus[label] = (row.server_cpu_us_per_request or 0.0) / \
                    (row.images_per_request or 1)
                steals[label] = row.steal
            classified: ClassifyRun = least_stolen_run(lambda: classify_against(
                server, folder, files, model, []))
            rates["axon classify"] = classified.images_per_second
            cpus["axon classify"] = classified.server_cpu_us_per_image
            steals["axon classify"] = classified.steal
            client_cpu = classified.client_cpu_us_per_image
            memory, supervisor = _memory(server, workers)
        finally:
            target.client.close()
    return Round(workers, rates, p99s, cpus, client_cpu, memory, supervisor, steals)


def _target(server: ServerProcess, model: str) -> Target:
    client = AxonClient(server.address)
    client.wait_ready()
    description = max((m for m in client.models() if m.name == model),
                      key=lambda m: int(m.version))
    metadata = client.model_metadata(model, description.version)
    image = (description.image_height, description.image_width, description.image_channels)
    return Target(client, model, description.version, tuple(metadata.inputs[0].shape[1:]),
                  image, server.process.pid)


def _memory(server: ServerProcess, workers: int) -> tuple[list[float], float]:
    """Resident MiB of each worker (of the one process when there is one), and of the
    supervisor (0 without one)."""


    assert server.metrics_port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                timeout=10) as page:
        text = page.read().decode()
    resident = [sample.value / 2**20 for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.name == "process_resident_memory_bytes"]
    if workers == 1:
        return resident, 0.0
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmRSS:"))
    return resident, rss_kib / 1024


def report(rounds: list[Round], counts: list[int]) -> list[str]:
    base = counts[0]
    labels = [f"{g} {s}" for g, s in LOADS] + ["axon classify"]

    def median(count: int, field: str, label: str) -> float:
        values: list[float] = [getattr(r, field)[label] for r in rounds if r.workers == count]
        return statistics.median(values)

    rows = []
    for label in labels:
        for count in counts:
            rate = median(count, "images_per_second", label)
            ratio = rate / median(base, "images_per_second", label)
            p99_cell = "" if label == "axon classify" else \
                f"{median(count, 'p99_ms', label):.1f}"
            most_stolen = max(r.steal[label] for r in rounds if r.workers == count)
            rows.append([label, count, f"{rate:,.0f}", f"{ratio:.2f}x", p99_cell,
                         f"{median(count, 'server_cpu_us_per_image', label):.1f}",
                         f"{most_stolen:.1%}"])
    lines = [f"medians of {len(rounds) // len(counts)} rounds, {cpus_label()}, one server "
             "at a time",
             markdown_table(["load", "workers", "images/s", f"vs {base} worker(s)", "p99 ms",
                             "server CPU µs/image", "most steal"],
                            [LEFT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT, RIGHT], rows)]
    def client_median(count: int) -> float:
        return statistics.median(r.classify_client_cpu_us_per_image for r in rounds
                                 if r.workers == count)

    client_cpu = ", ".join(f"{count} worker(s) {client_median(count):.0f}" for count in counts)
    lines.append(f"axon classify's own CPU µs/image (it shares the cores): {client_cpu}")
    memory_rows = []
    for count in counts:
        per_worker = [statistics.median(m) for m in
                      (r.memory_mib_per_worker for r in rounds if r.workers == count)]
        supervisor = statistics.median(r.supervisor_mib for r in rounds if r.workers == count)
        memory_rows.append([count, f"{statistics.median(per_worker):.0f}",
                            f"{supervisor:.0f}" if supervisor else "(none)"])
    lines.append(markdown_table(["workers", "resident MiB per worker", "supervisor MiB"],
                                [RIGHT, RIGHT, RIGHT], memory_rows))
    if base == 1 and 2 in counts:
        for label, least in TARGETS.items():
            ratio = median(2, "images_per_second", label) / median(1, "images_per_second",
                                                                  label)
            lines.append(f"{label}: 2 workers {ratio:.2f}x one (target >= {least}): "
                         f"{'met' if ratio >= least else 'MISSED'}")
        p99 = median(2, "p99_ms", "h2load 64x1@64") / median(1, "p99_ms", "h2load 64x1@64")
        lines.append(f"h2load 64x1@64 p99: 2 workers {p99:.2f}x one (target <= 1.0): "
                     f"{'met' if p99 <= 1.0 else 'MISSED'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="images for axon classify (PNG/JPEG)")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--model", default="mnist-compact")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve-args", default="",
                        help="more axon serve flags, e.g. '--providers cuda,cpu'")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.workers.split(",")]
    files = len(list(image_paths([str(args.folder)])))
    rounds = []
    for number in range(args.rounds):
        order = counts if number % 2 == 0 else counts[::-1]
        for count in order:
            rounds.append(measure_workers(count, args.model_repository, args.model,
                                          folder=args.folder, files=files,
                                          seconds=args.seconds,
                                          serve_args=shlex.split(args.serve_args)))
            shown = ", ".join(f"{label} {rate:,.0f}/s"
                              for label, rate in rounds[-1].images_per_second.items())
            print(f"round {number + 1}, {count} worker(s): {shown}", file=sys.stderr)
    print("\n\n".join(report(rounds, counts)))
    if args.json_out:
        args.json_out.write_text(json.dumps([asdict(r) for r in rounds], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
