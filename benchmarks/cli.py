"""``axon bench``: load against a real server, next to what one core does in process, and A/B
runs against a baseline server in alternating rounds."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from axon.benchmarks.naive_server import running_naive_server
from axon.benchmarks.scenarios import DEFAULT_MAX_OUTSTANDING
from axon.client.cli import (
    add_security_arguments,
    positive,
    security_flags,
    security_from,
)
from axon.client.server_process import running_server
from axon.client.sync_client import AxonClient
from axon.cpus import cpus_label
from axon.errors import UsageError
from axon.model_repository import MODEL_FILENAME, ModelRepository
from axon.server.batching import (
    NEVER_HELD,
    PROFILED_AGAIN,
    SECOND_LOOK_BACKOFF,
    SECOND_LOOK_IDLE_S,
    SECOND_LOOKS,
    TO_PROFILE_AGAIN,
)

if TYPE_CHECKING:
    from axon.benchmarks.bench import Measurement
    from axon.benchmarks.scenarios import Scenario
    from axon.benchmarks.target import Target


def configure(command: str, bench: argparse.ArgumentParser) -> None:
    """``axon bench``'s arguments and handler (see axon/cli.py)."""
    bench.description = (
        "Closed-loop (callers) and open-loop (requests/s) load on ModelInfer or Classify; "
        "prints throughput, p50/p90/p99/max latency and errors per scenario, next to what one "
        "core does in process; --baseline naive measures the naive server in the same run.")
    bench.add_argument("--model", default="mnist-compact")
    bench.add_argument("--model-repository", type=Path, default=Path(os.environ.get(
        "AXON_MODEL_REPOSITORY", "model_repository")))
    bench.add_argument("--address", help="bench this running server instead of starting one "
                       "(server CPU is then not reported)")
    bench.add_argument("--http-address", help="with --address: the running server's "
                       "HTTP/REST port (host:port), for --protocol http-...")
    bench.add_argument("--protocol", default="grpc", type=_protocol_list,
                       help="comma-separated: grpc, http-json (REST, JSON tensors), "
                       "http-binary (REST, Triton's binary tensor data both ways). Several: "
                       "measured in alternating rounds (--rounds) on the same server, with "
                       "medians and ratios to the first")
    bench.add_argument("--serve-args", default="", help="extra `axon serve` flags for the "
                       "server bench starts, e.g. '--max-queue-delay-ms 1'")
    bench.add_argument("--api", choices=("infer", "classify"), default="infer",
                       help="infer: ModelInfer with FP32 tensors (default); classify: "
                       "axon.v1.Classifier/Classify with PNG images the server decodes")
    bench.add_argument("--generators", default="h2load,python",
                       help="h2load (C, cheap: needs Debian nghttp2-client) and/or python "
                       "(grpc.aio in a child process). h2load sees HTTP status only: an open "
                       "loop with it is reported only below the server's capacity (every "
                       "call answered, none sent late), else bench stops with an error; "
                       "measure overload with python, which counts errors per gRPC status")
    bench.add_argument("--scenarios", default="1x1,16x1,64x1,1x64,16x64,64x64",
                       type=_scenario_list, help="comma-separated: CALLERSxIMAGES for a closed "
                       "loop (64x1: 64 callers, each waiting for its answer), RATE/sxIMAGES "
                       "for an open loop (2000/sx1: 2,000 requests/s on a fixed schedule, "
                       "latency timed from when each was due)")
    bench.add_argument("--seconds", type=float, default=5.0, help="measured time per scenario")
    bench.add_argument("--max-outstanding", type=positive, default=DEFAULT_MAX_OUTSTANDING,
                       help=f"open loop: most requests in flight (default "
                       f"{DEFAULT_MAX_OUTSTANDING:,}); the "
                       "python generator counts requests due past it as not sent, h2load "
                       "would send them late, which bench refuses")
    bench.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the "
                       "in-process ceiling (match the server's --intra-op-threads)")
    bench.add_argument("--json-out", type=Path, help="also write the measurements here")
    bench.add_argument("--plot", type=Path, metavar="PNG", help="also draw latency by "
                       "percentile for every scenario (needs matplotlib)")
    bench.add_argument("--baseline", choices=("naive",), help="A/B mode against the naive "
                       "server (benchmarks/naive_server.py: one grpc.aio process calling "
                       "onnxruntime inline per request, no batching), started on the same "
                       "model and interpreter; measures both in alternating rounds, prints "
                       "Axon/baseline ratios and the serving targets (met or missed)")
    bench.add_argument("--baseline-args", metavar="FLAGS", help="A/B mode: also start a "
                       "baseline server with these extra `axon serve` flags (e.g. "
                       "'--no-metrics'), measure both in alternating rounds and print their "
                       "ratios")
    bench.add_argument("--rounds", type=positive, default=3, help="A/B mode: rounds per "
                       "scenario and server; each round starts both servers afresh")
    add_security_arguments(bench)
    bench.set_defaults(handler=_bench)


