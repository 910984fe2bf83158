"""Every request limit at its edge, on one server started with small limits: a request exactly
at the limit is served, one a step past it is refused with its status code and a message that
names the limit, and the server goes on serving."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from axon.client.common import NO_RETRIES, AxonClientError, client_error, infer_request
from axon.client.file_stream import classify_files
from axon.client.server_process import ServerProcess, running_server, start_server
from axon.client.sync_client import AxonClient
from axon.model_repository import CONFIG_FILENAME
from axon.protocol import open_inference_pb2_grpc as oip_grpc
from axon.protocol.v1 import classification_pb2 as cls
from tests.integration.test_bad_input import png_declaring
from tests.support.repositories import DIGITS
from tests.support.stall_model import STALL_CONFIG, save_stall_model, stall_request

MESSAGE_BYTES = 65_536
IMAGE_BYTES = 4_096
IMAGE_PIXELS = 28 * 28
BATCH = 4
CONCURRENT_RPCS = 2


@pytest.fixture(scope="module")
def limited(serving_repository: Path, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[ServerProcess]:
    server = start_server(
        serving_repository, tmp_path_factory.mktemp("limits") / "server.log", "--models",
        DIGITS, "--max-message-bytes", str(MESSAGE_BYTES), "--max-image-bytes",
        str(IMAGE_BYTES), "--max-image-pixels", str(IMAGE_PIXELS), "--max-batch-size",
        str(BATCH), "--max-queue-size", "64", "--max-concurrent-rpcs", str(CONCURRENT_RPCS))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(limited: ServerProcess) -> Iterator[AxonClient]:
    with AxonClient(limited.address, retry=NO_RETRIES, timeout=10) as connected:
        yield connected
        # After every refusal the server still answers.
        assert connected.infer(DIGITS, np.zeros((1, 784), np.float32))["probabilities"].shape \
            == (1, 10)


def refusal(call: object) -> AxonClientError:
    """The error ``call`` ends with (from the client, or from a raw stub call)."""
    try:
        call()  # type: ignore[operator]
    except AxonClientError as error:
        return error
    except grpc.RpcError as error:
        return client_error(error)
    raise AssertionError("the call was not refused")


def png(height: int, width: int, padding: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue() + b"\x00" * padding


def png_of_size(size: int) -> bytes:
    """A decodable 28x28 PNG of exactly ``size`` bytes (zeros after its end, which decoders
    ignore)."""
    image = png(28, 28)
    return png(28, 28, size - len(image))


def request_of_size(size: int) -> cls.ClassifyRequest:
    """A ClassifyRequest whose serialized form is exactly ``size`` bytes."""
    filler = size
    while True:
        request = cls.ClassifyRequest(model_name=DIGITS,
                                      images=[cls.Image(encoded=b"\x00" * filler)])
        if request.ByteSize() == size:
            return request
        filler -= request.ByteSize() - size


def test_message_size(client: AxonClient) -> None:
    # At the limit the message is read (and its image refused on its own limit) ...
    at_limit = refusal(lambda: client.classifier.Classify(request_of_size(MESSAGE_BYTES),
                                                          timeout=10))
    assert at_limit.code == grpc.StatusCode.INVALID_ARGUMENT
    # ... a byte over, gRPC refuses it before Axon sees it.
    over = refusal(lambda: client.classifier.Classify(request_of_size(MESSAGE_BYTES + 1),
                                                      timeout=10))
    assert over.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"larger than max ({MESSAGE_BYTES + 1} vs. {MESSAGE_BYTES})" in over.message


def test_image_bytes(client: AxonClient) -> None:
    assert len(client.classify([png_of_size(IMAGE_BYTES)], model=DIGITS).results) == 1
    over = refusal(lambda: client.classify([png_of_size(IMAGE_BYTES + 1)], model=DIGITS))
    assert over.code == grpc.StatusCode.INVALID_ARGUMENT
    assert over.message == f"image 0: the image is {IMAGE_BYTES + 1:,} bytes; the limit is " \
                           f"{IMAGE_BYTES:,} (--max-image-bytes)"


def test_decoded_pixels(client: AxonClient) -> None:
    assert len(client.classify([png(28, 28)], model=DIGITS).results) == 1
    assert len(client.classify([np.zeros((28, 28), np.uint8)], model=DIGITS).results) == 1
    for image in (png(29, 28), np.zeros((29, 28), np.uint8), png_declaring(28, 29)):
        over = refusal(lambda i=image: client.classify([i], model=DIGITS))
        assert over.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "812)" in over.message, over.message
        assert str(IMAGE_PIXELS) in over.message, over.message


def test_images_per_request(client: AxonClient) -> None:
    assert client.infer(DIGITS, np.zeros((BATCH, 784), np.float32))["logits"].shape == (4, 10)
    assert len(client.classify([png(28, 28)] * BATCH, model=DIGITS).results) == BATCH
    over = refusal(lambda: client.infer(DIGITS, np.zeros((BATCH + 1, 784), np.float32)))
    assert over.code == grpc.StatusCode.INVALID_ARGUMENT and "from 1 to 4" in over.message
    over = refusal(lambda: client.classify([png(28, 28)] * (BATCH + 1), model=DIGITS))
    assert over.code == grpc.StatusCode.INVALID_ARGUMENT and "at most 4" in over.message


def test_concurrent_calls(limited: ServerProcess) -> None:
    """Two streams held open fill ``--max-concurrent-rpcs 2``: a third call is refused at once;
    with one stream closed, calls are served again."""
    release = [threading.Event() for _ in range(CONCURRENT_RPCS)]
    client = AxonClient(limited.address, retry=NO_RETRIES)
    stub = client.classifier
    streams = []
    try:
        def held(gate: threading.Event) -> Iterator[cls.ClassifyStreamRequest]:
            yield cls.ClassifyStreamRequest(id="0", request=cls.ClassifyRequest(
                model_name=DIGITS, images=[cls.Image(encoded=png(28, 28))]))
            gate.wait(30)

        for gate in release:
            stream = stub.ClassifyStream(held(gate), timeout=30)
            assert next(stream).HasField("response")  # open, answered, still running
            streams.append(stream)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Classify(cls.ClassifyRequest(model_name=DIGITS, images=[
                cls.Image(encoded=png(28, 28))]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release[0].set()
        assert list(streams[0]) == []  # ended normally
        answer = stub.Classify(cls.ClassifyRequest(model_name=DIGITS, images=[
            cls.Image(encoded=png(28, 28))]), timeout=10)
        assert len(answer.results) == 1
    finally:
        for gate in release:
            gate.set()
        client.close()
    with AxonClient(limited.address) as client:
        assert client.infer(DIGITS, np.zeros((1, 784), np.float32))["logits"].shape == (1, 10)


LOOP_HOLDER = "loop-holder"
HELD_CALLS = 24
SMALL_PENDING = 2


@pytest.fixture(scope="module")
def loop_holding_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stall model (tests/support/stall_model.py) allowed to run on the event loop itself:
    its ``max_inline_ms`` is far above any stall, so a stalled request holds the loop and the
    server takes in no call until it ends, as a Python server that has fallen behind does.
    Its queue takes every held call at once."""
    root = tmp_path_factory.mktemp("loop-holder")
    save_stall_model(root / LOOP_HOLDER / "1", LOOP_HOLDER)
    (root / LOOP_HOLDER / CONFIG_FILENAME).write_text(json.dumps({
        **STALL_CONFIG, "max_inline_ms": 600_000, "max_batch_size": 64,
        "max_queue_size": 64}))
    return root


