"""The ``axon`` command line: the root parser, and nothing of any command.

Each command lives in the package of its side -- training (``data``, ``export-samples``,
``train``, ``export``, ``quickstart``), the server (``serve``, ``health``), the client library
(``classify``), the benchmarks (``bench``) -- as a ``configure(command, parser)`` function
that adds its arguments and its handler. Only the module of the command being run is imported:
``axon classify`` loads neither onnxruntime nor the server, ``axon serve`` never torch, and
``axon --help`` almost nothing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from axon import __version__
from axon.errors import AxonError
from axon.extras import require_onnxruntime

COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("axon.training.cli", "obtain and verify a data set"),
    "export-samples": ("axon.training.cli", "write test-set images as PNG files, to classify"),
    "train": ("axon.training.cli", "train a dense net and publish it as a new version"),
    "export": ("axon.training.cli", "publish a training run's checkpoint again"),
    "quickstart": ("axon.training.cli", "the main job: data, train if missing, serve, "
                   "classify sample digits"),
    "serve": ("axon.server.cli", "serve a model repository over gRPC"),
    "health": ("axon.server.health_check", "exit 0 if a server reports SERVING (grpc.health.v1); "
               "by default this container's server, as its settings say"),
    "classify": ("axon.client.cli", "classify image files with a running server"),
    "bench": ("axon.benchmarks.cli", "load-test a model over gRPC next to in-process limits"),
}
"""Command -> (the module that defines it, its one-line help)."""
NEEDS_ONNXRUNTIME = frozenset({"train", "export", "quickstart", "serve", "bench"})
"""Commands that run models (training checks its export through onnxruntime): on an install
without the ``cpu`` or ``gpu`` extra they stop with one line saying which to add."""
LOG_LEVELS = ("debug", "info", "warning", "error")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(arguments)
    except AxonError as exc:  # a missing extra, found before the command's module loads
        print(f"axon: error: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(arguments)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("axon: interrupted", file=sys.stderr)
        return 130
    except (AxonError, FileNotFoundError) as exc:
        print(f"axon: error: {exc}", file=sys.stderr)
        return 1


def build_parser(arguments: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The root parser; the command named in ``arguments`` (if any) gets its own arguments."""
    parser = argparse.ArgumentParser(
        prog="axon", description="Train dense nets, export them to ONNX and serve them over gRPC.")
    parser.add_argument("--version", action="version", version=f"axon {__version__}")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = chosen_command(arguments)
    if chosen in NEEDS_ONNXRUNTIME:
        require_onnxruntime()
    for name, (module, summary) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary)
        if name == chosen:
            configure: Callable[[str, argparse.ArgumentParser], None] = \
                importlib.import_module(module).configure
            configure(name, command)
    return parser


def chosen_command(arguments: Sequence[str]) -> str | None:
    """The command ``arguments`` run: the first of them that names one, past the root's own
    options."""
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--log-level":
            skip = True
        elif argument in COMMANDS:
            return argument
        elif not argument.startswith("-"):
            return None
    return None


if __name__ == "__main__":
    sys.exit(main())