@contextmanager
def _server_for(args: argparse.Namespace, extra_flags: str = ""
                ) -> Iterator[tuple[str, int | None, str | None, Path | None]]:
    """The server's gRPC address, its pid (None: not started here), HTTP address and log
    (None: not started here)."""
    if args.address:
        yield args.address, None, args.http_address, None
        return
    if args.model not in ModelRepository(args.model_repository).model_names():
        raise UsageError(f"model {args.model!r} is not in {args.model_repository}; train "
                               "it first (make bench trains mnist-compact if missing)")
    with tempfile.TemporaryDirectory() as tmp, running_server(
            args.model_repository, Path(tmp) / "server.log", "--models", args.model,
            *shlex.split(args.serve_args), *shlex.split(extra_flags)) as server:
        yield server.address, server.process.pid, \
            server.http_address if server.http_port is not None else None, \
            Path(tmp) / "server.log"


def profile_lines(log: Path, *, later: bool = False) -> list[str]:
    """What each model's load-time profile chose, as the server logged it: the sizes for the
    solo session, a choice made at start that moves throughput for the process's whole life
    (docs/performance.md, "A preferred size that stuck"), and those of requests that never wait
    for company. ``later``: only the choices of profiles made again while the server was idle
    ("A second look when idle")."""
    chosen = [_LOG_PREFIX.sub("", line.rstrip()) for line in
              log.read_text(errors="replace").splitlines()
              if " onnxruntime thread" in line or NEVER_HELD in line]
    return [line for line in chosen if PROFILED_AGAIN in line] if later else chosen


def second_looks(log: Path) -> list[str]:
    """When a start's profile found no solo size where one may pay, the server profiles
    again once idle (server/batching.py): wait for that before measuring, so that it neither
    falls on the first measurement nor on the other server's (whose cores it would share);
    the choice it made, if any."""
    if not any(line.endswith(TO_PROFILE_AGAIN) for line in profile_lines(log)):
        return []
    deadline = time.monotonic() + sum(SECOND_LOOK_IDLE_S * SECOND_LOOK_BACKOFF ** look + 1.0
                                      for look in range(SECOND_LOOKS))
    while time.monotonic() < deadline:
        if later := profile_lines(log, later=True):
            return later
        time.sleep(0.1)
    return [f"(no solo size after {SECOND_LOOKS} more profiles either)"]


_LOG_PREFIX = re.compile(r"^\S+ +[A-Z]+ +")


def _bench(args: argparse.Namespace) -> int:
    from axon.benchmarks.bench import (
        GENERATORS,
        classify_ceiling,
        onnxruntime_ceiling,
        plot,
        save,
        table,
        verdicts,
    )
    from axon.benchmarks.target import png_image

    generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    _check_usage(args, generators, list(GENERATORS))
    scenarios: list[Scenario] = args.scenarios
    with ExitStack() as stack:
        target, path = _target(stack, args, "")
        rng = np.random.default_rng(0)
        ceilings = {n: onnxruntime_ceiling(
            path, rng.random((n, *target.input_shape), dtype=np.float32), args.threads)
            if args.api == "infer" else classify_ceiling(
                path, png_image(*target.image_shape), n, args.threads)
            for n in sorted({s.images for s in scenarios})}
        if args.baseline_args is not None or args.baseline:
            return _compare(args, stack, target, path, generators=generators,
                            scenarios=scenarios, ceilings=ceilings)
        if len(args.protocol) > 1:
            return _compare_protocols(args, target, generators=generators,
                                      scenarios=scenarios, ceilings=ceilings)
        rows = []
        for generator in generators:
            for scenario in scenarios:
                rows.append(_measure_and_tell(args, target, scenario, generator,
                                              ceilings[scenario.images],
                                              protocol=args.protocol[0]))
    print(table(rows))
    print("\n".join(verdicts(rows)))
    if args.json_out:
        save(rows, args.json_out)
    if args.plot:
        plot(rows, args.plot)
    return 0


