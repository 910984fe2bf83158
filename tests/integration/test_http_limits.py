"""The HTTP port's limits at their edges, its deadlines and its drain, on real servers: a body
is measured by what it declares before a byte of it is read, a body that never ends is timed
out, --max-concurrent-rpcs counts HTTP and gRPC calls together, a Triton ``timeout`` is a
deadline, and SIGTERM refuses new requests while the admitted ones finish."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from axon.client.server_process import ServerProcess, start_server
from tests.support.http import (
    Answer,
    binary_infer,
    call,
    get,
    json_infer,
    post_json,
    raw_exchange,
    status_of,
)
from tests.support.repositories import DIGITS, HOLD_DEADLINE, HOLD_QUEUE
from tests.support.scrape import scrape
from tests.support.stall_model import stall_batch, trips_for

MESSAGE_BYTES = 65_536
IMAGE_BYTES = 4_096
CONCURRENT_RPCS = 2
BODY_TIMEOUT_S = 1.0
ONE = np.full((1, 784), 0.5, dtype=np.float32)


@pytest.fixture(scope="module")
def limited(serving_repository: Path, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[ServerProcess]:
    server = start_server(
        serving_repository, tmp_path_factory.mktemp("http-limits") / "server.log",
        "--models", f"{DIGITS},{HOLD_QUEUE},{HOLD_DEADLINE}",
        "--max-message-bytes", str(MESSAGE_BYTES), "--max-image-bytes", str(IMAGE_BYTES),
        "--max-concurrent-rpcs", str(CONCURRENT_RPCS),
        "--http-body-timeout-seconds", str(BODY_TIMEOUT_S))
    try:
        yield server
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()


@pytest.fixture
def address(limited: ServerProcess) -> Iterator[str]:
    yield limited.http_address
    # After every refusal the server still answers.
    answer = post_json(limited.http_address, f"/v2/models/{DIGITS}/infer", json_infer(ONE))
    assert answer.status == 200, answer.body


def padded_infer(size: int) -> bytes:
    """A valid JSON inference request padded with spaces to exactly ``size`` bytes."""
    body = json.dumps(json_infer(ONE)).encode()
    return body + b" " * (size - len(body))


def test_a_body_at_the_limit_is_served_and_one_byte_more_is_refused(address: str) -> None:
    path = f"/v2/models/{DIGITS}/infer"
    assert call(address, "POST", path, padded_infer(MESSAGE_BYTES)).status == 200
    over = call(address, "POST", path, padded_infer(MESSAGE_BYTES + 1))
    assert over.status == 413
    assert over.error == f"the body is {MESSAGE_BYTES + 1:,} bytes; ModelInfer takes at most " \
                         f"{MESSAGE_BYTES:,} (--max-message-bytes)"


def test_a_huge_declared_length_is_refused_before_the_body_is_sent(address: str) -> None:
    started = time.monotonic()
    raw = raw_exchange(address, f"POST /v2/models/{DIGITS}/infer HTTP/1.1\r\nHost: x\r\n"
                                f"Content-Length: {10**12}\r\n\r\n".encode(), wait=5,
                       first=True)
    assert status_of(raw) == 413 and b"1,000,000,000,000 bytes" in raw
    assert b"Connection: close" in raw
    assert time.monotonic() - started < 2  # answered at once, without waiting for the body


def test_a_chunked_body_past_the_limit_is_refused(address: str) -> None:
    head = f"POST /v2/models/{DIGITS}/infer HTTP/1.1\r\nHost: x\r\n" \
           "Transfer-Encoding: chunked\r\n\r\n".encode()
    chunk = b"a" * 30_000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    raw = raw_exchange(address, head + chunks)
    assert status_of(raw) == 413 and b"more than 65,536 bytes" in raw


def test_a_body_that_never_ends_is_timed_out(address: str) -> None:
    started = time.monotonic()
    raw = raw_exchange(address, f"POST /v2/models/{DIGITS}/infer HTTP/1.1\r\nHost: x\r\n"
                                "Content-Length: 1000\r\n\r\n{\"inputs\": [".encode(), wait=10)
    elapsed = time.monotonic() - started
    assert status_of(raw) == 408 and b"did not arrive within 1 s" in raw
    assert BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + 3


def test_an_image_past_the_image_limit_is_refused(address: str) -> None:
    answer = call(address, "POST", f"/v2/models/{DIGITS}/classify", b"\x89PNG" * IMAGE_BYTES,
                  {"Content-Type": "image/png"})
    assert answer.status == 413 and "(--max-image-bytes)" in answer.error


def hold(address: str, model: str, seconds: float, answers: list[Answer]) -> threading.Thread:
    """A request that keeps ``model`` busy about ``seconds``, in a thread."""
    body, headers = binary_infer(stall_batch(trips_for(seconds)))

    def run() -> None:
        answers.append(call(address, "POST", f"/v2/models/{model}/infer", body, headers))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_concurrent_calls_past_the_limit_are_refused_but_health_answers(
        address: str, limited: ServerProcess) -> None:
    answers: list[Answer] = []
    holders = [hold(address, HOLD_QUEUE, 1.5, answers) for _ in range(CONCURRENT_RPCS)]
    time.sleep(0.5)
    refused = post_json(address, f"/v2/models/{DIGITS}/infer", json_infer(ONE))
    assert refused.status == 429 and "--max-concurrent-rpcs" in refused.error
    assert get(address, "/v2/health/ready").status == 200  # probes are never refused
    for thread in holders:
        thread.join(30)
    assert [a.status for a in answers] == [200] * CONCURRENT_RPCS
    assert limited.metrics_port is not None
    assert scrape(limited.metrics_port).value(
        "axon_requests_total", model="", version="", method="ModelInfer",
        code="RESOURCE_EXHAUSTED", protocol="http") >= 1


def test_a_triton_timeout_is_the_requests_deadline(address: str) -> None:
    answers: list[Answer] = []
    holder = hold(address, HOLD_DEADLINE, 1.5, answers)
    time.sleep(0.3)
    started = time.monotonic()
    late = post_json(address, f"/v2/models/{HOLD_DEADLINE}/infer",
                     json_infer(ONE, parameters={"timeout": 200_000}))
    assert late.status == 504, late.body
    assert time.monotonic() - started < 1.0
    holder.join(30)
    assert answers[0].status == 200
    bad = post_json(address, f"/v2/models/{DIGITS}/infer",
                    json_infer(ONE, parameters={"timeout": -1}))
    assert bad.status == 400 and "parameter 'timeout'" in bad.error
    assert post_json(address, f"/v2/models/{DIGITS}/infer",
                     json_infer(ONE, parameters={"timeout": 10_000_000})).status == 200


def test_sigterm_refuses_new_requests_and_lets_admitted_ones_finish(
        serving_repository: Path, tmp_path: Path) -> None:
    server = start_server(serving_repository, tmp_path / "server.log", "--models",
                          f"{DIGITS},{HOLD_QUEUE}", "--grace-seconds", "10")
    address = server.http_address
    try:
        answers: list[Answer] = []
        holder = hold(address, HOLD_QUEUE, 2.0, answers)
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = post_json(address, f"/v2/models/{DIGITS}/infer", json_infer(ONE))
        assert refused.status == 503 and refused.error.startswith("the server is stopping")
        assert refused.headers.get("connection") == "close"
        assert get(address, "/v2/health/ready").status == 503
        assert get(address, "/v2/health/live").status == 200
        holder.join(30)
        assert [a.status for a in answers] == [200]
        assert server.process.wait(30) == 0
    finally:
        server.stop()
    assert "Traceback" not in server.log()
