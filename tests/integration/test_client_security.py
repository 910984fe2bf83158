"""The clients' TLS, mutual-TLS and token options, against a real gRPC server on loopback.

Axon's own server learns TLS and tokens with the security issue; until then the peer here is a
plain grpcio server running the stock grpc.health.v1 servicer, secured with throw-away
certificates, with an interceptor that records the metadata each call brought. The handshakes
and the metadata on the wire are real.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from axon.client.async_client import AsyncAxonClient
from axon.client.common import AxonClientError, RetryPolicy
from axon.client.demo import SAMPLES
from axon.client.security import ConnectionSecurity, SecurityConfigError
from axon.client.sync_client import AxonClient
from axon.client.targets import channel_target, is_loopback
from axon.protocol.v1 import classification_pb2 as cls
from tests.support.certificates import CertificateAuthority, Pem

ONCE = RetryPolicy(attempts=1)


class MetadataRecorder(grpc.ServerInterceptor):
    """Keeps (method, metadata) of every call the server receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          details: grpc.HandlerCallDetails) -> Any:
        metadata = {key: str(value) for key, value in details.invocation_metadata}
        self.calls.append((details.method, metadata))
        return continuation(details)


class Peer:
    def __init__(self, address: str, recorder: MetadataRecorder) -> None:
        self.address = address
        self.recorder = recorder


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority("axon test CA")


@pytest.fixture(scope="module")
def server_pem(authority: CertificateAuthority) -> Pem:
    return authority.issue_server()


def _serve(credentials: grpc.ServerCredentials) -> Iterator[Peer]:
    recorder = MetadataRecorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[recorder])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield Peer(f"127.0.0.1:{port}", recorder)
    finally:
        server.stop(grace=None)


@pytest.fixture(scope="module")
def tls_peer(server_pem: Pem) -> Iterator[Peer]:
    yield from _serve(grpc.ssl_server_credentials([(server_pem.key, server_pem.certificate)]))


@pytest.fixture(scope="module")
def mtls_peer(server_pem: Pem, authority: CertificateAuthority) -> Iterator[Peer]:
    yield from _serve(grpc.ssl_server_credentials(
        [(server_pem.key, server_pem.certificate)], root_certificates=authority.certificate,
        require_client_auth=True))


def test_tls_with_the_right_ca_connects_and_every_call_carries_the_token(
        tls_peer: Peer, authority: CertificateAuthority) -> None:
    security = ConnectionSecurity(tls=True, root_certificates=authority.certificate,
                                  token="s3cret-token")
    with AxonClient(tls_peer.address, security=security, retry=ONCE) as client:
        assert client.health() == "SERVING"
        with pytest.raises(AxonClientError) as stream_error:  # the peer has no Classifier
            list(client.classify_stream(iter([("0", cls.ClassifyRequest())])))
        assert stream_error.value.code == grpc.StatusCode.UNIMPLEMENTED
    methods = {method: metadata.get("authorization") for method, metadata in
               tls_peer.recorder.calls}
    assert methods["/grpc.health.v1.Health/Check"] == "Bearer s3cret-token"
    assert methods["/axon.v1.Classifier/ClassifyStream"] == "Bearer s3cret-token"


def test_the_asyncio_client_speaks_tls_and_sends_the_token(
        tls_peer: Peer, authority: CertificateAuthority) -> None:
    security = ConnectionSecurity(tls=True, root_certificates=authority.certificate,
                                  token="aio-token")

    async def check() -> str:
        async with AsyncAxonClient(tls_peer.address, security=security, retry=ONCE) as client:
            return await client.health()

    assert asyncio.run(check()) == "SERVING"
    assert ("/grpc.health.v1.Health/Check", "Bearer aio-token") in [
        (method, metadata.get("authorization")) for method, metadata in tls_peer.recorder.calls]


