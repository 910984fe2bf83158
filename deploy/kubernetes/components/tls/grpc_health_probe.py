"""Exec probe for a TLS-only gRPC port: exit 0 if grpc.health.v1 reports SERVING, 1 otherwise.

The kubelet's own gRPC probe speaks plain text only, so with ``--tls-cert`` the pod checks its
health with this script instead (components/tls). It runs in the serving image, which has grpcio
and grpcio-health-checking, and reads only the files it is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:8001")
    parser.add_argument("--ca", type=Path, required=True,
                        help="CA certificate (PEM) the server's certificate chains to")
    parser.add_argument("--server-name", required=True,
                        help="a name in the server's certificate (it is reached by IP here)")
    parser.add_argument("--cert", type=Path, help="client certificate, for mutual TLS")
    parser.add_argument("--key", type=Path, help="the client certificate's key")
    parser.add_argument("--service", default="", help='health service name ("": the server)')
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds")
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> bool:
    """Whether the server at ``args.address`` reports ``args.service`` as SERVING."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.ca.read_bytes(),
        private_key=args.key.read_bytes() if args.key else None,
        certificate_chain=args.cert.read_bytes() if args.cert else None)
    options = [("grpc.ssl_target_name_override", args.server_name)]
    with grpc.secure_channel(args.address, credentials, options=options) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        serving = check(args)
    except (grpc.RpcError, OSError) as error:
        print(f"health check failed: {error}", file=sys.stderr)
        return 1
    if not serving:
        print("not serving", file=sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