def _check_usage(args: argparse.Namespace, generators: list[str], known: list[str]) -> None:
    from axon.benchmarks.loadgen import h2load_available

    unknown = [g for g in generators if g not in known]
    if unknown:
        raise UsageError(f"unknown load generators {unknown}; use {known}")
    if "h2load" in generators and not h2load_available():
        raise UsageError("h2load is not installed (apt-get install nghttp2-client), or "
                         "pass --generators python")
    a_b = args.baseline_args is not None or args.baseline
    if a_b and args.address:
        raise UsageError("an A/B run needs bench to start both servers: drop --address")
    if args.baseline_args is not None and args.baseline:
        raise UsageError("--baseline and --baseline-args each name the baseline: give one")
    if args.baseline and args.api != "infer":
        raise UsageError("the naive baseline serves ModelInfer only: use --api infer")
    if a_b and args.protocol != ["grpc"]:
        raise UsageError("A/B runs against a baseline server use gRPC: drop --protocol")


def _target(stack: ExitStack, args: argparse.Namespace, extra_flags: str) -> tuple[Target, Path]:
    """A ready server (started unless --address), its model, and the model's file."""
    from axon.benchmarks.target import Target

    address, pid, http_address, log = stack.enter_context(_server_for(args, extra_flags))
    client = stack.enter_context(AxonClient(address, security=security_from(args)))
    client.wait_ready()
    description = max((m for m in client.models() if m.name == args.model),
                      key=lambda m: int(m.version))
    path = args.model_repository / args.model / description.version / MODEL_FILENAME
    metadata = client.model_metadata(args.model, description.version)
    shape = tuple(metadata.inputs[0].shape[1:])
    print(f"{args.model} v{description.version} on {description.execution_provider}, "
          f"{cpus_label()}; server {address}" + (f" (pid {pid})" if pid else "")
          + (f" with {extra_flags}" if extra_flags else ""), file=sys.stderr)
    if log is not None:
        for line in profile_lines(log) + second_looks(log):
            print(f"  {line}", file=sys.stderr)
    image = (description.image_height, description.image_width, description.image_channels)
    return Target(client, args.model, description.version, shape, image, pid,
                  security_flags(args), http_address), path


def _naive_target(stack: ExitStack, args: argparse.Namespace, axon: Target,
                  path: Path) -> Target:
    """The naive baseline server on ``path``, as a load target beside Axon's."""
    from axon.benchmarks.target import Target

    server = stack.enter_context(running_naive_server(path, args.model))
    client = stack.enter_context(AxonClient(server.address))
    client.wait_ready()
    print(f"baseline: the naive server on {server.address} (pid {server.pid})", file=sys.stderr)
    return Target(client, args.model, axon.version, axon.input_shape, axon.image_shape,
                  server.pid)


def _measure_and_tell(args: argparse.Namespace, target: Target, scenario: Scenario,
                      generator: str, ceiling: float, *, protocol: str = "grpc") -> Measurement:
    from axon.benchmarks.bench import measure

    row = measure(target, scenario, generator, api=args.api, seconds=args.seconds,
                  ceiling=ceiling, max_outstanding=args.max_outstanding, protocol=protocol)
    over = "" if protocol == "grpc" else f" over {protocol}"
    line = f"  {generator} {args.api}{over} {scenario.label}: " \
           f"{row.images_per_second:,.0f} images/s, p99 {row.p99_ms:.1f} ms"
    if scenario.rate is not None:
        line += f", {row.requests_per_second:,.0f} of {scenario.rate:,.0f} requests/s " \
                f"answered, {row.errors:,} errors, {row.not_sent:,} not sent, send lag p99 " \
                f"{row.send_lag_p99_ms or 0.0:.1f} ms"
    print(line, file=sys.stderr)
    return row


