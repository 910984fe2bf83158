"""Which HTTP server carries Axon's REST binding: the measurement behind docs/performance.md.

Both candidates run on the event loop gRPC uses (the batchers serve one loop), in a server
process built exactly as ``axon serve`` builds it, with the same routes, edge, codec and models;
only the HTTP server under them differs:

- ``aiohttp``: aiohttp's low-level server (no router, no middleware), as Axon ships it;
- ``starlette``: uvicorn (httptools parser) running a Starlette app, one catch-all route;
- ``asgi``: uvicorn running a bare ASGI callable with Starlette's Request and Response only
  (what Starlette's routing costs, by difference).

``python -m axon.benchmarks.http_servers --model mnist-compact`` starts one server per
candidate and loads each with h2load over HTTP/1.1 (a connection per caller), in alternating
rounds, with JSON tensors of 1 and 64 images; it prints requests/s and the server's CPU per
request, and each candidate's ratio to aiohttp's.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axon.benchmarks.bench import median, process_cpu_seconds
from axon.benchmarks.loadgen import Call, run_h2load
from axon.benchmarks.scenarios import Scenario
from axon.cpus import cpus_label
from axon.markdown import LEFT, RIGHT, markdown_table
from axon.server.app import AxonServer, build_server
from axon.server.config import ServerSettings, load_settings
from axon.server.http.edge import HttpEdge, Limits
from axon.server.http.router import HttpResponse, Router
from axon.server.http.routes import Routes
from axon.server.http.server import start_http
from axon.server.http.status import BodyTooLargeError

FRAMEWORKS = ("aiohttp", "starlette", "asgi")
_PORT = re.compile(r"^port (\d+)$", re.MULTILINE)


def _edge(running: AxonServer, settings: ServerSettings) -> HttpEdge:
    routes = Routes(running.plane, running.decoder, max_image_pixels=settings.max_image_pixels,
                    max_image_bytes=settings.max_image_bytes)
    return HttpEdge(Router(routes.table()), running.drain,
                    Limits(settings.max_message_bytes, settings.max_image_bytes),
                    metrics=running.metrics)


class _StarletteBody:
    """A Starlette request's body as the edge reads it (no timeout: a benchmark)."""

    def __init__(self, request: Any) -> None:
        self._request = request
        length = request.headers.get("content-length")
        self.declared = int(length) if length and length.isdigit() else None
        self.present = bool(self.declared) or "transfer-encoding" in request.headers

    async def read(self, limit: int) -> bytes:
        body: bytes = await self._request.body()
        if len(body) > limit:
            raise BodyTooLargeError(f"the body is more than {limit:,} bytes")
        return body


def _starlette_handler(edge: HttpEdge) -> Callable[[Any], Awaitable[Any]]:
    from starlette.responses import Response

    async def handle(request: Any) -> Any:
        answer: HttpResponse = await edge.answer(
            request.method, request.scope["raw_path"].decode("latin-1"), request.query_params,
            request.headers, _StarletteBody(request))
        return Response(answer.body, status_code=answer.status, headers=answer.headers,
                        media_type=answer.content_type)

    return handle


def _asgi_app(edge: HttpEdge, routed: bool) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    handle = _starlette_handler(edge)
    if routed:
        return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        response = await handle(Request(scope, receive))
        await response(scope, receive, send)

    return app


