"""curl (the Debian package), a client we did not write, against the real server's HTTP port:
health, inference as JSON and as binary tensor data, and an image file through /classify --
the commands docs/api.md shows, with answers equal to gRPC's."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from axon.client.common import infer_request, response_arrays
from axon.client.demo import SAMPLES
from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from axon.protocol.v1 import classification_pb2 as cls
from tests.support.http import Answer, binary_infer, json_infer, outputs_of
from tests.support.repositories import DIGITS

BATCH = ((np.arange(3 * 784).reshape(3, 784) % 255) / 255).astype(np.float32)


@pytest.fixture(scope="module")
def curl() -> str:
    found = shutil.which("curl")
    assert found, "curl is not installed (Debian: curl)"
    return found


def run_curl(curl: str, *args: str) -> Answer:
    """curl's answer: status, headers (-D) and body, as the tests read them."""
    done = subprocess.run([curl, "--silent", "--show-error", "--dump-header", "-", *args],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):  # curl's Expect: 100-continue, answered
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    return Answer(int(lines[0].split()[1]), body, headers)


def grpc_arrays(server: ServerProcess) -> dict[str, np.ndarray]:
    with AxonClient(server.address) as client:
        return response_arrays(client.inference.ModelInfer(infer_request(DIGITS, BATCH),
                                                           timeout=30))


def test_curl_health(curl: str, server: ServerProcess) -> None:
    ready = run_curl(curl, "--fail", f"{server.url}/v2/health/ready")
    assert (ready.status, ready.json()) == (200, {"ready": True})
    live = run_curl(curl, f"{server.url}/v2/health/live")
    assert live.json() == {"live": True}


def test_curl_json_infer_equals_grpc(curl: str, server: ServerProcess, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps(json_infer(BATCH)))
    expected = grpc_arrays(server)
    url = f"{server.url}/v2/models/{DIGITS}/infer"
    # With the content type, and with curl -d's own default (a form type): both are JSON.
    for extra in (["-H", "Content-Type: application/json"], []):
        started = time.monotonic()
        answer = run_curl(curl, *extra, "--data-binary", f"@{request}", url)
        assert time.monotonic() - started < 1.0  # no second lost waiting for 100 Continue
        assert answer.status == 200, answer.body
        got = outputs_of(answer)
        for name, array in expected.items():
            assert got[name].tobytes() == array.tobytes(), name


def test_curl_binary_infer_equals_grpc(curl: str, server: ServerProcess,
                                       tmp_path: Path) -> None:
    body, headers = binary_infer(BATCH)
    path = tmp_path / "request.bin"
    path.write_bytes(body)
    answer = run_curl(curl, *[arg for name, value in headers.items()
                              for arg in ("-H", f"{name}: {value}")],
                      "--data-binary", f"@{path}", f"{server.url}/v2/models/{DIGITS}/infer")
    assert answer.status == 200 and answer.headers["content-type"] == "application/octet-stream"
    got = outputs_of(answer)
    for name, array in grpc_arrays(server).items():
        assert got[name].tobytes() == array.tobytes(), name


def test_curl_posts_an_image_file_to_classify(curl: str, server: ServerProcess) -> None:
    with AxonClient(server.address) as client:
        for image in sorted(SAMPLES.glob("*.png"))[:5]:
            answer = run_curl(curl, "-H", "Content-Type: image/png", "--data-binary",
                              f"@{image}", f"{server.url}/v2/models/{DIGITS}/classify?top_k=3")
            assert answer.status == 200, answer.body
            response = client.classifier.Classify(cls.ClassifyRequest(
                model_name=DIGITS, top_k=3,
                images=[cls.Image(encoded=image.read_bytes())]), timeout=30)
            assert answer.json()["classes"] == [
                {"index": c.index, "label": c.label, "probability": c.probability}
                for c in response.results[0].classes]
    refused = run_curl(curl, "-H", "Content-Type: image/png", "--data-binary", "not a png",
                       f"{server.url}/v2/models/{DIGITS}/classify")
    assert refused.status == 400 and "image 0" in refused.error
