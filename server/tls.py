"""TLS for the gRPC and HTTP ports, from the same files: the server's certificate, and
optionally the CA that client certificates must chain to (mutual TLS: a client without one is
refused in the handshake)."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from axon.errors import AxonError


class TlsConfigError(AxonError):
    """TLS files that are missing, unreadable or not PEM."""


def server_credentials(certificate: Path | None, key: Path | None,
                       client_ca: Path | None) -> grpc.ServerCredentials | None:
    """Credentials for ``add_secure_port``; None when no certificate is configured."""
    if certificate is None and key is None:
        if client_ca is not None:
            raise TlsConfigError("tls_client_ca needs tls_cert and tls_key: client "
                                 "certificates are checked only over TLS")
        return None
    if certificate is None or key is None:
        raise TlsConfigError("tls_cert and tls_key go together")
    chain, private_key = _pem(certificate, "certificate"), _pem(key, "private key")
    authority = _pem(client_ca, "certificate") if client_ca is not None else None
    return grpc.ssl_server_credentials([(private_key, chain)], root_certificates=authority,
                                       require_client_auth=authority is not None)


def server_ssl_context(certificate: Path | None, key: Path | None,
                       client_ca: Path | None) -> ssl.SSLContext | None:
    """The same TLS for the HTTP port (TLS 1.2 or later, HTTP/1.1 by ALPN); None without a
    certificate. Checked as ``server_credentials`` checks it."""
    if server_credentials(certificate, key, client_ca) is None:
        return None
    assert certificate is not None and key is not None
    # Not create_default_context: it would trust the system's CAs for client certificates too.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, key)
        if client_ca is not None:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError) as error:
        raise TlsConfigError(f"cannot use {certificate} and {key} for TLS: {error}") from error
    context.set_alpn_protocols(["http/1.1"])
    return context


def _pem(path: Path, kind: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TlsConfigError(f"cannot read {path}: {error.strerror or error}") from error
    if b"-----BEGIN " not in data or kind.upper().split()[-1].encode() not in data:
        raise TlsConfigError(f"{path} holds no PEM {kind}")
    return data
