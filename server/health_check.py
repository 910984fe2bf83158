"""``axon health``: ask a server's grpc.health.v1 service whether it is SERVING; exit 0 if so,
1 with one line on stderr if not. The serving image's HEALTHCHECK and the Kubernetes TLS
component's probes run it.

Run with no ``--address`` it probes the server of its own container, found the way ``axon
serve`` finds its settings (``AXON_*`` variables, ``--config``): the server's port on loopback,
plain text or TLS as the server speaks it. Over TLS it trusts exactly the server's own
certificate chain (``tls_cert``) and asks for the first name in it, since the certificate names
the address callers use, not 127.0.0.1. With mutual TLS (``tls_client_ca``) it presents a
client certificate: the one given to it (``--tls-cert``/``--tls-key``, or ``AXON_HEALTH_TLS_CERT``
and ``AXON_HEALTH_TLS_KEY``), else the server's own, which the server accepts only if it chains
to ``tls_client_ca`` and allows client use. No token is sent: the health service is open to
every caller (server/auth.py).

It lives with the server because it reads the server's settings; the call itself is the client
library's. grpc is imported only once the check runs, after gRPC's own logging is turned off,
so a failed handshake prints the one line and not gRPC's log of it too.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from axon.errors import UsageError
from axon.server.certificate_names import certificate_names
from axon.server.cli import checked_settings, problems
from axon.server.config import ServerSettings

ENV_PREFIX = "AXON_HEALTH_"
_ANY_HOST = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}
"""A server listening on every address is probed on loopback."""


class HealthCheckSettings(BaseSettings):
    """What ``axon health`` is told beyond the server's settings, as flags or ``AXON_HEALTH_*``
    variables (an image's HEALTHCHECK takes no flags from the deployer). Field docs double as
    ``--help`` texts."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    address: str | None = Field(None, description="server host:port; default: the server "
                                "of this container, from its settings")
    config: Path | None = Field(None, description="the server's settings file, when it is "
                                "started with axon serve --config FILE")
    service: str = Field("", description='the health service\'s name: "" the server, or a '
                         "model's name")
    timeout: float = Field(2.0, gt=0, description="seconds the check may take")
    tls: bool = Field(False, description="with --address: connect with TLS (implied by the "
                      "options below)")
    tls_ca: Path | None = Field(None, description="CA certificate(s) (PEM) the server's "
                                "certificate must chain to; default: the server's own "
                                "certificate chain (tls_cert)")
    tls_cert: Path | None = Field(None, description="client certificate (PEM) for a server "
                                  "with mutual TLS; default: the server's own tls_cert")
    tls_key: Path | None = Field(None, description="the client certificate's private key; "
                                 "default: the server's own tls_key")
    tls_server_name: str | None = Field(None, description="the name the server's certificate "
                                        "must carry; default: the first in tls_cert")


@dataclass(frozen=True)
class ProbePlan:
    """Where the check connects and how."""

    address: str
    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    own_certificate: bool = False
    """The server's own certificate is presented as the client certificate."""


def configure(command: str, parser: argparse.ArgumentParser) -> None:
    """``axon health``'s arguments and handler (see axon/cli.py)."""
    parser.description = (
        "Exit 0 if the server's grpc.health.v1 service reports SERVING, 1 otherwise (with one "
        "line on stderr). With no --address: the server of this container, reached as its "
        "settings (AXON_* variables, --config) say: loopback, plain text, TLS or mutual TLS. "
        f"Every option can also be set as an {ENV_PREFIX}<OPTION> variable.")
    for name, field in HealthCheckSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=None,
                                help=field.description)
            continue
        shown = f" (default: {field.default})" if field.default not in (None, "") else ""
        parser.add_argument(flag, dest=name, type=_flag_type(field.annotation),
                            help=f"{field.description}{shown}")
    parser.set_defaults(handler=_health)


