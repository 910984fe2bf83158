"""Where a single-image ModelInfer call's time goes in a serving process under load, piece by
piece, next to the naive server's: wall time inside each piece of the handler, live.

``handler_cost`` times the handlers in a tight loop, where their code and data stay in the
caches. In a server, gRPC's core runs between two calls and evicts them, and the same code
then costs about twice as much, some pieces more (docs/performance.md, "A lone call, live").
This benchmark starts Axon (one process) and the naive server with every piece of the
handler wrapped in a timer, loads each with h2load in alternating rounds, and prints the mean
wall time per call of each piece. The request's parse, which grpcio runs before the call, is
a row of its own in both servers (Axon's parser is its own, server/infer_requests.py).

    python -m axon.benchmarks.live_segments [--model mnist-compact] [--scenario 1x1]
        [--seconds 5] [--rounds 2]

The timers cost about 0.1 µs each, so the pieces add up to a little more than an untimed call.
With more than one caller, calls wait for their batch inside ``ServedModel.infer``: read the
pieces around it, not it. Only a lone caller's calls run start to end without a pause.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from axon.benchmarks import head_to_head
from axon.benchmarks.bench import cpu_times
from axon.benchmarks.loadgen import Call, run_h2load
from axon.benchmarks.scenarios import parse_scenarios
from axon.markdown import LEFT, RIGHT, markdown_table

OUTPUT_ENV = "AXON_LIVE_SEGMENTS_OUT"
"""Where a timed server writes its pieces' totals (JSON) when it exits."""
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"

Totals = dict[str, list[float]]
"""Piece -> [calls, seconds]."""
PARSE = "request parse (grpcio runs it before the call)"
WHOLE = "ModelInfer, whole"
CHECKS = "request: model lookup, checks, input, outputs asked for"
ONNXRUNTIME = "onnxruntime, inside the row above"
OUTSIDE_ONNXRUNTIME = "the whole call but onnxruntime"


def _timed(totals: Totals, name: str, function: Callable[..., Any], *,
           coroutine: bool = False) -> Callable[..., Any]:
    total = totals.setdefault(name, [0, 0.0])
    if coroutine:
        @functools.wraps(function)
        async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                total[0] += 1
                total[1] += time.perf_counter() - started
        return timed_coroutine

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            total[0] += 1
            total[1] += time.perf_counter() - started
    return timed


def _write_on_exit(totals: Totals) -> None:
    path = os.environ[OUTPUT_ENV]
    atexit.register(lambda: Path(path).write_text(json.dumps(totals)))


def _serve_axon(argv: Sequence[str]) -> int:
    """``axon serve`` with its ModelInfer path timed piece by piece."""
    from axon.cli import main
    from axon.server import infer_requests, metrics, runtime, served_model, status
    from axon.server.servicers import inference

    totals: Totals = {PARSE: [0, 0.0], WHOLE: [0, 0.0]}
    guard_unary = status._guard_unary

    def timed_guard(behaviour: Any, full_name: str, method: str, *rest: Any) -> Any:
        guarded = guard_unary(behaviour, full_name, method, *rest)
        return _timed(totals, WHOLE, guarded, coroutine=True) \
            if full_name == MODEL_INFER else guarded

    status._guard_unary = timed_guard  # type: ignore[assignment]
    # In call order.
    pieces: list[tuple[object, str, str, bool]] = [
        (infer_requests.InferRequestReader, "__call__", PARSE, False),
        (metrics.Metrics, "begin", "metrics: begin", False),
        (inference.InferenceServicer, "ModelInfer", "servicer: ModelInfer", True),
        (inference.InferenceServicer, "_prepare", CHECKS, False),
        (inference, "resolve", "model lookup, inside the row above", False),
        (served_model.ServedModel, "check_values", "finiteness check, inside the row above", False),
        (served_model.ServedModel, "infer", "batcher, statistics, model", True),
        (inference, "infer_response", "response", False),
        (metrics.Metrics, "end", "metrics: end", False),
    ]
    for owner, attribute, label, coroutine in pieces:
        setattr(owner, attribute, _timed(totals, label, getattr(owner, attribute),
                                         coroutine=coroutine))
    # Axon calls onnxruntime through the runner it makes per session, not always through
    # InferenceSession.run (server/runtime.py): its runners are timed.
    make_runner = runtime._runner

    def timed_runner(*args: Any) -> Any:
        return _timed(totals, ONNXRUNTIME, make_runner(*args))

    runtime._runner = timed_runner  # type: ignore[assignment]
    _write_on_exit(totals)
    return main(list(argv))  # start_server passes "serve" and its flags


def _serve_naive(argv: Sequence[str]) -> int:
    """The naive server with its ModelInfer, and onnxruntime inside it, timed."""
    import asyncio
    import signal

    import grpc
    import onnxruntime as ort

    from axon.benchmarks import naive_server

    totals: Totals = {PARSE: [0, 0.0]}
    for owner, attribute, label, coroutine in (
            (naive_server.NaiveServicer, "ModelInfer", WHOLE, True),
            (ort.InferenceSession, "run", ONNXRUNTIME, False)):
        setattr(owner, attribute, _timed(totals, label, getattr(owner, attribute),
                                         coroutine=coroutine))
    # Its parser is protobuf's, which the generated code registers with the method.
    method_handler = grpc.unary_unary_rpc_method_handler

    def timed_parse(behaviour: Any, request_deserializer: Any = None, **rest: Any) -> Any:
        if getattr(behaviour, "__name__", "") == "ModelInfer":
            request_deserializer = _timed(totals, PARSE, request_deserializer)
        return method_handler(behaviour, request_deserializer=request_deserializer, **rest)

    grpc.unary_unary_rpc_method_handler = timed_parse  # type: ignore[assignment]
    _write_on_exit(totals)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    path, name, port = argv
    asyncio.run(naive_server.serve(path, name, int(port)))
    return 0