def calls_while_the_loop_is_held(address: str,
                                 ) -> tuple[list[tuple[grpc.StatusCode, float]], float]:
    """Hold the server's event loop with a stalled request of about 3 s, send ``HELD_CALLS``
    calls meanwhile; return how each ended (code, when), and when the stalled one ended."""
    ended: list[tuple[grpc.StatusCode, float]] = []
    stall_ended: list[float] = []

    def record(future: grpc.Future) -> None:  # type: ignore[type-arg]
        ended.append((future.code(), time.monotonic()))  # type: ignore[attr-defined]

    with grpc.insecure_channel(address) as channel:
        infer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        ordinary = infer_request(LOOP_HOLDER, np.zeros((1, 784), np.float32))
        infer(ordinary, timeout=10)  # connected, and the model answers
        stall = infer.future(stall_request(LOOP_HOLDER, 3.0), timeout=60)
        stall.add_done_callback(lambda _: stall_ended.append(time.monotonic()))
        time.sleep(0.5)  # the stalled request is running, on the loop
        held = [infer.future(ordinary, timeout=60) for _ in range(HELD_CALLS)]
        for future in held:
            future.add_done_callback(record)
        assert len(stall.result().outputs) == 2
        for future in held:
            future.exception()  # ended, one way or the other
    return ended, stall_ended[0]


