"""What Axon's own Python costs per call, without gRPC: its ModelInfer handler against the naive
server's, in one process, on the same serialized request, in alternating rounds.

End-to-end runs on these machines move by 3-10 % between runs, more than the handler's whole
share of a call; in one process with nothing else running, a handler's cost per call repeats
within about a microsecond, so a trim of a few microseconds shows (docs/performance.md, "Where
the rest of the gap is").

    python -m axon.benchmarks.handler_cost [--model mnist-compact] [--model-repository DIR]
        [--images 1,64] [--calls 2000] [--rounds 5]

Axon's handler is the one the server registers: the transport edge (metrics, drain, error
mapping), the model lookup, the request checks, the batcher (one request at a time on an idle
loop takes its inline path), statistics and the response. The naive server's parses, runs
onnxruntime inline and builds its response. Each gets the request as bytes, parsed by the
parser its server registers (Axon's reads a known head without protobuf,
server/infer_requests.py; the naive server's is protobuf's), and serializes its response, as
gRPC would; their answers are checked equal. Reported per request size: onnxruntime alone (as
Axon calls it), each handler (the best round's mean: the least disturbed), Axon's extra
microseconds and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from prometheus_client import CollectorRegistry

from axon import __version__
from axon.benchmarks.naive_server import NaiveServicer
from axon.client.common import infer_request
from axon.markdown import RIGHT, markdown_table
from axon.model_repository import MODEL_FILENAME, ModelRepository
from axon.protocol import open_inference_pb2 as pb
from axon.server.app import INFERENCE_SERVICE
from axon.server.config import load_settings
from axon.server.data_plane import DataPlane
from axon.server.drain import Drain
from axon.server.infer_requests import InferRequestReader
from axon.server.metrics import Metrics
from axon.server.model_manager import ModelManager
from axon.server.runtime import SessionSettings
from axon.server.servicers.inference import InferenceServicer
from axon.server.status import guard
from axon.server.version_policy import VersionPolicy

Handler = Callable[[Any, Any], Awaitable[pb.ModelInferResponse | bytes]]
"""A servicer's ModelInfer: a parsed request and a context in, the response out."""
BytesHandler = Callable[[bytes, Any], Awaitable[pb.ModelInferResponse | bytes]]
"""The same, behind its server's request parser."""
"""A ModelInfer handler; Axon's answers with the response serialized (server/wire.py), the
naive server's with a message gRPC then serializes."""


class HandlerFailedError(RuntimeError):
    """A handler answered with an error status, or the two handlers' answers differ."""


class _Context:
    """What a handler reads of a unary call with no deadline; an abort is a failure here."""

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise HandlerFailedError(f"{code.name}: {details}")


@dataclass(frozen=True)
class Cost:
    images: int
    onnxruntime_us: float
    naive_us: float
    axon_us: float

    @property
    def extra_us(self) -> float:
        return self.axon_us - self.naive_us

    @property
    def ratio(self) -> float:
        return self.axon_us / self.naive_us


