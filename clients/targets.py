"""Where a client channel points: one server, several, or a DNS name with many addresses.

gRPC keeps one connection open, so a client given one address sticks to one replica. Given
several addresses (``10.0.0.1:8001,10.0.0.2:8001``) or a DNS name (``dns:///axon:8001``,
e.g. a Kubernetes headless Service), the channel connects to every address and spreads calls
over them with gRPC's ``round_robin`` policy, dropping a replica that goes away and taking it
back when it answers again.
"""

from __future__ import annotations

import ipaddress
import socket

from axon.errors import AxonError


class TargetError(AxonError, ValueError):
    """An address list that cannot be used."""


ROUND_ROBIN: list[tuple[str, int | str]] = [("grpc.lb_policy_name", "round_robin")]


def channel_target(address: str) -> tuple[str, list[tuple[str, int | str]]]:
    """The gRPC target for ``address`` and the channel options it needs."""
    if address.startswith("dns:"):
        return address, list(ROUND_ROBIN)
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) <= 1:
        return address, []
    resolved = [_numeric(part) for part in parts]
    scheme = "ipv6" if any(":" in host.strip("[]") for host, _ in resolved) else "ipv4"
    if scheme == "ipv6":
        return "ipv6:" + ",".join(f"[{host.strip('[]')}]:{port}" for host, port in resolved), \
            list(ROUND_ROBIN)
    return "ipv4:" + ",".join(f"{host}:{port}" for host, port in resolved), list(ROUND_ROBIN)


def _numeric(part: str) -> tuple[str, str]:
    """``host:port`` with the host as an IP address (names looked up once, here: a list of
    addresses is fixed; use ``dns:///`` for names whose addresses change)."""
    host, separator, port = part.rpartition(":")
    if not separator or not port.isdigit():
        raise TargetError(f"expected host:port, got {part!r}")
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        try:
            found = socket.getaddrinfo(bare, int(port), type=socket.SOCK_STREAM)
        except OSError as error:
            raise TargetError(f"cannot resolve {bare!r}: {error.strerror or error}; list IP "
                              "addresses, or use dns:///NAME:PORT") from error
        bare = str(found[0][4][0])
    return bare, port
