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


def is_loopback(address: str) -> bool:
    """Whether every server ``address`` names is on this host: ``localhost``, 127.0.0.0/8,
    ``::1`` (with or without a port), or a Unix socket. ``address`` is what ``channel_target``
    takes, or a gRPC target with a ``dns:``, ``ipv4:``, ``ipv6:``, ``unix:`` or
    ``unix-abstract:`` scheme. Nothing is looked up: a name is loopback only if it is
    ``localhost`` itself (``localhost.example.com`` is someone else's host), and a ``dns:``
    target naming its own DNS server is not, since that server may answer anything."""
    target = address.strip()
    scheme = target.partition(":")[0].lower()
    if scheme in ("unix", "unix-abstract"):
        return True
    if scheme == "dns":
        rest = target[len("dns:"):]
        if rest.startswith("//"):
            authority, _, rest = rest[2:].partition("/")
            if authority:
                return False
        parts = [rest]
    elif scheme in ("ipv4", "ipv6"):
        parts = target[len("ipv4:"):].split(",")
    else:
        parts = target.split(",")
    hosts = [_host(part.strip()) for part in parts if part.strip()]
    return bool(hosts) and all(_is_loopback_host(host) for host in hosts)


def _host(part: str) -> str:
    """The host of ``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    if part.startswith("["):
        return part[1:].partition("]")[0]
    if part.count(":") == 1:
        return part.partition(":")[0]
    return part


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
