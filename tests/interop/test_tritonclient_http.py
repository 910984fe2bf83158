"""Wire compatibility over HTTP: Axon's REST binding driven by tritonclient's HTTP clients, the
blocking one (geventhttpclient) and the asyncio one (aiohttp), for every route Axon serves, next
to tritonclient's gRPC client on the same server. Tensors are compared bit for bit: REST against
gRPC on every one of the 10,000 MNIST test images, as JSON and as binary tensor data.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_aio
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from axon.client.server_process import ServerProcess
from axon.training.datasets import ImageDataset
from tests.interop.test_tritonclient import digits, model_input, offline, pets_batch
from tests.support.http import binary_infer, call
from tests.support.repositories import BROKEN, DIGITS, HOLD_DEADLINE, PETS
from tests.support.stall_model import stall_batch, trips_for

OUTPUTS = ("logits", "probabilities")
UNKNOWN = "no-such-model"


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[triton_http.InferenceServerClient]:
    with triton_http.InferenceServerClient(server.http_address, concurrency=2) as client:
        yield client


def http_input(batch: npt.NDArray[np.float32], binary: bool) -> triton_http.InferInput:
    tensor = triton_http.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def grpc_input(batch: npt.NDArray[np.float32]) -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    return tensor


def http_outputs(binary: bool, class_count: int = 0) -> list[triton_http.InferRequestedOutput]:
    return [triton_http.InferRequestedOutput(name, binary_data=binary, class_count=class_count)
            for name in OUTPUTS]


def arrays(result: Any) -> dict[str, npt.NDArray[Any]]:
    return {name: np.asarray(result.as_numpy(name)) for name in OUTPUTS}


def test_health(http: triton_http.InferenceServerClient) -> None:
    assert http.is_server_live() is True
    assert http.is_server_ready() is True
    assert http.is_model_ready(DIGITS) is True
    assert http.is_model_ready(DIGITS, "2") is True
    assert http.is_model_ready(DIGITS, "3") is False
    assert http.is_model_ready(UNKNOWN) is False
    assert http.is_model_ready(BROKEN) is False


def test_metadata_equals_grpc(http: triton_http.InferenceServerClient,
                              client: triton_grpc.InferenceServerClient) -> None:
    server = http.get_server_metadata()
    assert server == client.get_server_metadata(as_json=True)
    assert {"binary_tensor_data", "classification", "model_configuration"} <= \
        set(server["extensions"])
    metadata = http.get_model_metadata(DIGITS, "1")
    assert (metadata["name"], metadata["versions"], metadata["platform"]) == \
        (DIGITS, ["1", "2"], "onnxruntime_onnx")
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 784]}]
    grpc_metadata = client.get_model_metadata(DIGITS, "1", as_json=True)
    for tensor in grpc_metadata["inputs"] + grpc_metadata["outputs"]:
        tensor["shape"] = [int(d) for d in tensor["shape"]]
    assert {k: v for k, v in metadata.items() if k != "properties"} == grpc_metadata


def test_model_config_equals_grpc(http: triton_http.InferenceServerClient,
                                  client: triton_grpc.InferenceServerClient) -> None:
    for version in ("", "1"):
        config = http.get_model_config(DIGITS, version)
        # The JSON read into tritonclient's own ModelConfig message: the gRPC answer's equal.
        parsed = json_format.ParseDict(config, model_config_pb2.ModelConfig())
        assert parsed == client.get_model_config(DIGITS, version).config
        assert config["max_batch_size"] == 256 and config["platform"] == "onnxruntime_onnx"
        assert config["input"][0]["dims"] == [784]
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 8000
        assert config["version_policy"] == {"all": {}}
    message = client.get_model_config(PETS).config  # tritonclient's own ModelConfig message
    assert (message.name, message.max_batch_size) == (PETS, 256)
    assert [list(i.dims) for i in message.input] == [[3, 16, 16]]
    assert message.input[0].format == message.input[0].FORMAT_NCHW
    assert message.instance_group[0].kind == message.instance_group[0].KIND_CPU
    assert message.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert message.version_policy.latest.num_versions == 1


@pytest.mark.parametrize(("binary_in", "binary_out"),
                         [(False, False), (True, True), (True, False), (False, True)])
def test_infer_equals_grpc_and_onnxruntime(http: triton_http.InferenceServerClient,
                                           client: triton_grpc.InferenceServerClient, *,
                                           mnist: ImageDataset, serving_repository: Path,
                                           binary_in: bool, binary_out: bool) -> None:
    batch = digits(mnist, serving_repository, 16)
    result = http.infer(DIGITS, [http_input(batch, binary_in)], model_version="1",
                        outputs=http_outputs(binary_out), request_id="http-16")
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == \
        (DIGITS, "1", "http-16")
    got = arrays(result)
    expected = arrays(client.infer(DIGITS, [grpc_input(batch)], model_version="1"))
    truth = offline(serving_repository, DIGITS, 1, batch)
    for name in OUTPUTS:
        assert got[name].dtype == np.float32 and got[name].shape == (16, 10)
        assert got[name].tobytes() == expected[name].tobytes() == truth[name].tobytes(), name


def test_classification_over_both_protocols(http: triton_http.InferenceServerClient,
                                            client: triton_grpc.InferenceServerClient,
                                            mnist: ImageDataset,
                                            serving_repository: Path) -> None:
    batch = digits(mnist, serving_repository, 6)
    from_grpc = client.infer(DIGITS, [grpc_input(batch)], outputs=[
        triton_grpc.InferRequestedOutput(name, class_count=3) for name in OUTPUTS])
    assert [o.datatype for o in from_grpc.get_response().outputs] == ["BYTES", "BYTES"]
    expected = {name: [[s.decode() for s in row] for row in from_grpc.as_numpy(name)]
                for name in OUTPUTS}  # tritonclient decodes the length-prefixed strings
    for binary in (True, False):
        result = http.infer(DIGITS, [http_input(batch, True)],
                            outputs=http_outputs(binary, class_count=3))
        for name in OUTPUTS:
            got = result.as_numpy(name)
            assert got.shape == (6, 3)
            assert [[s.decode() if isinstance(s, bytes) else s for s in row]
                    for row in got] == expected[name]
    probabilities = offline(serving_repository, DIGITS, 2, batch)["probabilities"]
    for row, classes in zip(probabilities, expected["probabilities"], strict=True):
        best = int(np.argmax(row))
        assert classes[0] == f"{row[best]:f}:{best}:{best}"


def test_statistics_and_the_repository(http: triton_http.InferenceServerClient,
                                       client: triton_grpc.InferenceServerClient,
                                       serving_repository: Path) -> None:
    before = http.get_inference_statistics(DIGITS, "1")["model_stats"][0]
    batch = np.zeros((5, 784), np.float32)
    http.infer(DIGITS, [http_input(batch, True)], model_version="1")
    after = http.get_inference_statistics(DIGITS, "1")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 5
    every = http.get_inference_statistics()["model_stats"]
    assert {(s["name"], s["version"]) for s in every} == \
        {(s.name, s.version) for s in client.get_inference_statistics().model_stats}
    index = http.get_model_repository_index()
    assert [(m["name"], m["version"], m["state"]) for m in index] == \
        [(m.name, m.version, m.state) for m in client.get_model_repository_index().models]
    pets = pets_batch(serving_repository)
    http.unload_model(PETS)
    try:
        assert http.is_model_ready(PETS) is False
        with pytest.raises(InferenceServerException) as error:
            http.infer(PETS, [http_input(pets, True)])
        assert error.value.status() == "503" and PETS in error.value.message()
    finally:
        http.load_model(PETS)
    assert http.is_model_ready(PETS) is True
    with pytest.raises(InferenceServerException) as error:
        http.load_model(BROKEN)
    assert error.value.status() == "400" and "cannot load" in error.value.message()


def test_errors_carry_the_tables_status(http: triton_http.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as error:
        http.infer(UNKNOWN, [http_input(np.zeros((1, 784), np.float32), True)])
    assert error.value.status() == "404" and UNKNOWN in error.value.message()
    with pytest.raises(InferenceServerException) as error:
        http.infer(DIGITS, [http_input(np.zeros((1, 783), np.float32), False)])
    assert error.value.status() == "400" and "784" in error.value.message()
    with pytest.raises(InferenceServerException) as error:
        http.get_model_config(UNKNOWN)
    assert error.value.status() == "404"


def test_a_timeout_is_the_deadline_over_http(http: triton_http.InferenceServerClient,
                                            server: ServerProcess) -> None:
    # The holding request from a thread of its own (tritonclient's blocking client is gevent's,
    # which a second thread cannot share).
    body, headers = binary_infer(stall_batch(trips_for(1.5)))
    holder = threading.Thread(target=call, args=(server.http_address, "POST",
                                                 f"/v2/models/{HOLD_DEADLINE}/infer", body,
                                                 headers))
    holder.start()
    time.sleep(0.3)
    with pytest.raises(InferenceServerException) as error:
        http.infer(HOLD_DEADLINE, [http_input(np.zeros((1, 784), np.float32), True)],
                   timeout=200_000)
    assert error.value.status() == "504"
    holder.join(30)


def test_the_asyncio_client(server: ServerProcess, client: triton_grpc.InferenceServerClient,
                            mnist: ImageDataset, serving_repository: Path) -> None:
    batch = digits(mnist, serving_repository, 8)
    expected = arrays(client.infer(DIGITS, [grpc_input(batch)]))

    async def session() -> None:
        async with triton_aio.InferenceServerClient(server.http_address) as aio:
            assert await aio.is_server_live() and await aio.is_server_ready()
            assert await aio.is_model_ready(DIGITS) and not await aio.is_model_ready(UNKNOWN)
            assert (await aio.get_server_metadata())["name"] == "axon"
            assert (await aio.get_model_metadata(DIGITS))["versions"] == ["1", "2"]
            assert (await aio.get_model_config(DIGITS))["max_batch_size"] == 256
            results = await asyncio.gather(*(aio.infer(
                DIGITS, [http_input(batch, binary)], outputs=http_outputs(binary))
                for binary in (True, False) for _ in range(4)))
            for result in results:
                got = arrays(result)
                for name in OUTPUTS:
                    assert got[name].tobytes() == expected[name].tobytes(), name
            classes = await aio.infer(DIGITS, [http_input(batch, True)],
                                      outputs=http_outputs(True, class_count=2))
            assert classes.as_numpy("probabilities").shape == (8, 2)
            index = await aio.get_model_repository_index()
            assert {m["name"] for m in index} >= {DIGITS, PETS, BROKEN}
            await aio.unload_model(PETS)
            assert not await aio.is_model_ready(PETS)
            await aio.load_model(PETS)
            assert await aio.is_model_ready(PETS)
            stats = await aio.get_inference_statistics(DIGITS)
            assert len(stats["model_stats"]) == 2
            with pytest.raises(InferenceServerException) as error:
                await aio.get_model_metadata(UNKNOWN)
            assert error.value.status() == "404"

    asyncio.run(session())


def test_rest_equals_grpc_bit_for_bit_on_every_mnist_test_image(
        http: triton_http.InferenceServerClient, client: triton_grpc.InferenceServerClient,
        mnist: ImageDataset, serving_repository: Path) -> None:
    """All 10,000 test images, in requests of 250, over gRPC, REST with JSON tensors and REST
    with binary tensor data: every output of every image equal, bit for bit."""
    images = model_input(serving_repository, DIGITS, mnist.test.images)
    assert len(images) == 10_000
    compared = 0
    for start in range(0, len(images), 250):
        batch = images[start:start + 250]
        expected = arrays(client.infer(DIGITS, [grpc_input(batch)], model_version="1"))
        for binary in (False, True):
            got = arrays(http.infer(DIGITS, [http_input(batch, binary)], model_version="1",
                                    outputs=http_outputs(binary)))
            for name in OUTPUTS:
                assert got[name].tobytes() == expected[name].tobytes(), (start, binary, name)
        compared += len(batch)
    assert compared == 10_000
