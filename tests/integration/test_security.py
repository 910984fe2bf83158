"""TLS, mutual TLS and bearer tokens on the real server, through the real clients. The CAs and
certificates are made at test time (tests/support/certificates.py); nothing secret is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from axon.client.common import AxonClientError, RetryPolicy
from axon.client.demo import SAMPLES
from axon.client.security import ConnectionSecurity
from axon.client.server_process import ServerProcess, start_server
from axon.client.sync_client import AxonClient
from axon.protocol.v1 import classification_pb2 as cls
from tests.support.certificates import CertificateAuthority, write_tls_files
from tests.support.repositories import DIGITS
from tests.support.scrape import scrape

ONCE = RetryPolicy(attempts=1)
ONE = np.full((1, 784), 0.5, dtype=np.float32)
INFER_TOKEN = "infer-0123456789abcdef"
ADMIN_TOKEN = "admin-0123456789abcdef"


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(AxonClientError) as error:
        call()  # type: ignore[operator]
    return error.value.code


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority("axon test CA")


@pytest.fixture(scope="module")
def tls_files(authority: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory,
              ) -> dict[str, Path]:
    return write_tls_files(authority, tmp_path_factory.mktemp("tls"))


def serve(repository: Path, log: Path, *flags: str,
          env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    server = start_server(repository, log, "--models", DIGITS, *flags, env=env)
    try:
        yield server
    finally:
        server.stop()


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


@pytest.fixture(scope="module")
def token_server(serving_repository: Path, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("tokens")
    tokens = folder / "tokens"
    tokens.write_text(f"# who may call\nadmin:{ADMIN_TOKEN}\n")
    yield from serve(serving_repository, folder / "server.log", "--tokens-file", str(tokens),
                     env={"AXON_TOKENS": f"infer:{INFER_TOKEN}"})


def test_tls_serves_both_apis_and_refuses_plain_text_and_strangers(
        tls_server: ServerProcess, authority: CertificateAuthority) -> None:
    trusted = ConnectionSecurity(tls=True, root_certificates=authority.certificate)
    with AxonClient(tls_server.address, security=trusted, retry=ONCE) as client:
        assert client.health() == "SERVING"
        assert client.infer(DIGITS, ONE)["probabilities"].shape == (1, 10)
        image = next(SAMPLES.glob("*.png")).read_bytes()
        assert len(client.classify([image], model=DIGITS).results) == 1
    stranger = ConnectionSecurity(tls=True,
                                  root_certificates=CertificateAuthority("other").certificate)
    for security in (ConnectionSecurity(), stranger):
        with AxonClient(tls_server.address, security=security, retry=ONCE, timeout=5) as client:
            assert code_of(lambda c=client: c.infer(DIGITS, ONE)) == grpc.StatusCode.UNAVAILABLE
    # The server took no harm from the failed handshakes.
    with AxonClient(tls_server.address, security=trusted, retry=ONCE) as client:
        assert client.health() == "SERVING"


def test_mutual_tls_refuses_clients_without_a_certificate_from_its_ca(
        mtls_server: ServerProcess, authority: CertificateAuthority,
        tls_files: dict[str, Path]) -> None:
    known = ConnectionSecurity.from_files(ca=tls_files["ca"], cert=tls_files["client.pem"],
                                          key=tls_files["client.key"])
    with AxonClient(mtls_server.address, security=known, retry=ONCE) as client:
        assert client.infer(DIGITS, ONE)["probabilities"].shape == (1, 10)
    foreign = CertificateAuthority("other").issue_client("intruder")
    for security in (
            ConnectionSecurity(tls=True, root_certificates=authority.certificate),
            ConnectionSecurity(tls=True, root_certificates=authority.certificate,
                               certificate_chain=foreign.certificate,
                               private_key=foreign.key)):
        with AxonClient(mtls_server.address, security=security, retry=ONCE,
                        timeout=5) as client:
            assert code_of(lambda c=client: c.infer(DIGITS, ONE)) == grpc.StatusCode.UNAVAILABLE


def test_tokens_gate_every_api_and_roles_gate_model_control(
        token_server: ServerProcess) -> None:
    address = token_server.address
    image = next(SAMPLES.glob("*.png")).read_bytes()
    for token in (None, "wrong-token-0123456789"):
        security = ConnectionSecurity(token=token)
        with AxonClient(address, security=security, retry=ONCE) as client:
            for call in (lambda c=client: c.infer(DIGITS, ONE),
                         lambda c=client: c.classify([image], model=DIGITS),
                         lambda c=client: list(c.classify_stream(iter([(
                             "0", cls.ClassifyRequest(images=[cls.Image(encoded=image)]))]))),
                         lambda c=client: c.models(),
                         lambda c=client: c.model_metadata(DIGITS),
                         lambda c=client: c.unload_model(DIGITS)):
                assert code_of(call) == grpc.StatusCode.UNAUTHENTICATED
            assert client.health() == "SERVING"  # probes need no token
            assert client.health(DIGITS) == "SERVING"
    with AxonClient(address, security=ConnectionSecurity(token=INFER_TOKEN),
                    retry=ONCE) as client:
        assert client.infer(DIGITS, ONE)["probabilities"].shape == (1, 10)
        assert client.classify([image], model=DIGITS).model_name == DIGITS
        assert DIGITS in {m.name for m in client.models()}
        assert code_of(lambda: client.unload_model(DIGITS)) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: client.load_model(DIGITS)) == grpc.StatusCode.PERMISSION_DENIED
        assert client.infer(DIGITS, ONE)["probabilities"].shape == (1, 10)  # still served
    with AxonClient(address, security=ConnectionSecurity(token=ADMIN_TOKEN),
                    retry=ONCE) as admin:
        admin.unload_model(DIGITS)
        assert code_of(lambda: admin.infer(DIGITS, ONE)) == grpc.StatusCode.UNAVAILABLE
        admin.load_model(DIGITS)
        assert admin.infer(DIGITS, ONE)["probabilities"].shape == (1, 10)
    assert token_server.metrics_port is not None
    page = scrape(token_server.metrics_port)
    assert page.value("axon_auth_refusals_total", code="UNAUTHENTICATED") == 12
    assert page.value("axon_auth_refusals_total", code="PERMISSION_DENIED") == 2
    log = token_server.log()
    assert INFER_TOKEN not in log and ADMIN_TOKEN not in log and "wrong-token" not in log
    assert "bearer tokens required except for health (1 admin, 1 infer)" in log


def test_no_model_control_refuses_load_and_unload_even_to_admin(
        serving_repository: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"admin:{ADMIN_TOKEN}\n")
    for server in serve(serving_repository, tmp_path / "server.log", "--tokens-file",
                        str(tokens), "--no-model-control"):
        with AxonClient(server.address, security=ConnectionSecurity(token=ADMIN_TOKEN),
                        retry=ONCE) as admin:
            for call in (lambda: admin.unload_model(DIGITS), lambda: admin.load_model(DIGITS)):
                assert code_of(call) == grpc.StatusCode.FAILED_PRECONDITION
            assert admin.infer(DIGITS, ONE)["probabilities"].shape == (1, 10)  # still served


@pytest.mark.parametrize("case", [
    (("--tls-cert", "{server_pem}"), {}, "tls_cert and tls_key go together"),
    (("--tls-client-ca", "{ca}"), {}, "tls_client_ca needs tls_cert and tls_key"),
    (("--tls-cert", "{ca}", "--tls-key", "{absent}"), {}, "cannot read"),
    (("--tls-cert", "{server_key}", "--tls-key", "{server_key}"), {}, "holds no PEM certificate"),
    ((), {"AXON_TOKENS": "reader:abcdefghijklmnopq"}, "unknown role 'reader'"),
    ((), {"AXON_TOKENS": "infer:short"}, "at least 16 characters"),
    ((), {"AXON_TOKENS": "infer-without-a-role-0123"}, "expected ROLE:TOKEN"),
])
def test_bad_security_settings_stop_the_server_with_one_line(
        serving_repository: Path, tls_files: dict[str, Path], tmp_path: Path,
        case: tuple[tuple[str, ...], dict[str, str], str]) -> None:
    flags, env, message = case
    paths = {**{k.replace(".", "_"): str(v) for k, v in tls_files.items()},
             "absent": str(tmp_path / "absent")}
    result = subprocess.run(
        [sys.executable, "-m", "axon.cli", "serve", "--model-repository",
         str(serving_repository), "--address", "127.0.0.1:0", "--metrics-address",
         "127.0.0.1:0", "--http-address", "127.0.0.1:0", *(f.format(**paths) for f in flags)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **env})
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    for value in env.values():  # a token, even a bad one, is not echoed
        assert (value.partition(":")[2] or value) not in result.stderr


@pytest.fixture(scope="module")
def locked_server(serving_repository: Path, tls_files: dict[str, Path],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """TLS and tokens together, as a production deployment runs."""
    yield from serve(serving_repository, tmp_path_factory.mktemp("locked") / "server.log",
                     "--tls-cert", str(tls_files["server.pem"]),
                     "--tls-key", str(tls_files["server.key"]),
                     env={"AXON_TOKENS": f"infer:{INFER_TOKEN}"})


def test_classify_and_bench_reach_a_server_with_tls_and_tokens(
        locked_server: ServerProcess, serving_repository: Path,
        tls_files: dict[str, Path]) -> None:
    def axon(*args: str, token: str = INFER_TOKEN) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "axon.cli", *args, "--address",
                               locked_server.address, "--tls-ca", str(tls_files["ca"])],
                              capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, "AXON_TOKEN": token})

    classified = axon("classify", str(SAMPLES), "--model", DIGITS, "--json")
    assert classified.returncode == 0, classified.stderr
    assert len(classified.stdout.splitlines()) == 10
    refused = axon("classify", str(SAMPLES), "--model", DIGITS, token="")
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    bench = ("bench", "--model-repository", str(serving_repository), "--model", DIGITS,
             "--scenarios", "2x1", "--seconds", "0.3")
    measured = axon(*bench, "--generators", "python")
    assert measured.returncode == 0, measured.stderr
    assert "| python |" in measured.stdout
    h2load = axon(*bench, "--generators", "h2load")
    assert h2load.returncode == 1 and "with --generators python" in h2load.stderr
    for output in (classified, refused, measured, h2load):
        assert INFER_TOKEN not in output.stdout + output.stderr
