"""Soak benchmark (issue 7): a long mixed load with a reload in the middle.

It starts a real server on a copy of the model's folder, measures its ModelInfer capacity (a
closed loop of 64 single-image callers), then for ``--minutes`` sends a fixed share of it as a
mix, all at once: ModelInfer (FP32 tensors), Classify (a PNG) and ClassifyStream streams (a
PNG per message, each stream replaced every 30 s), every call recorded by child processes. At
half time it reloads the model (RepositoryModelLoad: new sessions swapped in); at 60 % it
publishes a new version (the latest version's folder copied to the next number) and loads it.
Server memory (VmRSS) and CPU are printed every 10 s.

It prints latency p50/p99 per minute for each API, failed requests by code, and memory growth
after warm-up (the first sample at or after ``--warmup-seconds`` against the last), and exits
with status 1 unless no request failed, both loads succeeded and memory grew less than 5 %.

    python -m benchmarks.soak --model mnist-compact --model-repository model_repository
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from axon.benchmarks.common import (
    CAPACITY_CALLERS,
    MIB,
    START_DELAY_S,
    Records,
    Sample,
    Watcher,
    child_command,
    measure_capacity,
    phased_load_child,
    pick_generator,
    served_target,
    wait_for_children,
)
from axon.benchmarks.loadgen import Call
from axon.benchmarks.soak_report import Event, SoakRun, report, verdicts
from axon.client.common import AxonClientError
from axon.client.sync_client import AxonClient

SHARES = {"ModelInfer": 0.5, "Classify": 0.25, "ClassifyStream": 0.25}
"""How the soak's requests/s are split between the APIs (stream: messages/s)."""


def _print_sample(sample: Sample, previous: list[Sample]) -> None:
    last = previous[-1] if previous else sample
    cpu = (sample.cpu_seconds - last.cpu_seconds) / max(sample.at - last.at, 1e-9)
    answered = sum(n for (_, code), n in sample.codes.items() if code == "OK")
    others = sum(n for (_, code), n in sample.codes.items() if code != "OK")
    print(f"  {sample.at:5.0f} s  RSS {sample.rss / MIB:7.1f} MiB  server CPU {cpu:4.0%}  "
          f"machine {sample.machine_busy(last):4.0%} busy, host steal "
          f"{sample.machine_stolen(last):4.1%}  server counted OK {answered:,}, "
          f"other codes {others:,}", flush=True)
    previous.append(sample)


def _stream_child(call: Call, args: argparse.Namespace, *, rate: float, seconds: float,
                  start: float, tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    body, out = tmp / "stream.body", tmp / "stream.npz"
    body.write_bytes(call.body)  # a serialized ClassifyRequest
    return subprocess.Popen(child_command(
        "stream_load", call.address, str(body), str(out), "--rate", repr(rate),
        "--seconds", repr(seconds), "--start", repr(start), "--streams", str(args.streams),
        "--lifetime", repr(args.stream_lifetime))), out


def _at(start: float, offset: float, what: str, action: Callable[[], str]) -> Event:
    """Run ``action`` at ``offset`` seconds after ``start``; how it went."""
    time.sleep(max(0.0, start + offset - time.monotonic()))
    began = time.monotonic()
    try:
        detail = action()
    except AxonClientError as error:
        detail = f"FAILED: {error}"
    event = Event(began - start, what, time.monotonic() - began, detail)
    print(f"  {event.at:5.0f} s  {what} in {event.seconds:.2f} s; {detail}", flush=True)
    return event


def run(args: argparse.Namespace) -> SoakRun:
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir = tmp / "repository" / args.model
        shutil.copytree(args.model_repository / args.model, model_dir)
        with served_target(tmp / "repository", tmp / "server.log",
                           args.model) as (server, target):
            client = target.client
            infer, classify = target.call("infer", 1), target.call("classify", 1)
            generator = pick_generator(args.generator)
            capacities = {"ModelInfer": measure_capacity(infer, generator, 3.0),
                          "Classify": measure_capacity(classify, generator, 3.0)}
            # A stream message is taken to cost what a Classify call costs.
            capacity = 1 / sum(share / capacities["Classify" if api != "ModelInfer" else api]
                               for api, share in SHARES.items())
            rates = {api: share * args.load_share * capacity for api, share in SHARES.items()}
            start = time.monotonic() + START_DELAY_S
            children = [
                phased_load_child(infer, tmp, "infer", f"{rates['ModelInfer']!r}:{seconds!r}",
                                  start),
                phased_load_child(classify, tmp, "classify",
                                  f"{rates['Classify']!r}:{seconds!r}", start),
                _stream_child(classify, args, rate=rates["ClassifyStream"], seconds=seconds,
                              start=start, tmp=tmp)]
            print(f"capacity (closed loop, {CAPACITY_CALLERS} callers): " + ", ".join(
                f"{api} {rate:,.0f} requests/s" for api, rate in capacities.items())
                + f"; of this mix {capacity:,.0f} requests/s; soaking {args.minutes:g} min at "
                f"{args.load_share:.0%} of it: " + ", ".join(
                    f"{api} {rate:,.0f}/s" for api, rate in rates.items()), flush=True)
            printed: list[Sample] = []
            with Watcher(server.process.pid, start, args.sample_seconds, server.metrics_port,
                         lambda s: _print_sample(s, printed)) as watcher:
                events = [
                    _at(start, seconds / 2, "reload (RepositoryModelLoad, same version)",
                        lambda: _reload(client, args.model)),
                    _at(start, seconds * 0.6, "new version published and loaded",
                        lambda: _publish(client, args.model, model_dir))]
                wait_for_children(child for child, _ in children)
                time.sleep(max(0.0, start + seconds + args.sample_seconds + 0.5
                               - time.monotonic()))
        records = {api: Records.load(out) for api, (_, out) in zip(SHARES, children,
                                                                    strict=True)}
    return SoakRun(capacity, rates, records, watcher.samples, events, args.warmup_seconds)


def _reload(client: AxonClient, model: str) -> str:
    client.load_model(model)
    return "served: " + _versions(client, model)


def _publish(client: AxonClient, model: str, model_dir: Path) -> str:
    latest = max(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
    shutil.copytree(model_dir / str(latest), model_dir / str(latest + 1))
    client.load_model(model)
    return f"version {latest + 1} published; served: " + _versions(client, model)


def _versions(client: AxonClient, model: str) -> str:
    return ", ".join(sorted(f"v{m.version}" for m in client.models() if m.name == model))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist-compact")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--load-share", type=float, default=0.4,
                        help="requests/s of all APIs together, x the mix's capacity (from each "
                        "API's measured capacity)")
    parser.add_argument("--generator", choices=("auto", "h2load", "python"), default="auto",
                        help="the capacity measurement's load generator")
    parser.add_argument("--streams", type=int, default=4, help="streams open at a time")
    parser.add_argument("--stream-lifetime", type=float, default=30.0)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--warmup-seconds", type=float, default=60.0,
                        help="memory growth is counted from the first sample after this "
                        "(at most half the run)")
    parser.add_argument("--max-growth", type=float, default=0.05)
    args = parser.parse_args()
    soak = run(args)
    print(report(soak))
    failures = verdicts(soak, args.max_growth)
    print("\n".join(failures) if failures else "soak: all criteria met")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
