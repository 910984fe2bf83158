"""Throw-away certificate authorities and certificates, made at test time (nothing secret is
kept in the repository): a CA, a server certificate for 127.0.0.1/localhost, client
certificates."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pem:
    """A certificate and its private key, PEM-encoded."""

    certificate: bytes
    key: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class CertificateAuthority:
    """A self-signed CA that issues leaf certificates valid for a day."""

    def __init__(self, name: str) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = _name(name)
        now = datetime.datetime.now(datetime.UTC)
        self._certificate = (
            x509.CertificateBuilder().subject_name(self._name).issuer_name(self._name)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256()))

    @property
    def certificate(self) -> bytes:
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    def issue_server(self, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), *,
                     client_use: bool = False) -> Pem:
        """A certificate for ``hosts``; ``client_use`` also lets it serve as a client
        certificate (extended key usage clientAuth besides serverAuth)."""
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]
        if client_use:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        return self._issue(hosts[0], usages, x509.SubjectAlternativeName(names))

    def issue_client(self, name: str) -> Pem:
        return self._issue(name, [ExtendedKeyUsageOID.CLIENT_AUTH], None)

    def _issue(self, common_name: str, usages: list[x509.ObjectIdentifier],
               alternative_names: x509.SubjectAlternativeName | None) -> Pem:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self._name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if alternative_names is not None:
            builder = builder.add_extension(alternative_names, critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        return Pem(certificate.public_bytes(serialization.Encoding.PEM),
                   key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))


def write_tls_files(authority: CertificateAuthority, folder: Path) -> dict[str, Path]:
    """The authority's certificate, a server's and a client's ("pipeline") certificates and
    keys written to ``folder``, by the names the TLS tests use."""
    server = authority.issue_server()
    client = authority.issue_client("pipeline")
    files = {"ca": authority.certificate, "server.pem": server.certificate,
             "server.key": server.key, "client.pem": client.certificate,
             "client.key": client.key}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in files}
