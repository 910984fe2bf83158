"""``axon classify``: files through a running server, one line each, in input order; and
the connection options every command that calls a server shares."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from axon.client.common import AxonClientError, RetryPolicy
from axon.client.file_stream import (
    DEFAULT_BATCH,
    DEFAULT_STREAMS,
    DEFAULT_WINDOW,
    classify_files,
    image_paths,
)
from axon.client.security import ConnectionSecurity
from axon.client.sync_client import AxonClient
from axon.errors import UsageError

DEFAULT_ADDRESS = os.environ.get("AXON_SERVER", "127.0.0.1:8001")
TOKEN_ENV = "AXON_TOKEN"


def configure(command: str, classify: argparse.ArgumentParser) -> None:
    """``axon classify``'s arguments and handler (see axon/cli.py)."""
    classify.description = (
        "Stream PNG/JPEG files through a running server's ClassifyStream, --batch files to a "
        "message, and print one line per file, in input order. Files that cannot be read or "
        "decoded are reported and skipped; the exit status is 1 if any was.")
    classify.add_argument("images", nargs="+", help="files, folders (walked recursively), "
                          "globs ('shots/**/*.png'), or - for one path per line on stdin")
    classify.add_argument("--address", default=DEFAULT_ADDRESS,
                          help=f"server host:port (env AXON_SERVER; default {DEFAULT_ADDRESS})")
    classify.add_argument("--model", default="", help="model name (default: the only one)")
    classify.add_argument("--version", default="", help="model version (default: the highest)")
    classify.add_argument("--top-k", type=positive, default=1)
    classify.add_argument("--format", choices=("table", "csv", "jsonl"), default="table",
                          help="table (default), csv, or jsonl (one JSON object per file)")
    classify.add_argument("--json", action="store_const", const="jsonl", dest="format",
                          help="same as --format jsonl")
    classify.add_argument("--window", type=positive, default=DEFAULT_WINDOW,
                          help=f"files in flight at once (bounds memory; default "
                          f"{DEFAULT_WINDOW})")
    classify.add_argument("--batch", type=positive, default=DEFAULT_BATCH,
                          help="files per stream message (capped by the window, the "
                          "model's max_batch_size and 8 MiB of file bytes; default "
                          f"{DEFAULT_BATCH}; 1 answers each "
                          "file as soon as it is read, for interactive use on stdin)")
    classify.add_argument("--connections", type=positive, default=DEFAULT_STREAMS,
                          help="connections to the server, one stream on each, sharing the "
                          "window (a server of N worker processes decodes on as many as the "
                          "connections reach; each costs this client threads of its own; "
                          f"default {DEFAULT_STREAMS})")
    classify.add_argument("--timeout", type=float, default=None,
                          help="deadline for the whole run in seconds (default: none)")
    classify.add_argument("--retries", type=at_least_zero, default=10,
                          help="tries again after a transient failure (server restarting, "
                          "queue full), with back-off from 0.1 s doubling to 2 s; the count "
                          "starts afresh after each answer (default 10: 7 to 13 s of "
                          "waiting before giving up)")
    add_security_arguments(classify)
    classify.set_defaults(handler=_classify)


def _classify(args: argparse.Namespace) -> int:
    from axon.client.classify_output import Report

    paths = image_paths(args.images, sys.stdin)
    report = Report(args.format, args.top_k, sys.stdout, sys.stderr)
    retry = RetryPolicy(attempts=args.retries + 1)
    with AxonClient(args.address, retry=retry, security=security_from(args),
                    connections=args.connections) as client:
        try:
            for result in classify_files(client, paths, model=args.model, version=args.version,
                                         top_k=args.top_k, window=args.window,
                                         batch=args.batch, on_answer=report.flush,
                                         timeout=args.timeout, streams=args.connections):
                report.add(result)
        except AxonClientError as error:
            raise UsageError(f"{args.address}: {error}") from error
        finally:  # the summary, and the progress bar cleared, whatever ended the run (Ctrl-C)
            report.close()
    if report.files == 0:
        raise UsageError("no PNG/JPEG files found in " + " ".join(args.images))
    return 1 if report.errors else 0


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def at_least_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    """TLS, client certificate and token options of the commands that call a server."""
    group = parser.add_argument_group("security (for a server with TLS or tokens)")
    group.add_argument("--tls", action="store_true", help="connect with TLS, checking the "
                       "server's certificate against the system's CAs (implied by the options "
                       "below)")
    group.add_argument("--tls-ca", type=Path, metavar="PEM",
                       help="CA certificate(s) to check the server's certificate against")
    group.add_argument("--tls-cert", type=Path, metavar="PEM",
                       help="client certificate, for a server that requires one (mutual TLS)")
    group.add_argument("--tls-key", type=Path, metavar="PEM", help="the client certificate's "
                       "private key")
    group.add_argument("--tls-server-name", metavar="NAME", help="the name the server's "
                       "certificate must carry, when it differs from the address")
    group.add_argument("--token-file", type=Path, metavar="FILE",
                       help="file holding a bearer token sent with every call (or env "
                       f"{TOKEN_ENV}; the token is never printed)")


def security_flags(args: argparse.Namespace) -> tuple[str, ...]:
    """The security options as flags again, for a child process to parse."""
    flags: list[str] = ["--tls"] if args.tls else []
    for option in ("tls_ca", "tls_cert", "tls_key", "tls_server_name", "token_file"):
        value = getattr(args, option)
        if value is not None:
            flags += ["--" + option.replace("_", "-"), str(value)]
    return tuple(flags)


def security_from(args: argparse.Namespace) -> ConnectionSecurity:
    token = None if args.token_file is not None else os.environ.get(TOKEN_ENV) or None
    return ConnectionSecurity.from_files(
        tls=args.tls, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key,
        server_name=args.tls_server_name, token=token, token_file=args.token_file)
