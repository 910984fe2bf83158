"""The GPU path, checked on a machine with an NVIDIA GPU and onnxruntime-gpu.

    python -m axon.benchmarks.gpu_check [--model mnist] [--model-repository model_repository]
        [--providers cuda,cpu] [--seconds 5]

It prints, and exits 1 when a check that must hold fails:

1. what this onnxruntime build offers, and the GPU as NVML names it;
2. onnxruntime alone: the model in Axon's session on the first requested provider (its
   provider options, server/runtime.py) against the CPU provider on the same random images
   (largest difference, agreeing top classes), onnxruntime's own defaults beside it, and
   whether each row's answer keeps its bits whatever batch it runs in (the batcher's promise on
   the CPU provider; tests/unit/test_batch_invariance.py);
3. a real ``axon serve --workers 1`` on those providers: the provider each model reports, the
   answers of lone and concurrent requests against the same run one at a time, the GPU series
   on ``/metrics``;
4. the same loads on that server and on one with ``--providers cpu``, one server at a time:
   1 caller of 1 image, 64 callers of 1 image, 16 callers of 64 images (h2load where installed).

The CPU build of onnxruntime has no GPU provider: there it says so after step 1 and stops.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from axon.benchmarks.bench import measure
from axon.benchmarks.common import pick_generator, served_target
from axon.benchmarks.scenarios import Scenario
from axon.model_repository import ModelRepository
from axon.server.gpu import load_nvml
from axon.server.providers import CPU_PROVIDER, provider_name
from axon.server.runtime import (
    ModelRuntime,
    SessionSettings,
    load_gpu_libraries,
    resolve_providers,
)

BATCH_SIZES = (1, 2, 3, 7, 64, 256)
LOADS = ("1x1", "64x1@64", "16x64")
TOLERANCE = 1e-4
"""Largest difference taken as the same answer: from the CPU provider's outputs (scaled by the
largest output where that is above 1), and between concurrent and lone answers."""


def describe_machine() -> list[str]:
    lines = [f"onnxruntime {ort.__version__}, providers offered: "
             f"{', '.join(ort.get_available_providers())}"]
    nvml = load_nvml()
    if nvml is None:
        return [*lines, "NVML: absent (no NVIDIA driver here)"]
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        lines.append(f"GPU {index}: {nvml.nvmlDeviceGetName(handle)}, "
                     f"{memory.total / 2**30:.0f} GiB, driver {nvml.nvmlSystemGetDriverVersion()}")
    return lines


def plain_session(path: Path, provider: str) -> ort.InferenceSession:
    """onnxruntime with its own defaults for ``provider`` (TF32 on, on the CUDA provider)."""
    return ort.InferenceSession(str(path), providers=list(resolve_providers([provider]).usable))


def compare_providers(path: Path, provider: str, rng: np.random.Generator,
                      ) -> tuple[list[str], bool]:
    """Axon's session on ``provider`` (server/runtime.py, its provider options) against the CPU
    provider, onnxruntime's own defaults beside it, and batch invariance on Axon's session."""
    axon = ModelRuntime(path, SessionSettings(providers=resolve_providers([provider]).usable))
    lines = [f"Axon's session asked for {provider}: runs on {axon.provider}"]
    if axon.provider != provider:
        return [*lines, f"FAILED: {provider} did not start"], False
    plain, cpu = plain_session(path, provider), plain_session(path, CPU_PROVIDER)
    name = cpu.get_inputs()[0].name
    images = rng.random((max(BATCH_SIZES), *axon.input.shape), dtype=np.float32)
    on_cpu = cpu.run(None, {name: images})
    ok = True
    for label, outputs in (("Axon's options", axon.run(images)),
                           ("onnxruntime's defaults", plain.run(None, {name: images}))):
        for spec, got, want in zip(axon.outputs, outputs, on_cpu, strict=True):
            gap = float(np.abs(got - want).max())
            same_top = float((got.argmax(1) == want.argmax(1)).mean())
            lines.append(f"{label}, {spec.name}: largest difference from the CPU provider "
                         f"{gap:.2e}, same top class for {same_top:.1%} of {len(images)} images")
            if label == "Axon's options":
                ok &= gap <= TOLERANCE * max(1.0, float(np.abs(want).max()))
    alone = np.concatenate([axon.run(images[i:i + 1])[0] for i in range(len(images))])
    for size in BATCH_SIZES:
        batched = np.concatenate([axon.run(images[i:i + size])[0]
                                  for i in range(0, len(images), size)])
        differing = int((batched != alone).any(axis=1).sum())
        lines.append(f"Axon's session, batches of {size}: {differing} of {len(images)} rows "
                     f"differ from the row run alone "
                     f"(largest {float(np.abs(batched - alone).max()):.2e})")
    return lines, ok


def check_server(repository: Path, model: str, providers: str, wanted: str,
                 rng: np.random.Generator) -> tuple[list[str], bool]:
    """A real server on ``providers``, the first of them ``wanted``: what it reports and what
    it answers."""
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        with served_target(repository, log_path, model, "--workers", "1",
                           "--providers", providers) as (server, target):
            client = target.client
            reported = {m.name: m.execution_provider for m in client.models()}
            lines = [f"axon serve --providers {providers}: {reported}"]
            ok = reported.get(model) == wanted
            images = rng.random((256, *target.input_shape), dtype=np.float32)
            one_by_one = np.concatenate([_probabilities(client.infer(model, images[i:i + 1]))
                                         for i in range(len(images))])
            with ThreadPoolExecutor(64) as pool:
                answers = list(pool.map(lambda i: _probabilities(
                    client.infer(model, images[i:i + 1])), range(len(images))))
            together = np.concatenate(answers)
            differing = int((together != one_by_one).any(axis=1).sum())
            lines.append(f"256 requests, 64 at a time: {differing} answers differ from the same "
                         f"request sent alone (largest {np.abs(together - one_by_one).max():.2e})")
            ok &= bool(np.abs(together - one_by_one).max() <= TOLERANCE)
            gpu_series = [line for line in _metrics(server.metrics_port).splitlines()
                          if line.startswith("axon_gpu")]
            lines += [f"/metrics: {line}" for line in gpu_series] or \
                ["/metrics: no axon_gpu series"]
        said = [line for line in log_path.read_text().splitlines()
                if "provider" in line or "preload" in line]
    return [*lines, *(f"log: {line}" for line in said)], ok


def _probabilities(outputs: dict[str, npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    return outputs.get("probabilities", next(iter(outputs.values())))


def _metrics(port: int | None) -> str:
    if port is None:
        return ""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        return str(page.read().decode())


def compare_loads(repository: Path, model: str, version: int, providers: str,
                  seconds: float) -> list[str]:
    generator = pick_generator("auto")
    lines = [f"loads ({generator}, {seconds:g} s each, one server at a time):"]
    for chosen in dict.fromkeys((providers, "cpu")):
        with tempfile.TemporaryDirectory() as tmp, served_target(
                repository, Path(tmp) / "server.log", model, "--workers", "1",
                "--providers", chosen) as (_, served):
            # Statistics of one version: bench reads the counters of what it loaded.
            target = replace(served, version=str(version))
            for scenario in LOADS:
                row = measure(target, Scenario.parse(scenario), generator, seconds=seconds,
                              ceiling=0.0)
                cpu = row.server_cpu_us_per_request or 0.0
                lines.append(
                    f"  --providers {chosen:<9} {scenario:<8} {row.images_per_second:>10,.0f} "
                    f"images/s  p50 {row.p50_ms:6.2f} ms  p99 {row.p99_ms:6.2f} ms  "
                    f"server CPU {cpu / row.images_per_request:7.1f} µs/image  "
                    f"{row.images_per_execution or 0:5.1f} images/execution")
            target.client.close()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--providers", default="cuda,cpu")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    first = provider_name(args.providers.split(",", maxsplit=1)[0])
    load_gpu_libraries([first])
    print("\n".join(describe_machine()), flush=True)
    if first not in ort.get_available_providers():
        print(f"{first} is not in this onnxruntime build: install onnxruntime-gpu "
              "(pip install '.[gpu]') on a machine with an NVIDIA GPU")
        return 1
    rng = np.random.default_rng(0)
    models = ModelRepository(args.model_repository)
    version = models.latest_version(args.model)
    if version is None:
        raise SystemExit(f"{args.model_repository}: no version of {args.model!r} (train one: "
                         "axon train)")
    lines, alone_ok = compare_providers(models.model_file(args.model, version), first, rng)
    print("\n".join(lines), flush=True)
    lines, served_ok = check_server(args.model_repository, args.model, args.providers, first,
                                    rng)
    print("\n".join(lines), flush=True)
    ok = alone_ok and served_ok
    print("\n".join(compare_loads(args.model_repository, args.model, version, args.providers,
                                  args.seconds)))
    print("every check held" if ok else "FAILED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