async def measure(repository: Path, model: str, sizes: Sequence[int], calls: int,
                  rounds: int) -> list[Cost]:
    """Each size's cost per call: onnxruntime alone, the naive handler and Axon's."""
    metrics = Metrics(CollectorRegistry(), server_version=__version__)
    # The batching a served model gets (the server's defaults, AXON_* settings, config.json),
    # on onnxruntime's CPU provider with one thread, as the naive server runs: the comparison
    # is of the handlers' Python, not of execution providers.
    models = ModelManager(ModelRepository(repository), VersionPolicy(), SessionSettings(),
                          load_settings().batching, observer=metrics)
    await models.load(model)
    served = models.get(model)
    # Each handler behind the request parser its server registers, so both parse as in a
    # server: Axon's reads a known head without protobuf (server/infer_requests.py).
    axon = _from_bytes(InferRequestReader(), guard(
        InferenceServicer(DataPlane(models), metrics=metrics), INFERENCE_SERVICE, metrics,
        Drain()).ModelInfer)
    model_file = repository / model / str(served.version) / MODEL_FILENAME
    naive = _from_bytes(pb.ModelInferRequest.FromString,
                        NaiveServicer(str(model_file), model).ModelInfer)  # type: ignore[abstract]
    rng = np.random.default_rng(0)
    costs = []
    try:
        for images in sizes:
            batch = rng.random((images, *served.item_shape), dtype=np.float32)
            body = infer_request(model, batch).SerializeToString()
            await _check_same_answers(axon, naive, body)
            best = {"onnxruntime": float("inf"), "naive": float("inf"), "axon": float("inf")}
            for round_ in range(rounds):
                order = [("naive", naive), ("axon", axon)]
                for name, handler in order if round_ % 2 == 0 else order[::-1]:
                    best[name] = min(best[name], await _per_call_us(handler, body, calls))
                best["onnxruntime"] = min(best["onnxruntime"],
                                          _runtime_per_call_us(served.runtime.run, batch, calls))
            costs.append(Cost(images, best["onnxruntime"], best["naive"], best["axon"]))
    finally:
        await models.close()
    return costs


def _from_bytes(parse: Callable[[bytes], Any], handler: Handler) -> BytesHandler:
    async def parse_and_handle(body: bytes, context: Any) -> Any:
        return await handler(parse(body), context)
    return parse_and_handle


async def _check_same_answers(axon: BytesHandler, naive: BytesHandler, body: bytes) -> None:
    answers = []
    for handler in (axon, naive):
        answer = await handler(body, _Context())
        response = pb.ModelInferResponse.FromString(answer) if isinstance(answer, bytes) \
            else answer
        answers.append([np.frombuffer(raw, np.float32) for raw in response.raw_output_contents])
    if len(answers[0]) != len(answers[1]) or not all(
            np.array_equal(a, n) for a, n in zip(*answers, strict=False)):
        raise HandlerFailedError("Axon's and the naive server's answers differ")


async def _per_call_us(handler: BytesHandler, body: bytes, calls: int) -> float:
    context = _Context()
    started = time.perf_counter()
    for _ in range(calls):
        response = await handler(body, context)
        if not isinstance(response, bytes):  # as gRPC would before sending it
            response.SerializeToString()
    return (time.perf_counter() - started) / calls * 1e6


def _runtime_per_call_us(run: Callable[[Any], object], batch: Any, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        run(batch)
    return (time.perf_counter() - started) / calls * 1e6


def report(costs: Sequence[Cost], model: str, calls: int, rounds: int) -> str:
    rows = [[f"{c.images}", f"{c.onnxruntime_us:.1f}", f"{c.naive_us:.1f}", f"{c.axon_us:.1f}",
             f"{c.extra_us:+.1f}", f"{c.ratio:.2f}x"] for c in costs]
    table = markdown_table(
        ["images per request", "onnxruntime alone µs", "naive handler µs", "Axon handler µs",
         "Axon extra µs", "Axon / naive"], [RIGHT] * 6, rows)
    return (f"{model}: ModelInfer handlers without gRPC, {calls} calls per round, best of "
            f"{rounds} alternating rounds\n{table}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m axon.benchmarks.handler_cost",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default="mnist-compact")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--images", default="1,64",
                        help="request sizes, comma-separated (default 1,64)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(size) for size in args.images.split(",")]
    except ValueError:
        parser.error(f"--images must be whole numbers separated by commas, got {args.images!r}")
    if any(size < 1 for size in sizes) or args.calls < 1 or args.rounds < 1:
        parser.error("--images, --calls and --rounds must be at least 1")
    if not (args.model_repository / args.model).is_dir():
        parser.error(f"no model {args.model!r} in {args.model_repository} (train it first: "
                     "axon train, or make bench)")
    try:
        costs = asyncio.run(measure(args.model_repository, args.model, sizes, args.calls,
                                    args.rounds))
    except HandlerFailedError as exc:
        print(f"handler_cost: {exc}", file=sys.stderr)
        return 1
    print(report(costs, args.model, args.calls, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
