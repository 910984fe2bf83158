"""The serving image's HEALTHCHECK, run outside Docker against real servers: the exact command
parsed from the Dockerfile, in the image's environment plus what a deployer sets, next to an
``axon serve`` given the same environment. Plain text, TLS, mutual TLS and tokens; certificates
are throw-away (tests/support/certificates.py).

The server binds loopback only (flags beat the environment), while the check reads
``AXON_ADDRESS`` with the image's any-address host, 0.0.0.0, as in a container.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from axon.client.server_process import ServerProcess, free_port, start_server
from tests.support.certificates import CertificateAuthority
from tests.support.deploy_files import dockerfile_stages, env_values, healthcheck

TOKEN = "infer-health-0123456789abcdef"


def image_command() -> list[str]:
    """The HEALTHCHECK's command, with the image's ``axon`` script as the tests launch it."""
    command = healthcheck(dockerfile_stages()[-1]).command
    assert command[0] == "axon"
    return [sys.executable, "-m", "axon.cli", *command[1:]]


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK in the image's environment plus ``env`` (and nothing of this test
    process's own AXON_* variables)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AXON_")}
    image = env_values(dockerfile_stages()[-1])
    return subprocess.run(image_command(), capture_output=True, text=True, timeout=60,
                          check=False, env={**clean, **image, **env})


def failed_with(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one stderr line of a failed check, which must hold ``words``."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA; a server certificate naming only the address callers use (not 127.0.0.1), one
    that may also act as a client, and a client certificate for the probe; another CA."""
    folder = tmp_path_factory.mktemp("health-tls")
    authority = CertificateAuthority("axon health CA")
    server = authority.issue_server(("axon.internal",))
    dual = authority.issue_server(("axon.internal",), client_use=True)
    probe = authority.issue_client("health probe")
    stranger = CertificateAuthority("someone else")
    intruder = stranger.issue_client("intruder")
    contents = {"ca.crt": authority.certificate, "tls.crt": server.certificate,
                "tls.key": server.key, "dual.crt": dual.certificate, "dual.key": dual.key,
                "probe.crt": probe.certificate, "probe.key": probe.key,
                "stranger.crt": stranger.certificate, "intruder.crt": intruder.certificate,
                "intruder.key": intruder.key}
    (folder / "models").mkdir()
    (folder / "tokens").write_text(f"infer:{TOKEN}\n")
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in [*contents, "models", "tokens"]}


class Deployment:
    """A real ``axon serve`` (empty repository: it serves at once) given ``settings`` as
    environment, and the same environment for the check."""

    def __init__(self, files: dict[str, Path], log: Path, settings: dict[str, str]) -> None:
        port = free_port()
        self.env = {"AXON_ADDRESS": f"0.0.0.0:{port}", **settings}
        self.server: ServerProcess = start_server(
            files["models"], log, "--address", f"127.0.0.1:{port}", env=self.env)

    def check(self, **extra: str) -> subprocess.CompletedProcess[str]:
        return run_check({**self.env, **extra})


def deploy(files: dict[str, Path], folder: Path, **settings: str) -> Iterator[Deployment]:
    deployment = Deployment(files, folder / "server.log", settings)
    try:
        yield deployment
    finally:
        assert deployment.server.stop() == 0, deployment.server.log()