def test_calls_past_max_pending_calls_are_shed_at_once_while_the_server_is_behind(
        loop_holding_repository: Path, tmp_path: Path) -> None:
    """gRPC core holds calls the server has not taken in yet; past ``--max-pending-calls`` it
    sheds new ones at random, and past twice it all of them, with CANCELLED, without waiting
    for the server."""
    with running_server(loop_holding_repository, tmp_path / "server.log",
                        "--max-pending-calls", str(SMALL_PENDING)) as server:
        ended, stall_ended = calls_while_the_loop_is_held(server.address)
    codes = [code for code, _ in ended]
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED}, codes
    # Kept: the calls below the limit, at most twice it, and the one call grpc.aio had already
    # asked core for when the loop stopped.
    answered = codes.count(grpc.StatusCode.OK)
    assert SMALL_PENDING <= answered <= 2 * SMALL_PENDING + 1, codes
    # Shed while the loop was still held: at once, not after the server caught up.
    shed_at = [at for code, at in ended if code == grpc.StatusCode.CANCELLED]
    assert max(shed_at) < stall_ended


def test_calls_within_max_pending_calls_wait_and_are_all_answered(
        loop_holding_repository: Path, tmp_path: Path) -> None:
    """The same held loop with the default limit (256): every call waits in gRPC core, and
    is answered once the server takes it in."""
    with running_server(loop_holding_repository, tmp_path / "server.log") as server:
        ended, stall_ended = calls_while_the_loop_is_held(server.address)
    assert [code for code, _ in ended] == [grpc.StatusCode.OK] * HELD_CALLS
    # None was answered while the loop was held: they had all been waiting.
    assert min(at for _, at in ended) >= stall_ended


def test_a_stream_message_past_the_servers_limit_ends_the_run_at_once_naming_every_file(
        limited: ServerProcess, tmp_path: Path) -> None:
    """The server refuses a message over --max-message-bytes by ending the stream
    (RESOURCE_EXHAUSTED). Sent again it would fail again: ``classify_files`` gives up at once
    (no retries), says which server option to raise, and first hands back a result for every
    file it had taken, answered or "not classified"."""
    small = [tmp_path / f"small-{i}.png" for i in range(3)]
    for path in small:
        path.write_bytes(png_of_size(3_000))
    big = tmp_path / "big.png"
    big.write_bytes(png_of_size(MESSAGE_BYTES + 10_000))
    results = []
    with AxonClient(limited.address, timeout=30) as client:
        with pytest.raises(AxonClientError) as failure:
            for result in classify_files(client, iter([*small, big]), model=DIGITS, batch=4,
                                         streams=1):
                results.append(result)
        assert client.retries == 0
    assert failure.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in str(failure.value)
    assert "--max-message-bytes" in str(failure.value)
    assert [result.path for result in results] == [*small, big]
    assert results[-1].error.startswith("not classified: RESOURCE_EXHAUSTED")
    for result in results[:-1]:
        assert result.classes or result.error.startswith("not classified: ")