def _flag_type(annotation: Any) -> Callable[[str], Any]:
    """The X of an optional ``X | None`` setting: its flag takes an X (an absent flag stays
    None, leaving the variables and defaults to decide)."""
    present = [a for a in typing.get_args(annotation) if a is not type(None)]
    parse: Callable[[str], Any] = present[0] if present else annotation
    return parse


def check_settings(**flags: Any) -> HealthCheckSettings:
    """The check's settings from ``flags`` (None values ignored) and ``AXON_HEALTH_*``
    variables; values that do not validate raised as one ``UsageError``."""
    try:
        return HealthCheckSettings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        raise UsageError(f"invalid health check settings: {problems(exc)}") from exc


def plan_probe(check: HealthCheckSettings, server: ServerSettings | None) -> ProbePlan:
    """The connection for ``check``: as given with an address, else from ``server``'s
    settings (required then)."""
    if check.address is not None:
        return ProbePlan(check.address, tls=check.tls, ca=check.tls_ca, cert=check.tls_cert,
                         key=check.tls_key, server_name=check.tls_server_name)
    if server is None:
        raise ValueError("no address and no server settings")
    address = loopback_address(server.address)
    if server.tls_cert is None:
        if check.tls or check.tls_ca or check.tls_cert or check.tls_server_name:
            raise UsageError("the server's settings have no tls_cert, so it speaks plain text; "
                             "drop the check's TLS options or give it --address")
        return ProbePlan(address)
    own = server.tls_client_ca is not None and check.tls_cert is None
    return ProbePlan(
        address, tls=True, ca=check.tls_ca or server.tls_cert,
        cert=server.tls_cert if own else check.tls_cert,
        key=server.tls_key if own else check.tls_key,
        server_name=check.tls_server_name or _name_in(server.tls_cert, address),
        own_certificate=own)


def loopback_address(address: str) -> str:
    """``address`` as seen from inside the server's own host: any-address hosts to
    loopback."""
    host, _, port = address.rpartition(":")
    if port == "0":
        raise UsageError(f"the server's address {address} picks a free port at start; give "
                         "the check --address")
    return f"{_ANY_HOST.get(host, host)}:{port}"


def _name_in(certificate: Path, address: str) -> str | None:
    """A name ``certificate`` carries, to ask for; None when it names the host probed (or
    cannot be read: the handshake then says what is wrong)."""
    try:
        names = certificate_names(certificate.read_bytes())
    except OSError:
        return None
    host = address.rpartition(":")[0].strip("[]")
    return None if not names or host in names else names[0]


def _health(args: argparse.Namespace) -> int:
    # gRPC's core logs a failed handshake on stderr by itself; the contract is one line.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import grpc

    from axon.client.common import NO_RETRIES, AxonClientError
    from axon.client.security import ConnectionSecurity
    from axon.client.sync_client import AxonClient

    check = check_settings(**{name: getattr(args, name)
                              for name in HealthCheckSettings.model_fields})
    server = checked_settings(check.config) if check.address is None else None
    plan = plan_probe(check, server)
    security = ConnectionSecurity.from_files(tls=plan.tls, ca=plan.ca, cert=plan.cert,
                                             key=plan.key, server_name=plan.server_name)
    try:
        with AxonClient(plan.address, timeout=check.timeout, retry=NO_RETRIES,
                        security=security) as client:
            status = client.health(check.service)
    except AxonClientError as error:
        hint = ("; the server's own certificate went as the client certificate: if the "
                "server refuses it, give the check one from tls_client_ca "
                f"({ENV_PREFIX}TLS_CERT, {ENV_PREFIX}TLS_KEY)") \
            if plan.own_certificate and error.code == grpc.StatusCode.UNAVAILABLE else ""
        details = " ".join(error.message.split())
        print(f"axon health: {plan.address}: {error.code.name}"
              f"{': ' + details if details else ''}{hint}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"axon health: {plan.address}: {status}", file=sys.stderr)
        return 1
    print(f"{plan.address}: SERVING")
    return 0
