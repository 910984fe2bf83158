"""The HTTP port under the gRPC port's TLS, mutual TLS and tokens (same settings, same files,
same roles), on real servers, with throw-away certificates."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from axon.client.server_process import ServerProcess, start_server
from tests.support.certificates import CertificateAuthority, write_tls_files
from tests.support.http import call, get, json_infer, post_json, raw_exchange, status_of
from tests.support.repositories import DIGITS, PETS
from tests.support.scrape import scrape

ONE = np.full((1, 784), 0.5, dtype=np.float32)
INFER_TOKEN = "infer-0123456789abcdef"
ADMIN_TOKEN = "admin-0123456789abcdef"
INFER = f"/v2/models/{DIGITS}/infer"


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority("axon http test CA")


@pytest.fixture(scope="module")
def tls_files(authority: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory,
              ) -> dict[str, Path]:
    return write_tls_files(authority, tmp_path_factory.mktemp("http-tls"))


def serve(repository: Path, log: Path, *flags: str,
          env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    server = start_server(repository, log, "--models", f"{DIGITS},{PETS}", *flags, env=env)
    try:
        yield server
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()


def trusting(authority: CertificateAuthority, client: tuple[Path, Path] | None = None,
             ) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=authority.certificate.decode())
    if client is not None:
        context.load_cert_chain(*client)
    return context


@pytest.fixture(scope="module")
def tls_server(serving_repository: Path, tls_files: dict[str, Path],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve(serving_repository, tmp_path_factory.mktemp("tls") / "server.log",
                     "--tls-cert", str(tls_files["server.pem"]),
                     "--tls-key", str(tls_files["server.key"]))


@pytest.fixture(scope="module")
def mtls_server(serving_repository: Path, tls_files: dict[str, Path],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve(serving_repository, tmp_path_factory.mktemp("mtls") / "server.log",
                     "--tls-cert", str(tls_files["server.pem"]),
                     "--tls-key", str(tls_files["server.key"]),
                     "--tls-client-ca", str(tls_files["ca"]))


def test_tls_serves_https_only(tls_server: ServerProcess,
                               authority: CertificateAuthority) -> None:
    address = tls_server.http_address
    assert "; http on https://127.0.0.1:" in tls_server.log()
    context = trusting(authority)
    assert get(address, "/v2/health/ready", context=context).status == 200
    assert post_json(address, INFER, json_infer(ONE), context=context).status == 200
    # Plain HTTP on the TLS port gets no HTTP answer, and the port goes on serving.
    assert status_of(raw_exchange(address, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
                                  wait=2)) == 0
    stranger = ssl.create_default_context(cadata=CertificateAuthority("other")
                                          .certificate.decode())
    with pytest.raises(ssl.SSLCertVerificationError):
        get(address, "/v2/health/live", context=stranger)
    assert get(address, "/v2/health/live", context=context).status == 200


def test_mutual_tls_requires_a_client_certificate_from_its_ca(
        mtls_server: ServerProcess, authority: CertificateAuthority,
        tls_files: dict[str, Path], tmp_path: Path) -> None:
    address = mtls_server.http_address
    known = trusting(authority, (tls_files["client.pem"], tls_files["client.key"]))
    assert post_json(address, INFER, json_infer(ONE), context=known).status == 200
    foreign = CertificateAuthority("other").issue_client("intruder")
    (tmp_path / "foreign.pem").write_bytes(foreign.certificate)
    (tmp_path / "foreign.key").write_bytes(foreign.key)
    for context in (trusting(authority),
                    trusting(authority, (tmp_path / "foreign.pem", tmp_path / "foreign.key"))):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            get(address, "/v2/health/live", context=context)
    assert get(address, "/v2/health/live", context=known).status == 200


@pytest.fixture(scope="module")
def token_server(serving_repository: Path, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("http-tokens")
    tokens = folder / "tokens"
    tokens.write_text(f"admin:{ADMIN_TOKEN}\n")
    yield from serve(serving_repository, folder / "server.log", "--tokens-file", str(tokens),
                     env={"AXON_TOKENS": f"infer:{INFER_TOKEN}"})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_and_roles_gate_http_as_they_gate_grpc(token_server: ServerProcess) -> None:
    address = token_server.http_address
    gated = [("GET", "/v2"), ("GET", f"/v2/models/{DIGITS}"),
             ("GET", f"/v2/models/{DIGITS}/ready"), ("GET", f"/v2/models/{DIGITS}/config"),
             ("GET", "/v2/models/stats"), ("POST", INFER),
             ("POST", f"/v2/models/{DIGITS}/classify"), ("POST", "/v2/repository/index"),
             ("POST", f"/v2/repository/models/{PETS}/unload")]
    for headers in ({}, bearer("wrong-token-0123456789"), {"Authorization": INFER_TOKEN}):
        for method, path in gated:
            answer = call(address, method, path, b"{}", headers)
            assert answer.status == 401, (method, path, answer.body)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in answer.error
    assert get(address, "/v2/health/ready").status == 200  # probes need no token
    assert get(address, "/v2/health/live").status == 200
    infer = bearer(INFER_TOKEN)
    assert post_json(address, INFER, json_infer(ONE), headers=infer).status == 200
    assert get(address, f"/v2/models/{DIGITS}/config", headers=infer).status == 200
    for action in ("unload", "load"):
        refused = post_json(address, f"/v2/repository/models/{PETS}/{action}", {},
                            headers=infer)
        assert refused.status == 403
        assert refused.error == f"the infer role may not call RepositoryModel{action.title()}"
    admin = bearer(ADMIN_TOKEN)
    assert post_json(address, f"/v2/repository/models/{PETS}/unload", {},
                     headers=admin).status == 200
    assert post_json(address, f"/v2/repository/models/{PETS}/load", {},
                     headers=admin).status == 200
    assert token_server.metrics_port is not None
    page = scrape(token_server.metrics_port)
    assert page.value("axon_auth_refusals_total", code="UNAUTHENTICATED") == 3 * len(gated)
    assert page.value("axon_auth_refusals_total", code="PERMISSION_DENIED") == 2
    log = token_server.log()
    assert INFER_TOKEN not in log and ADMIN_TOKEN not in log and "wrong-token" not in log
