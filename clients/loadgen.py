"""Load generators: closed loops of concurrent callers, each waiting for its answer before the
next request. Two implementations of one contract, ``run(...) -> LoadResult``:

- ``python``: grpc.aio callers in a child process (what a Python service calling Axon costs);
- ``h2load``: nghttp2's C HTTP/2 load generator (Debian ``nghttp2-client``), which drives unary
  gRPC for a fraction of the CPU, leaving the cores to the server. It sees HTTP status only,
  not ``grpc-status``: ``axon bench`` checks the server's own counters instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt

from axon.errors import AxonError
from axon.protocol import open_inference_pb2_grpc as oip_grpc
from clients.client import DEFAULT_MESSAGE_BYTES, channel_options, infer_request

METHOD = "/inference.GRPCInferenceService/ModelInfer"


class LoadError(AxonError):
    """The load could not be generated, or did not do what it was meant to."""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    latencies_ms: npt.NDArray[np.float64]
    generator_cpu_seconds: float
    errors: int

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else 0.0


def request_bytes(model: str, batch: npt.NDArray[np.float32], version: str = "") -> bytes:
    return infer_request(model, batch, version=version).SerializeToString()


def h2load_available() -> bool:
    return shutil.which("h2load") is not None


def run_h2load(address: str, body: bytes, concurrency: int, seconds: float) -> LoadResult:
    """``concurrency`` streams in flight over up to 8 connections, for ``seconds``."""
    connections = min(concurrency, 8)
    while concurrency % connections:
        connections -= 1
    with tempfile.TemporaryDirectory() as tmp:
        body_path, log_path = Path(tmp) / "body", Path(tmp) / "log"
        body_path.write_bytes(b"\x00" + struct.pack(">I", len(body)) + body)
        before = _children_cpu()
        completed = subprocess.run(
            ["h2load", "-D", f"{max(1, round(seconds * 1000))}ms", "-c", str(connections),
             "-m", str(concurrency // connections), "-d", str(body_path),
             "-H", "content-type: application/grpc", "-H", "te: trailers",
             "--log-file", str(log_path), f"http://{address}{METHOD}"],
            capture_output=True, text=True, check=False)
        cpu = _children_cpu() - before
        if completed.returncode != 0:
            raise LoadError(f"h2load failed: {completed.stderr or completed.stdout}")
        rows = [line.split("\t") for line in log_path.read_text().splitlines() if line]
    statuses = np.array([int(r[1]) for r in rows])
    latencies = np.array([int(r[2]) / 1000 for r in rows], dtype=np.float64)
    return LoadResult(len(rows), seconds, latencies, cpu, int((statuses != 200).sum()))


def run_python(address: str, body: bytes, concurrency: int, seconds: float) -> LoadResult:
    """The grpc.aio load generator, in a child process so its CPU is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        body_path, out_path = Path(tmp) / "body", Path(tmp) / "out.json"
        body_path.write_bytes(body)
        before = _children_cpu()
        subprocess.run([sys.executable, "-m", "clients.loadgen", address, str(body_path),
                        str(concurrency), f"{seconds:g}", str(out_path)], check=True)
        cpu = _children_cpu() - before
        result = json.loads(out_path.read_text())
    return LoadResult(result["requests"], result["seconds"],
                      np.array(result["latencies_ms"], dtype=np.float64), cpu, result["errors"])


async def _closed_loop(address: str, body: bytes, concurrency: int,
                       seconds: float) -> dict[str, object]:
    from axon.protocol import open_inference_pb2 as oip

    request = oip.ModelInferRequest.FromString(body)
    async with grpc.aio.insecure_channel(
            address, options=channel_options(DEFAULT_MESSAGE_BYTES)) as channel:
        infer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        await infer(request)  # connect before the clock starts
        latencies: list[float] = []
        errors = 0
        stop = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal errors
            while (start := time.perf_counter()) < stop:
                try:
                    await infer(request)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append((time.perf_counter() - start) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {"requests": len(latencies), "seconds": elapsed, "latencies_ms": latencies,
            "errors": errors}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description="closed-loop grpc.aio load (used by bench)")
    parser.add_argument("address")
    parser.add_argument("body", type=Path, help="a serialized ModelInferRequest")
    parser.add_argument("concurrency", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(_closed_loop(args.address, args.body.read_bytes(), args.concurrency,
                                      args.seconds))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