async def _serve(framework: str, settings: ServerSettings) -> None:
    running = await build_server(settings)
    edge = _edge(running, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if framework == "aiohttp":
        http = await start_http(edge, running.drain, "127.0.0.1:0", body_timeout=30)
        print(f"port {http.port}", flush=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await http.close(1)
    else:
        import uvicorn

        config = uvicorn.Config(_asgi_app(edge, framework == "starlette"), host="127.0.0.1",
                                port=0, loop="none", http="httptools", lifespan="off",
                                access_log=False, log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())  # its own SIGTERM handler ends it
        while not server.started:
            await asyncio.sleep(0.01)
        print(f"port {server.servers[0].sockets[0].getsockname()[1]}", flush=True)
        await task
    await running.stop(1)


@dataclass
class _Candidate:
    framework: str
    process: subprocess.Popen[bytes]
    address: str


@contextmanager
def _candidate(framework: str, repository: Path, model: str, log: Path) -> Iterator[_Candidate]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "axon.benchmarks.http_servers", "serve", framework,
             str(repository), model], stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            found = _PORT.search(log.read_text(errors="replace"))
            if found or process.poll() is not None:
                break
            time.sleep(0.05)
        if not found:
            raise RuntimeError(f"{framework} did not start:\n{log.read_text()}")
        yield _Candidate(framework, process, f"127.0.0.1:{found[1]}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def _request(images: int, model: str) -> tuple[str, bytes, tuple[tuple[str, str], ...]]:
    import json

    import numpy as np

    batch = np.random.default_rng(0).random((images, 784), dtype=np.float32)
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                   "shape": list(batch.shape),
                                   "data": batch.ravel().tolist()}]}).encode()
    return f"/v2/models/{model}/infer", body, (("Content-Type", "application/json"),)


def compare(args: argparse.Namespace) -> str:
    """Alternating rounds of every scenario on every candidate; a markdown table."""
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    scenarios = [Scenario(images, callers=args.callers) for images in (1, 64)]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        candidates = [stack.enter_context(_candidate(
            f, args.model_repository, args.model, Path(tmp) / f"{f}.log")) for f in FRAMEWORKS]
        for scenario in scenarios:
            path, body, headers = _request(scenario.images, args.model)
            for round_index in range(args.rounds):
                order = candidates if round_index % 2 == 0 else candidates[::-1]
                for candidate in order:
                    call = Call(candidate.address, path, body, http=True, headers=headers)
                    run_h2load(call, scenario, 1.0)  # warm up
                    before = process_cpu_seconds(candidate.process.pid)
                    result = run_h2load(call, scenario, args.seconds)
                    cpu = process_cpu_seconds(candidate.process.pid) - before
                    if result.errors:
                        raise RuntimeError(f"{candidate.framework}: {result.errors_by_code}")
                    results.setdefault((scenario.label, candidate.framework), []).append(
                        (result.requests_per_second, cpu / max(result.succeeded, 1) * 1e6))
                    print(f"round {round_index + 1} {scenario.label} {candidate.framework}: "
                          f"{result.requests_per_second:,.0f} requests/s", file=sys.stderr)
    return _table(results, scenarios, args.rounds)


def _table(results: dict[tuple[str, str], list[tuple[float, float]]],
           scenarios: list[Scenario], rounds: int) -> str:
    title = (f"JSON inference, h2load --h1, a connection per caller, medians of {rounds} "
             f"alternating rounds, {cpus_label()}")
    rows = []
    for scenario in scenarios:
        base_rate = median([r for r, _ in results[(scenario.label, "aiohttp")]])
        base_cpu = median([c for _, c in results[(scenario.label, "aiohttp")]])
        for framework in FRAMEWORKS:
            rate = median([r for r, _ in results[(scenario.label, framework)]])
            cpu = median([c for _, c in results[(scenario.label, framework)]])
            rows.append([scenario.label, framework, f"{rate:,.0f}", f"{cpu:.0f}",
                         f"{rate / base_rate:.2f}", f"{cpu / base_cpu:.2f}"])
    return title + "\n" + markdown_table(
        ["scenario", "server", "requests/s", "server CPU µs/request", "requests/s ratio",
         "CPU/request ratio"], [LEFT, LEFT, *[RIGHT] * 4], rows)


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        framework, repository, model = sys.argv[2:5]
        settings = load_settings(model_repository=Path(repository), models=(model,),
                                 address="127.0.0.1:0", http=False,
                                 metrics_address="127.0.0.1:0")
        asyncio.run(_serve(framework, settings))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist-compact")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    print(compare(parser.parse_args()))


if __name__ == "__main__":
    main()