@pytest.fixture(scope="module")
def plain(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[Deployment]:
    yield from deploy(files, tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def tls(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
        ) -> Iterator[Deployment]:
    yield from deploy(files, tmp_path_factory.mktemp("tls"),
                      AXON_TLS_CERT=str(files["tls.crt"]), AXON_TLS_KEY=str(files["tls.key"]),
                      AXON_TOKENS=f"infer:{TOKEN}")


@pytest.fixture(scope="module")
def mutual(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[Deployment]:
    yield from deploy(files, tmp_path_factory.mktemp("mtls"),
                      AXON_TLS_CERT=str(files["tls.crt"]), AXON_TLS_KEY=str(files["tls.key"]),
                      AXON_TLS_CLIENT_CA=str(files["ca.crt"]),
                      AXON_TOKENS_FILE=str(files["tokens"]))


def serving(result: subprocess.CompletedProcess[str], port: int) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"127.0.0.1:{port}: SERVING\n" and result.stderr == ""
    assert TOKEN not in result.stdout + result.stderr


def test_plain_text(plain: Deployment) -> None:
    serving(plain.check(), plain.server.port)


def test_plain_text_with_tokens_needs_no_token(files: dict[str, Path], tmp_path: Path) -> None:
    for deployment in deploy(files, tmp_path, AXON_TOKENS=f"infer:{TOKEN}"):
        serving(deployment.check(), deployment.server.port)


def test_tls_trusts_the_servers_own_certificate_by_its_name(tls: Deployment) -> None:
    """Tokens on too: the check sends none. The certificate names axon.internal only."""
    serving(tls.check(), tls.server.port)


def test_tls_with_a_given_ca_and_name(tls: Deployment, files: dict[str, Path]) -> None:
    serving(tls.check(AXON_HEALTH_TLS_CA=str(files["ca.crt"])), tls.server.port)
    serving(tls.check(AXON_HEALTH_TLS_CA=str(files["ca.crt"]),
                      AXON_HEALTH_TLS_SERVER_NAME="axon.internal"), tls.server.port)
    failed_with(tls.check(AXON_HEALTH_TLS_CA=str(files["stranger.crt"])), "UNAVAILABLE")
    failed_with(tls.check(AXON_HEALTH_TLS_SERVER_NAME="wrong.example"), "UNAVAILABLE")


def test_the_old_plain_text_check_fails_against_tls(tls: Deployment) -> None:
    """What the image did before: plain text to a TLS port. A deployer who gives the TLS files
    as flags instead of variables gets this, and one line that says so."""
    plain_env = {k: v for k, v in tls.env.items() if not k.startswith("AXON_TLS_")}
    failed_with(run_check(plain_env), "axon health: 127.0.0.1:", "UNAVAILABLE")


def test_mutual_tls_presents_the_probes_certificate(mutual: Deployment,
                                                    files: dict[str, Path]) -> None:
    serving(mutual.check(AXON_HEALTH_TLS_CERT=str(files["probe.crt"]),
                         AXON_HEALTH_TLS_KEY=str(files["probe.key"])), mutual.server.port)
    failed_with(mutual.check(AXON_HEALTH_TLS_CERT=str(files["intruder.crt"]),
                             AXON_HEALTH_TLS_KEY=str(files["intruder.key"])), "UNAVAILABLE")


def test_mutual_tls_without_a_probe_certificate_offers_the_servers_own(
        mutual: Deployment, files: dict[str, Path], tmp_path: Path) -> None:
    """A server certificate for servers only is refused as a client's, and the line says what
    to give; one that may also act as a client (no extended key usage, or clientAuth too) is
    taken."""
    failed_with(mutual.check(), "UNAVAILABLE", "AXON_HEALTH_TLS_CERT", "AXON_HEALTH_TLS_KEY")
    for deployment in deploy(files, tmp_path, AXON_TLS_CERT=str(files["dual.crt"]),
                             AXON_TLS_KEY=str(files["dual.key"]),
                             AXON_TLS_CLIENT_CA=str(files["ca.crt"])):
        serving(deployment.check(), deployment.server.port)


def test_a_server_that_is_not_serving_or_not_there_fails_the_check(tmp_path: Path) -> None:
    """Startup (models loading) and the drain answer NOT_SERVING; a dead server, nothing."""
    servicer = health.HealthServicer()
    server = grpc.server(ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        failed_with(run_check({"AXON_ADDRESS": f"0.0.0.0:{port}"}), "NOT_SERVING")
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        serving(run_check({"AXON_ADDRESS": f"0.0.0.0:{port}"}), port)
    finally:
        server.stop(None)
    failed_with(run_check({"AXON_ADDRESS": f"0.0.0.0:{port}"}), "UNAVAILABLE")


def test_settings_that_cannot_work_fail_with_one_line(files: dict[str, Path]) -> None:
    failed_with(run_check({"AXON_ADDRESS": "nonsense"}), "invalid server settings", "address")
    failed_with(run_check({"AXON_ADDRESS": "0.0.0.0:0"}), "picks a free port")
    failed_with(run_check({"AXON_HEALTH_TIMEOUT": "-1"}), "invalid health check settings")
    failed_with(run_check({"AXON_TLS_CERT": str(files["models"] / "absent.crt"),
                           "AXON_TLS_KEY": str(files["tls.key"])}), "cannot read")
