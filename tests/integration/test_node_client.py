"""The Node.js client (clients/node, @grpc/grpc-js + the repository's proto/) against the real
server: a caller in another language gets the same answers as the Python client, and reaches
a server with TLS, mutual TLS and tokens as the Python client does (throw-away certificates
from tests/support/certificates.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from axon.client.demo import SAMPLES
from axon.client.server_process import ServerProcess, start_server
from axon.client.sync_client import AxonClient
from tests.support.certificates import CertificateAuthority
from tests.support.repositories import DIGITS

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"
pytestmark = pytest.mark.external
TOKEN = "node-infer-0123456789abcdef"


def node(*args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    """``classify.mjs`` with ``args``; ``token`` in AXON_TOKEN (empty: none)."""
    binary = shutil.which("node")
    assert binary, "Node.js is not installed (Debian: nodejs); CI machines have Node 20"
    assert (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir(), \
        "the Node client's packages are missing: make node-client (make test does it)"
    return subprocess.run([binary, str(NODE_CLIENT / "classify.mjs"), *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "AXON_TOKEN": token})


def test_node_client_classifies_like_the_python_client(server: ServerProcess) -> None:
    files = sorted(SAMPLES.glob("*.png"))
    result = node("--address", server.address, "--model", DIGITS, "--top-k", "3",
                  *map(str, files))
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["image"] for a in answers] == [f.name for f in files]
    with AxonClient(server.address) as client:
        expected = client.classify([f.read_bytes() for f in files], model=DIGITS, top_k=3)
    for answer, python in zip(answers, expected.results, strict=True):
        assert (answer["model"], answer["version"]) == (DIGITS, expected.model_version)
        assert [(c["index"], c["label"]) for c in answer["classes"]] == \
            [(p.index, p.label) for p in python]
        assert [c["probability"] for c in answer["classes"]] == \
            pytest.approx([p.probability for p in python], rel=1e-6)
    correct = sum(a["classes"][0]["label"] == a["image"].split("-")[1] for a in answers)
    assert correct >= 7


def test_node_client_reports_grpc_errors_and_usage_errors(server: ServerProcess,
                                                          tmp_path: Path) -> None:
    sample = str(next(SAMPLES.glob("*.png")))
    unknown = node("--address", server.address, "--model", "no-such-model", sample)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("axon-node: NOT_FOUND: unknown model 'no-such-model'")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    bad = node("--address", server.address, "--model", DIGITS, str(corrupt))
    assert bad.returncode == 1 and "axon-node: INVALID_ARGUMENT: image 0" in bad.stderr
    missing = node("--address", server.address, str(tmp_path / "absent.png"))
    assert missing.returncode == 2 and "absent.png: no such file" in missing.stderr


# --- TLS, mutual TLS, tokens ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("node-tls")
    authority = CertificateAuthority("node test CA")
    server = authority.issue_server(("127.0.0.1", "axon.internal"))
    client = authority.issue_client("node pipeline")
    stranger = CertificateAuthority("someone else")
    intruder = stranger.issue_client("intruder")
    contents = {"ca.pem": authority.certificate, "server.pem": server.certificate,
                "server.key": server.key, "client.pem": client.certificate,
                "client.key": client.key, "stranger.pem": stranger.certificate,
                "intruder.pem": intruder.certificate, "intruder.key": intruder.key,
                "token": f"{TOKEN}\n".encode()}
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in contents}


def secured_server(repository: Path, log: Path, files: dict[str, Path], *flags: str,
                   ) -> Iterator[ServerProcess]:
    server = start_server(repository, log, "--models", DIGITS, "--tls-cert",
                          str(files["server.pem"]), "--tls-key", str(files["server.key"]),
                          *flags, env={"AXON_TOKENS": f"infer:{TOKEN}"})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def locked_server(serving_repository: Path, tls_files: dict[str, Path],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """TLS and tokens, as the Kubernetes deployment runs."""
    yield from secured_server(serving_repository,
                              tmp_path_factory.mktemp("node-locked") / "server.log", tls_files)


@pytest.fixture(scope="module")
def mtls_server(serving_repository: Path, tls_files: dict[str, Path],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from secured_server(serving_repository,
                              tmp_path_factory.mktemp("node-mtls") / "server.log", tls_files,
                              "--tls-client-ca", str(tls_files["ca.pem"]))


def classified(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nothing else on stderr, Node's warnings included
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == 1 and answers[0]["model"] == DIGITS


def refused(result: subprocess.CompletedProcess[str], code: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"axon-node: {code}: "), result.stderr
    assert result.stdout == ""


def test_node_client_speaks_tls_and_sends_the_token(
        locked_server: ServerProcess, tls_files: dict[str, Path]) -> None:
    sample = str(next(SAMPLES.glob("*.png")))
    base = ("--address", locked_server.address, "--model", DIGITS, sample)
    ca = ("--tls-ca", str(tls_files["ca.pem"]))
    runs = {
        "token file": node(*base, *ca, "--token-file", str(tls_files["token"])),
        "token variable": node(*base, *ca, token=TOKEN),
        "server name": node(*base, *ca, "--tls-server-name", "axon.internal", token=TOKEN),
        "wrong name": node(*base, *ca, "--tls-server-name", "other.internal", token=TOKEN),
        "foreign CA": node(*base, "--tls-ca", str(tls_files["stranger.pem"]), token=TOKEN),
        "plain text": node(*base, token=TOKEN),
        "no token": node(*base, *ca),
        "wrong token": node(*base, *ca, token="wrong-token-0123456789"),
    }
    for name in ("token file", "token variable", "server name"):
        classified(runs[name])
    for name in ("wrong name", "foreign CA", "plain text"):
        refused(runs[name], "UNAVAILABLE")
    for name in ("no token", "wrong token"):
        refused(runs[name], "UNAUTHENTICATED")
    for result in runs.values():
        assert TOKEN not in result.stdout + result.stderr
        assert "wrong-token" not in result.stdout + result.stderr
    assert TOKEN not in locked_server.log()


def test_node_client_answers_mutual_tls_with_its_certificate(
        mtls_server: ServerProcess, tls_files: dict[str, Path]) -> None:
    sample = str(next(SAMPLES.glob("*.png")))
    base = ("--address", mtls_server.address, "--model", DIGITS, "--tls-ca",
            str(tls_files["ca.pem"]), sample)
    classified(node(*base, "--tls-cert", str(tls_files["client.pem"]), "--tls-key",
                    str(tls_files["client.key"]), token=TOKEN))
    refused(node(*base, token=TOKEN), "UNAVAILABLE")
    refused(node(*base, "--tls-cert", str(tls_files["intruder.pem"]), "--tls-key",
                 str(tls_files["intruder.key"]), token=TOKEN), "UNAVAILABLE")


def test_node_client_security_options_are_checked_and_the_token_kept(
        tls_files: dict[str, Path], tmp_path: Path) -> None:
    sample = str(next(SAMPLES.glob("*.png")))
    half = node("--tls-cert", str(tls_files["client.pem"]), sample)
    assert half.returncode == 2
    assert "a client certificate needs its private key" in half.stderr
    absent = node("--tls-ca", str(tmp_path / "absent.pem"), sample)
    assert absent.returncode == 2 and "cannot read the CA certificate" in absent.stderr
    spaced = node(sample, token="two words-0123456789")
    assert spaced.returncode == 2 and "printable ASCII with no spaces" in spaced.stderr
    assert "two words" not in spaced.stderr
    # A token leaving the host in plain text: a warning (TEST-NET-1 address: nothing answers).
    exposed = node("--address", "192.0.2.1:8001", "--timeout-ms", "300", sample, token=TOKEN)
    assert exposed.returncode == 1
    assert "axon-node: warning: sending a bearer token to 192.0.2.1:8001 without TLS" \
        in exposed.stderr
    assert TOKEN not in exposed.stdout + exposed.stderr