def test_a_server_certificate_from_another_ca_or_plain_text_is_refused(tls_peer: Peer) -> None:
    stranger = CertificateAuthority("someone else")
    for security in (ConnectionSecurity(tls=True, root_certificates=stranger.certificate),
                     ConnectionSecurity()):
        with AxonClient(tls_peer.address, security=security, retry=ONCE, timeout=5) as client:
            with pytest.raises(AxonClientError) as error:
                client.health()
            assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_the_server_name_override_checks_the_certificate_against_that_name(
        authority: CertificateAuthority) -> None:
    """A certificate issued for a DNS name only, reached by IP: the override makes it match,
    and a wrong override fails the check."""
    named = authority.issue_server(("axon.internal",))
    for peer in _serve(grpc.ssl_server_credentials([(named.key, named.certificate)])):
        good = ConnectionSecurity(tls=True, root_certificates=authority.certificate,
                                  server_name="axon.internal")
        with AxonClient(peer.address, security=good, retry=ONCE, timeout=5) as client:
            assert client.health() == "SERVING"
        wrong = ConnectionSecurity(tls=True, root_certificates=authority.certificate,
                                   server_name="other.internal")
        with AxonClient(peer.address, security=wrong, retry=ONCE, timeout=5) as client:
            with pytest.raises(AxonClientError) as error:
                client.health()
            assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_from_the_servers_ca(
        mtls_peer: Peer, authority: CertificateAuthority) -> None:
    mine = authority.issue_client("pipeline")
    theirs = CertificateAuthority("someone else").issue_client("intruder")
    accepted = ConnectionSecurity(tls=True, root_certificates=authority.certificate,
                                  certificate_chain=mine.certificate, private_key=mine.key)
    with AxonClient(mtls_peer.address, security=accepted, retry=ONCE, timeout=5) as client:
        assert client.health() == "SERVING"
    for security in (
            ConnectionSecurity(tls=True, root_certificates=authority.certificate),
            ConnectionSecurity(tls=True, root_certificates=authority.certificate,
                               certificate_chain=theirs.certificate, private_key=theirs.key)):
        with AxonClient(mtls_peer.address, security=security, retry=ONCE, timeout=5) as client:
            with pytest.raises(AxonClientError) as error:
                client.health()
            assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_options_are_read_from_files_and_checked(tmp_path: Path,
                                                 authority: CertificateAuthority) -> None:
    client_pem = authority.issue_client("pipeline")
    (tmp_path / "ca.pem").write_bytes(authority.certificate)
    (tmp_path / "client.pem").write_bytes(client_pem.certificate)
    (tmp_path / "client.key").write_bytes(client_pem.key)
    (tmp_path / "token").write_text("t0ken\n")
    security = ConnectionSecurity.from_files(
        ca=tmp_path / "ca.pem", cert=tmp_path / "client.pem", key=tmp_path / "client.key",
        token_file=tmp_path / "token")
    assert security.tls and security.root_certificates == authority.certificate
    assert security.metadata == (("authorization", "Bearer t0ken"),)
    assert "t0ken" not in repr(security) and "PRIVATE KEY" not in repr(security)
    with pytest.raises(SecurityConfigError, match="needs its private key"):
        ConnectionSecurity.from_files(cert=tmp_path / "client.pem")
    with pytest.raises(SecurityConfigError, match="cannot read the CA certificate"):
        ConnectionSecurity.from_files(ca=tmp_path / "absent.pem")
    with pytest.raises(SecurityConfigError, match="no spaces"):
        ConnectionSecurity(token="two words")
    with pytest.raises(SecurityConfigError, match="not both"):
        ConnectionSecurity.from_files(token="a", token_file=tmp_path / "token")
    with pytest.raises(SecurityConfigError, match="need TLS on"):
        ConnectionSecurity(root_certificates=authority.certificate)


def test_axon_classify_takes_the_same_options(tls_peer: Peer, authority: CertificateAuthority,
                                              tmp_path: Path) -> None:
    """The peer has no Classifier, so a call that got through the handshake ends UNIMPLEMENTED,
    and one that did not ends UNAVAILABLE."""
    ca = tmp_path / "ca.pem"
    ca.write_bytes(authority.certificate)
    image = next(SAMPLES.glob("*.png"))
    base = [sys.executable, "-m", "axon.cli", "classify", str(image), "--address",
            tls_peer.address, "--retries", "0"]

    def run(*extra: str, token: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "AXON_TOKEN": token}, check=False)

    through = run("--tls-ca", str(ca), token="cli-token")
    assert through.returncode == 1 and "UNIMPLEMENTED" in through.stderr, through.stderr
    assert "cli-token" not in through.stderr + through.stdout
    assert ("/axon.v1.Classifier/ClassifyStream", "Bearer cli-token") in [
        (method, metadata.get("authorization")) for method, metadata in tls_peer.recorder.calls]
    plain = run()
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr
    half = run("--tls-cert", str(ca))
    assert half.returncode == 1 and "Traceback" not in half.stderr
    assert "axon: error: a client certificate needs its private key" in half.stderr


