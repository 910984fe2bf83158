"""The Node.js client (clients/node, @grpc/grpc-js + the repository's proto/) against the real
server: a caller in another language gets the same answers as the Python client."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from axon.client.demo import SAMPLES
from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from tests.support.repositories import DIGITS

NODE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "node"
pytestmark = pytest.mark.external


def node(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("node")
    assert binary, "Node.js is not installed (Debian: nodejs); CI machines have Node 20"
    assert (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir(), \
        "the Node client's packages are missing: make node-client (make test does it)"
    return subprocess.run([binary, str(NODE_CLIENT / "classify.mjs"), *args],
                          capture_output=True, text=True, timeout=60, check=False)


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
