"""Images at decode speed: ``axon classify`` over a folder of PNG/JPEG files, against what one
core can do with the same files, measured in the same run.

The single-core limit: Pillow decodes every file as training does (``load_image``) and
onnxruntime (one thread) runs the model on batches of 64, in one process pinned to one CPU,
with no gRPC. Then a real server and a real ``axon classify`` run over the same files on this
machine (both on every core), and the script prints images/s and CPU per image of each, their
ratios, and the targets (docs/performance.md): ``axon classify`` at least 0.8x the
single-core limit's images/s, the server's CPU per image at most 2x the limit's.

    python -m benchmarks.classify_limit FOLDER [--model mnist] [--model-repository DIR]
        [--rounds 3] [--classify-args '--batch 32']

Each round measures the limit, then classify; the medians are reported. A classify run during
which the host stole more than 5 % of the CPU time is run again (3 runs at most; the least stolen
is kept), and the report gives the most steal among the runs kept. (The limit is CPU time, in
which the kernel does not count stolen time.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from axon.benchmarks.bench import least_stolen, process_cpu_seconds
from axon.client.file_stream import image_paths
from axon.client.server_process import ServerProcess, running_server
from axon.cpus import cpus_label
from axon.image_formats import SERVED_FORMATS
from axon.markdown import LEFT, RIGHT, markdown_table
from axon.model_card import ModelCard
from axon.model_repository import MODEL_FILENAME, ModelRepository
from axon.preprocessing import load_image

LIMIT_BATCH = 64
THROUGHPUT_TARGET = 0.8
SERVER_CPU_TARGET = 2.0


@dataclass(frozen=True)
class Limit:
    """One core decoding with Pillow and running the model on batches of 64."""

    images: int
    decode_us_per_image: float
    model_us_per_image: float

    @property
    def cpu_us_per_image(self) -> float:
        return self.decode_us_per_image + self.model_us_per_image

    @property
    def images_per_second(self) -> float:
        return 1e6 / self.cpu_us_per_image


@dataclass(frozen=True)
class ClassifyRun:
    """``axon classify`` over the folder against a real server on this machine."""

    images: int
    seconds: float
    server_cpu_us_per_image: float
    client_cpu_us_per_image: float
    steal: float = 0.0
    """Share of the machine's CPU time its host took during the run."""

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def single_core_limit(folder: Path, model_path: Path, cpu: int = 0) -> Limit:
    """Measure the limit over ``folder``'s images in a child process pinned to ``cpu`` (its CPU
    time, not wall time: what one core spends per image)."""
    completed = subprocess.run(
        [sys.executable, "-m", "axon.benchmarks.classify_limit", "--measure-limit", str(cpu),
         str(model_path), str(folder)], capture_output=True, text=True, check=True)
    return Limit(**json.loads(completed.stdout))


def _measure_limit(cpu: int, model_path: Path, folder: Path) -> Limit:
    files = list(image_paths([str(folder)]))
    os.sched_setaffinity(0, {cpu})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    spec = ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map).preprocessing
    data = [path.read_bytes() for path in files]  # reading files is not decoding them
    started = time.process_time()
    pixels = [load_image(d, spec.height, spec.width, spec.color_mode, formats=SERVED_FORMATS)
              for d in data]
    decoded = time.process_time()
    name = session.get_inputs()[0].name
    batch = spec.apply(np.stack(pixels))  # normalising counts with the model: servers do it
    for start in range(0, len(batch), LIMIT_BATCH):
        session.run(None, {name: batch[start:start + LIMIT_BATCH]})
    ran = time.process_time()
    return Limit(len(files), (decoded - started) / len(files) * 1e6,
                 (ran - decoded) / len(files) * 1e6)


def classify_run(folder: Path, files: int, repository: Path, model: str,
                 classify_args: list[str]) -> ClassifyRun:
    """A server for the run, then ``axon classify`` over ``folder`` against it."""
    with tempfile.TemporaryDirectory() as tmp, running_server(
            repository, Path(tmp) / "server.log", "--models", model) as server:
        return classify_against(server, folder, files, model, classify_args)


