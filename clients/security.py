"""How a client reaches a server it must trust, and proves who it is: TLS (server certificate
checked against a CA), mutual TLS (a client certificate), and a bearer token.

One value, ``ConnectionSecurity``, builds the channel (blocking or asyncio) and the metadata
sent with every call, so the sync client, the asyncio client and the commands agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from axon.client.targets import channel_target, is_loopback
from axon.errors import AxonError

log = logging.getLogger(__name__)

TOKEN_HEADER = "authorization"


class SecurityConfigError(AxonError, ValueError):
    """TLS or token options that cannot work together, or files that cannot be read."""


@dataclass(frozen=True)
class ConnectionSecurity:
    """``tls`` on: the server's certificate is checked against ``root_certificates`` (PEM; None:
    the system's trusted CAs). A ``certificate_chain`` and ``private_key`` (PEM) answer a server
    that asks for client certificates (mutual TLS). ``server_name`` overrides the name checked
    in the server's certificate (an address by IP, a name the certificate was issued for).
    ``token`` goes out with every call as ``authorization: Bearer <token>``."""

    tls: bool = False
    root_certificates: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise SecurityConfigError("a client certificate needs its private key, and the "
                                      "other way round")
        if not self.tls and (self.root_certificates or self.certificate_chain
                             or self.server_name):
            raise SecurityConfigError("certificates and a server name need TLS on")
        if self.token is not None and (not self.token or not self.token.isprintable()
                                       or not self.token.isascii() or " " in self.token):
            raise SecurityConfigError("a token is printable ASCII with no spaces, and not "
                                      "empty")

    @classmethod
    def from_files(cls, *, tls: bool = False, ca: Path | None = None, cert: Path | None = None,
                   key: Path | None = None, server_name: str | None = None,
                   token: str | None = None, token_file: Path | None = None,
                   ) -> ConnectionSecurity:
        """From PEM files and a token (or a file holding one, its trailing newline dropped).
        Any certificate, or a server name, turns TLS on."""
        if token is not None and token_file is not None:
            raise SecurityConfigError("give a token or a token file, not both")
        if token_file is not None:
            token = _read(token_file, "token file").decode("ascii", "replace").strip()
        return cls(tls=tls or any(x is not None for x in (ca, cert, key, server_name)),
                   root_certificates=_read(ca, "CA certificate") if ca else None,
                   certificate_chain=_read(cert, "client certificate") if cert else None,
                   private_key=_read(key, "client key") if key else None,
                   server_name=server_name, token=token)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call carries."""
        return ((TOKEN_HEADER, f"Bearer {self.token}"),) if self.token else ()

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key,
                                            self.certificate_chain)

    def channel(self, address: str, options: list[tuple[str, int | str]], *,
                warn: bool = True) -> grpc.Channel:
        """A blocking channel to ``address`` (one, several, or ``dns:///``: see
        ``clients.targets``), secured as this says; ``warn``: say so when a token would leave
        the host in clear text (a client opening several channels says it once)."""
        target, options = self._target(address, options, warn)
        credentials = self.credentials()
        if credentials is None:
            return grpc.insecure_channel(target, options=options)
        return grpc.secure_channel(target, credentials, options=options)

    def aio_channel(self, address: str, options: list[tuple[str, int | str]], *,
                    warn: bool = True) -> grpc.aio.Channel:
        """An asyncio channel to ``address``, as ``channel``."""
        target, options = self._target(address, options, warn)
        credentials = self.credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, credentials, options=options)

    def _target(self, address: str, options: list[tuple[str, int | str]], warn: bool,
                ) -> tuple[str, list[tuple[str, int | str]]]:
        """The gRPC target for ``address`` and every channel option it needs."""
        if warn:
            self.warn_if_exposed(address)
        target, balancing = channel_target(address)
        name = [("grpc.ssl_target_name_override", self.server_name)] \
            if self.server_name else []
        return target, options + balancing + name

    def warn_if_exposed(self, address: str) -> None:
        """A token in clear text is anyone's on the path: say so when it leaves the host (the
        message names the address, never the token)."""
        if self.token and not self.tls and not is_loopback(address):
            log.warning("sending a bearer token to %s without TLS: anyone on the path can "
                        "read it", address)


NO_SECURITY = ConnectionSecurity()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise SecurityConfigError(f"cannot read the {what} {path}: "
                                  f"{error.strerror or error}") from error