def _compare(args: argparse.Namespace, first: ExitStack, variant: Target, path: Path, *,
             generators: list[str], scenarios: list[Scenario],
             ceilings: dict[int, float]) -> int:
    """Both servers on each scenario in alternating rounds (ABBA...), so drift in the machine's
    speed falls on both sides alike; ``variant`` was started in ``first``.

    Each round starts both servers afresh: on these machines one server process runs the same
    code several percent faster or slower than the next for its whole life (where its memory
    lands), so a median over one pair of processes says as much about the pair as about the
    code (docs/performance.md, "One process is not the next").
    """
    from axon.benchmarks.bench import (
        Pair,
        comparison_table,
        round_by_round,
        save_pairs,
        target_verdicts,
    )

    loads = [(generator, scenario) for generator in generators for scenario in scenarios]
    sides: dict[int, dict[str, list[Measurement]]] = {
        index: {"variant": [], "baseline": []} for index in range(len(loads))}
    for round_index in range(args.rounds):
        # Leaving the round stops its servers (the first round's variant was started in
        # ``first``, which it leaves the same way).
        with first if round_index == 0 else ExitStack() as servers:
            if round_index > 0:
                variant = _target(servers, args, "")[0]
            baseline = _naive_target(servers, args, variant, path) if args.baseline \
                else _target(servers, args, args.baseline_args)[0]
            order = [("variant", variant), ("baseline", baseline)]
            for index, (generator, scenario) in enumerate(loads):
                for side, target in order if round_index % 2 == 0 else order[::-1]:
                    print(f"round {round_index + 1}, {side}:", file=sys.stderr, end="")
                    sides[index][side].append(_measure_and_tell(
                        args, target, scenario, generator, ceilings[scenario.images]))
    pairs = [Pair(generator, args.api, scenario, sides[index]["variant"],
                  sides[index]["baseline"])
             for index, (generator, scenario) in enumerate(loads)]
    baseline_name = "the naive server" if args.baseline else \
        f"{args.serve_args} {args.baseline_args}".strip()
    print(comparison_table(pairs, args.serve_args or "default settings", baseline_name))
    for pair in pairs:
        if paired := round_by_round(pair):
            print(f"{pair.generator} {pair.scenario.label}: variant/baseline throughput {paired}")
    if args.json_out:
        save_pairs(pairs, args.json_out)
    if not args.baseline:
        return 0
    preset = ModelRepository(args.model_repository).card(
        args.model, int(variant.version)).architecture.preset
    lines = target_verdicts(pairs, preset)
    print("\n".join(lines))
    return 0


def _compare_protocols(args: argparse.Namespace, target: Target, *, generators: list[str],
                       scenarios: list[Scenario], ceilings: dict[int, float]) -> int:
    from axon.benchmarks.protocols import (
        ProtocolRuns,
        protocol_table,
        round_order,
        save_protocol_runs,
    )

    results = []
    for generator in generators:
        for scenario in scenarios:
            runs: dict[str, list[Measurement]] = {p: [] for p in args.protocol}
            for round_index in range(args.rounds):
                for protocol in round_order(args.protocol, round_index):
                    print(f"round {round_index + 1}:", file=sys.stderr, end="")
                    runs[protocol].append(_measure_and_tell(
                        args, target, scenario, generator, ceilings[scenario.images],
                        protocol=protocol))
            results.append(ProtocolRuns(generator, scenario, runs))
    print(protocol_table(results))
    if args.json_out:
        save_protocol_runs(results, args.json_out)
    return 0


def _protocol_list(text: str) -> list[str]:
    from axon.benchmarks.target import PROTOCOLS

    protocols = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols or len(set(protocols)) != len(protocols):
        raise argparse.ArgumentTypeError(f"protocols are some of {', '.join(PROTOCOLS)}, each "
                                         f"once; got {text!r}")
    return protocols


def _scenario_list(text: str) -> list[Scenario]:
    from axon.benchmarks.scenarios import ScenarioError, parse_scenarios

    try:
        return parse_scenarios(text)
    except ScenarioError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