def classify_against(server: ServerProcess, folder: Path, files: int, model: str,
                     classify_args: list[str]) -> ClassifyRun:
    """``axon classify`` over ``folder`` against ``server`` (timed from its start to its
    exit), with the server's and the client's CPU."""
    server_before = process_cpu_seconds(server.process.pid)
    client_before = _reaped_children_cpu()
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "axon.cli", "classify", str(folder), "--address",
         server.address, "--model", model, "--format", "csv", *classify_args],
        capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    client_cpu = _reaped_children_cpu() - client_before
    server_cpu = process_cpu_seconds(server.process.pid) - server_before
    if completed.returncode != 0:
        raise RuntimeError(f"axon classify failed ({completed.returncode}): "
                           f"{completed.stderr.strip()}")
    answered = len(completed.stdout.splitlines()) - 1  # less the CSV header
    if answered != files:
        raise RuntimeError(f"axon classify answered {answered} of {files} files")
    return ClassifyRun(files, seconds, server_cpu / files * 1e6, client_cpu / files * 1e6)


def _reaped_children_cpu() -> float:
    """CPU seconds of every child process this one has waited for (the server, still
    running, is not among them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def least_stolen_run(measure: Callable[[], ClassifyRun]) -> ClassifyRun:
    """``measure()``, repeated while the host steals CPU, as ``bench.least_stolen`` does; the
    run kept, with its steal."""
    run, steal, _ = least_stolen(measure)
    return replace(run, steal=steal)


def report(limits: list[Limit], runs: list[ClassifyRun]) -> list[str]:
    limit_rate = statistics.median(limit.images_per_second for limit in limits)
    limit_cpu = statistics.median(limit.cpu_us_per_image for limit in limits)
    decode = statistics.median(limit.decode_us_per_image for limit in limits)
    model = statistics.median(limit.model_us_per_image for limit in limits)
    rate = statistics.median(run.images_per_second for run in runs)
    server = statistics.median(run.server_cpu_us_per_image for run in runs)
    client = statistics.median(run.client_cpu_us_per_image for run in runs)
    throughput_ratio, cpu_ratio = rate / limit_rate, server / limit_cpu
    # Only classify's runs: the limit is CPU time, in which the kernel does not count the
    # time the host stole.
    most_stolen = max(run.steal for run in runs)
    return [
        f"medians of {len(runs)} rounds, {runs[0].images:,} images, {cpus_label()}; host CPU "
        f"steal at most {most_stolen:.1%} in a kept classify run",
        markdown_table(["", "images/s", "CPU µs/image"], [LEFT, RIGHT, RIGHT], [
            [f"single-core limit (Pillow decode {decode:.1f} µs + onnxruntime batch "
             f"{LIMIT_BATCH} {model:.1f} µs)", f"{limit_rate:,.0f}", f"{limit_cpu:.1f}"],
            ["axon classify (server)", f"{rate:,.0f}", f"{server:.1f}"],
            ["axon classify (client)", "", f"{client:.1f}"]]),
        f"throughput {throughput_ratio:.2f}x the single-core limit (target >= "
        f"{THROUGHPUT_TARGET}): {'met' if throughput_ratio >= THROUGHPUT_TARGET else 'MISSED'}",
        f"server CPU per image {cpu_ratio:.2f}x the limit's (target <= {SERVER_CPU_TARGET}): "
        f"{'met' if cpu_ratio <= SERVER_CPU_TARGET else 'MISSED'}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--classify-args", default="", help="extra `axon classify` flags")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    files = list(image_paths([str(args.folder)]))
    repository = ModelRepository(args.model_repository)
    version = max(repository.versions(args.model))
    path = repository.version_dir(args.model, version) / MODEL_FILENAME
    limits, runs = [], []
    for round_number in range(1, args.rounds + 1):
        limits.append(single_core_limit(args.folder, path))
        runs.append(least_stolen_run(lambda: classify_run(
            args.folder, len(files), args.model_repository, args.model,
            shlex.split(args.classify_args))))
        print(f"round {round_number}: limit {limits[-1].images_per_second:,.0f} images/s, "
              f"classify {runs[-1].images_per_second:,.0f} images/s", file=sys.stderr)
    print("\n".join(report(limits, runs)))
    if args.json_out:
        args.json_out.write_text(json.dumps({"limits": [asdict(x) for x in limits],
                                             "runs": [asdict(x) for x in runs]}, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure-limit":
        limit = _measure_limit(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        print(json.dumps(asdict(limit)))
    else:
        sys.exit(main())