def _mean_us(totals: Totals, piece: str) -> str:
    calls, seconds = totals.get(piece, (0, 0.0))
    return f"{seconds / calls * 1e6:.1f}" if calls else ""


def _outside_onnxruntime_us(totals: Totals) -> str:
    (calls, whole), (runs, model) = totals.get(WHOLE, (0, 0.0)), totals.get(ONNXRUNTIME, (0, 0.0))
    return f"{(whole / calls - model / runs) * 1e6:.1f}" if calls and runs else ""


def report(axon: Totals, naive: Totals, heading: str) -> str:
    rows = [[piece, f"{int(axon[piece][0]):,}", _mean_us(axon, piece), _mean_us(naive, piece)]
            for piece in axon]
    rows.append([OUTSIDE_ONNXRUNTIME, "", _outside_onnxruntime_us(axon),
                 _outside_onnxruntime_us(naive)])
    table = markdown_table(["piece", "calls", "Axon µs per call", "naive server µs per call"],
                           [LEFT, RIGHT, RIGHT, RIGHT], rows)
    return f"{heading}\n{table}"


def measure(repository: Path, model: str, scenario_text: str, seconds: float,
            rounds: int) -> tuple[Totals, Totals, list[tuple[str, float, float, float]]]:
    """Both servers timed under the same load in alternating rounds; their totals and each
    round's (server, requests/s, p50 ms, share of the machine's CPU the host stole during it,
    warm-up included: every call is in the totals)."""
    from axon.benchmarks.common import describe_target
    from axon.benchmarks.naive_server import running_naive_server
    from axon.client.server_process import running_server
    from axon.client.sync_client import AxonClient
    from axon.model_repository import ModelRepository

    scenario = parse_scenarios(scenario_text)[0]
    models = ModelRepository(repository)
    version = models.latest_version(model)
    if version is None:
        raise SystemExit(f"live_segments: model {model!r} has no version in {repository}")
    me = [sys.executable, "-m", "axon.benchmarks.live_segments"]
    rows: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="axon-live-") as folder:
        work = Path(folder)
        outputs = {"axon": work / "axon.json", "naive": work / "naive.json"}
        with running_server(repository, work / "axon.log", "--models", model, "--workers", "1",
                            "--no-http",
                            # As `axon serve` sets it, which here runs after numpy has loaded.
                            env={OUTPUT_ENV: str(outputs["axon"]), "OPENBLAS_NUM_THREADS": "1"},
                            launcher=[*me, "--as-axon"]) as axon_server, \
                running_naive_server(models.model_file(model, version), model,
                                     launcher=[*me, "--as-naive"],
                                     env={OUTPUT_ENV: str(outputs["naive"])}) as naive_server, \
                AxonClient(axon_server.address) as client:
            client.wait_ready()
            # Answered once by Axon for real before anything is timed.
            axon_call = describe_target(client, model, axon_server.process.pid).call(
                "infer", scenario.images)
            calls = {"axon": axon_call,
                     "naive": Call(naive_server.address, axon_call.method, axon_call.body)}
            for round_ in range(rounds):
                order = ["naive", "axon"] if round_ % 2 == 0 else ["axon", "naive"]
                for name in order:
                    steal_before, total_before = cpu_times()
                    run_h2load(calls[name], scenario, 1.0)  # warm-up, counted in the totals too
                    result = run_h2load(calls[name], scenario, seconds)
                    steal_after, total_after = cpu_times()
                    stolen = (steal_after - steal_before) / max(1, total_after - total_before)
                    rows.append((name, result.requests_per_second, result.percentile_ms(50),
                                 stolen))
        totals = {name: json.loads(path.read_text()) for name, path in outputs.items()}
    return totals["axon"], totals["naive"], rows


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--as-axon"]:
        return _serve_axon(arguments[1:])
    if arguments[:1] == ["--as-naive"]:
        return _serve_naive(arguments[1:])
    parser = argparse.ArgumentParser(prog="python -m axon.benchmarks.live_segments",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    head_to_head.add_arguments(parser, scenario="1x1", scenario_help="1x1: a lone caller, "
                               "whose calls never pause", rounds=2)
    args = parser.parse_args(arguments)
    head_to_head.check_arguments(parser, args)
    axon, naive, rows = measure(args.model_repository, args.model, args.scenario, args.seconds,
                                args.rounds)
    for name in ("axon", "naive"):
        mine = [row for row in rows if row[0] == name]
        print(f"{name}: {statistics.median(r[1] for r in mine):,.0f} requests/s, p50 "
              f"{statistics.median(r[2] for r in mine):.3f} ms (median of {len(mine)} rounds)")
    print(head_to_head.steal_line(max(row[3] for row in rows)))
    print(report(axon, naive, f"{args.model}, {args.scenario}, h2load, {args.rounds} rounds of "
                              f"{args.seconds:g} s each (and 1 s of warm-up): wall time per call "
                              "of each piece, every call of the run"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