TOKEN = "l34k-me-n0t"
EXPOSED = "without TLS"
LOOPBACK = ["localhost:8001", "LocalHost:8001", "localhost", "127.0.0.1:8001", "127.9.8.7:8001",
            "127.0.0.1", "[::1]:8001", "[::1]", "::1", "127.0.0.1:8001,[::1]:8002",
            "dns:///localhost:8001", "dns:localhost:8001", "ipv4:127.0.0.1:8001",
            "ipv6:[::1]:8001", "unix:/run/axon.sock", "unix:///run/axon.sock",
            "unix-abstract:axon"]
"""Addresses on this host, as ``AxonClient`` and ``axon classify --address`` take them."""
REMOTE = ["10.0.0.1:8001", "axon.example.com:8001", "localhost.example.com:8001",
          "localhost.example.com", "127.0.0.1.example.com:8001", "[::2]:8001",
          "127.0.0.1:8001,10.0.0.2:8001", "dns:///axon-headless.axon.svc.cluster.local:8001",
          "dns:///localhost.example.com:8001", "ipv4:10.0.0.1:8001",
          "dns://10.0.0.53/localhost:8001"]
"""Addresses off this host, some of them starting like loopback ones."""


def token_warnings(caplog: pytest.LogCaptureFixture, address: str,
                   security: ConnectionSecurity) -> list[str]:
    """The warnings logged while a client opens its channel to ``address`` (lazily: nothing is
    sent); the token must appear in none of the log."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        AxonClient(address, security=security, retry=ONCE).close()
    assert TOKEN not in caplog.text
    return [record.getMessage() for record in caplog.records
            if record.levelno >= logging.WARNING]


@pytest.mark.parametrize("address", REMOTE)
def test_a_token_leaving_the_host_without_tls_is_warned_about(
        caplog: pytest.LogCaptureFixture, address: str) -> None:
    warnings = token_warnings(caplog, address, ConnectionSecurity(token=TOKEN))
    assert len(warnings) == 1 and EXPOSED in warnings[0] and address in warnings[0], warnings
    # With TLS the token is protected, and without a token there is nothing to protect.
    assert token_warnings(caplog, address, ConnectionSecurity(tls=True, token=TOKEN)) == []
    assert token_warnings(caplog, address, ConnectionSecurity()) == []


@pytest.mark.parametrize("address", LOOPBACK)
def test_a_token_staying_on_the_host_is_not_warned_about(
        caplog: pytest.LogCaptureFixture, address: str) -> None:
    assert token_warnings(caplog, address, ConnectionSecurity(token=TOKEN)) == []


def test_the_loopback_check_reads_the_targets_the_client_makes_of_address_lists() -> None:
    """A list of addresses becomes one ``ipv4:``/``ipv6:`` target (clients/targets.py); the
    check reads those the same way."""
    for addresses, local in (("127.0.0.1:8001,127.0.0.2:8001", True),
                             ("[::1]:8001,[::1]:8002", True),
                             ("127.0.0.1:8001,10.0.0.2:8001", False),
                             ("[::1]:8001,[::2]:8001", False)):
        target, _ = channel_target(addresses)
        assert target.startswith(("ipv4:", "ipv6:")), target
        assert is_loopback(target) is local and is_loopback(addresses) is local, target


def test_a_token_sent_in_plain_text_over_loopback_arrives_without_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """A real call: the token is on the wire to a loopback server, and nothing is logged."""
    for peer in _serve(grpc.insecure_server_credentials()):
        port = peer.address.rpartition(":")[2]
        for address in (peer.address, f"localhost:{port}", f"dns:///localhost:{port}"):
            caplog.clear()
            with caplog.at_level(logging.INFO), AxonClient(
                    address, security=ConnectionSecurity(token=TOKEN), retry=ONCE) as client:
                assert client.health() == "SERVING"
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
            assert TOKEN not in caplog.text
        assert [metadata.get("authorization") for _, metadata in peer.recorder.calls] \
            == [f"Bearer {TOKEN}"] * 3
