"""What the command lines of the benchmarks that load Axon and the naive server with h2load in
alternating rounds share (``live_segments``, ``thread_times``): their arguments, the checks
on them, and the line about host CPU steal."""

from __future__ import annotations

import argparse
from pathlib import Path

from axon.benchmarks.bench import STEAL_LIMIT
from axon.benchmarks.loadgen import h2load_available
from axon.benchmarks.scenarios import parse_scenarios


def add_arguments(parser: argparse.ArgumentParser, *, scenario: str, scenario_help: str,
                  rounds: int) -> None:
    """--model, --model-repository, --scenario, --seconds, --rounds."""
    parser.add_argument("--model", default="mnist-compact")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--scenario", default=scenario,
                        help=f"one closed-loop scenario (default {scenario_help})")
    parser.add_argument("--seconds", type=float, default=5.0, help="per round (default 5)")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"alternating rounds (default {rounds})")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exits through ``parser.error`` without h2load, with an open-loop scenario, or when the
    model is not in the repository."""
    if not h2load_available():
        parser.error("needs h2load (Debian package nghttp2-client)")
    if parse_scenarios(args.scenario)[0].rate is not None:
        parser.error("--scenario must be a closed loop, CALLERSxIMAGES")
    if not (args.model_repository / args.model).is_dir():
        parser.error(f"no model {args.model!r} in {args.model_repository} (train it first: "
                     "axon train, or make bench)")


def steal_line(most_stolen: float) -> str:
    """The most host CPU steal in a round, and whether the figures are worth keeping."""
    return (f"most host CPU steal in a round: {most_stolen:.1%}"
            + (" (over 5 %: run again for figures to keep)" if most_stolen > STEAL_LIMIT
               else ""))
