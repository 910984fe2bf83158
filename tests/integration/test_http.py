"""The HTTP/REST binding on the real server, next to gRPC on the same process: every route, and
every answer equal to the gRPC answer to the same question (tensors bit for bit)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from google.protobuf import json_format
from PIL import Image

from axon.client.common import infer_request, response_arrays
from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from axon.protocol import open_inference_pb2 as oip
from axon.protocol.v1 import classification_pb2 as cls
from axon.training.datasets import ImageDataset
from tests.support.http import (
    INFERENCE_HEADER,
    binary_infer,
    call,
    get,
    json_infer,
    length_prefixed,
    outputs_of,
    post_json,
)
from tests.support.repositories import BROKEN, DIGITS, PETS
from tests.support.scrape import scrape

UNKNOWN = "no-such-model"
INFER = f"/v2/models/{DIGITS}/infer"


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> AxonClient:
    client = AxonClient(server.address)
    client.wait_ready()
    return client


@pytest.fixture(scope="module")
def address(server: ServerProcess) -> str:
    return server.http_address


def digits(mnist: ImageDataset, count: int, start: int = 0) -> npt.NDArray[np.float32]:
    images = mnist.test.images[start:start + count]
    return (images.reshape(len(images), -1) / 255).astype(np.float32)


def grpc_outputs(client: AxonClient, batch: npt.NDArray[np.float32], version: str = "",
                 **fields: Any) -> dict[str, npt.NDArray[Any]]:
    request = infer_request(DIGITS, batch, version=version)
    for name, value in fields.items():
        setattr(request, name, value) if not isinstance(value, list) else \
            getattr(request, name).extend(value)
    response = client.inference.ModelInfer(request, timeout=30)
    if all(t.datatype == "FP32" for t in response.outputs):
        return dict(response_arrays(response))
    return {t.name: np.array(length_prefixed(raw), dtype=object).reshape(tuple(t.shape))
            for t, raw in zip(response.outputs, response.raw_output_contents, strict=True)}


def test_health_routes(address: str) -> None:
    live = get(address, "/v2/health/live")
    assert (live.status, live.json()) == (200, {"live": True})
    assert live.headers["content-type"] == "application/json"
    ready = get(address, "/v2/health/ready")
    assert (ready.status, ready.json()) == (200, {"ready": True})


def test_server_metadata_equals_grpc(address: str, client: AxonClient) -> None:
    grpc_answer = client.inference.ServerMetadata(oip.ServerMetadataRequest())
    answer = get(address, "/v2")
    assert answer.status == 200
    assert answer.json() == {"name": grpc_answer.name, "version": grpc_answer.version,
                             "extensions": list(grpc_answer.extensions)}
    assert {"binary_tensor_data", "classification", "model_configuration", "model_repository",
            "statistics"} <= set(answer.json()["extensions"])


@pytest.mark.parametrize("version", ["", "1", "2"])
def test_model_metadata_equals_grpc(address: str, client: AxonClient, version: str) -> None:
    grpc_answer = client.inference.ModelMetadata(oip.ModelMetadataRequest(name=DIGITS,
                                                                         version=version))
    path = f"/v2/models/{DIGITS}" + (f"/versions/{version}" if version else "")
    answer = get(address, path)
    assert answer.status == 200
    expected = json_format.MessageToDict(grpc_answer, preserving_proto_field_name=True)
    for tensor in expected["inputs"] + expected["outputs"]:
        tensor["shape"] = [int(d) for d in tensor["shape"]]
    assert answer.json() == expected
    assert answer.json()["inputs"] == [{"name": "input", "datatype": "FP32",
                                        "shape": [-1, 784]}]


def test_model_ready(address: str) -> None:
    assert get(address, f"/v2/models/{DIGITS}/ready").json() == {"name": DIGITS, "ready": True}
    assert get(address, f"/v2/models/{DIGITS}/versions/2/ready").status == 200
    for path in (f"/v2/models/{DIGITS}/versions/3/ready", f"/v2/models/{UNKNOWN}/ready",
                 f"/v2/models/{BROKEN}/ready"):
        answer = get(address, path)
        assert (answer.status, answer.json()["ready"]) == (503, False), path
    bad = get(address, f"/v2/models/{DIGITS}/versions/latest/ready")
    assert bad.status == 400 and "must be a positive integer" in bad.error


@pytest.mark.parametrize("version", ["", "2"])
def test_model_config_equals_grpc(address: str, client: AxonClient, version: str) -> None:
    response = client.inference.ModelConfig(oip.ModelConfigRequest(name=DIGITS, version=version))
    path = f"/v2/models/{DIGITS}" + (f"/versions/{version}" if version else "") + "/config"
    answer = get(address, path)
    assert answer.status == 200
    config = answer.json()
    parsed = json_format.ParseDict(config, type(response.config)())
    assert parsed == response.config
    assert config["name"] == DIGITS and config["platform"] == "onnxruntime_onnx"
    assert config["backend"] == "onnxruntime" and config["max_batch_size"] == 256
    assert config["version_policy"] == {"all": {}}  # the model's config.json says "all"
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [784],
                                "format": "FORMAT_NONE"}]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == \
        [("logits", "TYPE_FP32", [10]), ("probabilities", "TYPE_FP32", [10])]
    batching = config["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == 8000  # numbers, as Triton writes them
    assert batching["default_queue_policy"] == {"max_queue_size": 4096}
    assert 1 <= batching["preferred_batch_size"][0] <= 256
    (group,) = config["instance_group"]
    assert group["kind"] == "KIND_CPU" and group["count"] >= 1 and group["gpus"] == []
    assert json.loads(config["parameters"]["labels"]["string_value"]) == [str(d) for d in
                                                                          range(10)]


def test_json_infer_equals_grpc_bit_for_bit(address: str, client: AxonClient,
                                            mnist: ImageDataset) -> None:
    batch = digits(mnist, 32)
    answer = post_json(address, INFER, json_infer(batch, id="json-32"))
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    assert INFERENCE_HEADER.lower() not in answer.headers
    document = answer.json()
    assert (document["model_name"], document["model_version"], document["id"]) == \
        (DIGITS, "2", "json-32")
    expected = grpc_outputs(client, batch)
    got = outputs_of(answer)
    assert list(got) == ["logits", "probabilities"]
    for name, array in expected.items():
        assert got[name].dtype == np.float32 and got[name].shape == (32, 10)
        assert got[name].tobytes() == array.tobytes(), name


def test_binary_infer_equals_grpc_bit_for_bit(address: str, client: AxonClient,
                                              mnist: ImageDataset) -> None:
    batch = digits(mnist, 64, start=100)
    body, headers = binary_infer(batch)
    answer = call(address, "POST", f"/v2/models/{DIGITS}/versions/1/infer", body, headers)
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    header = json.loads(answer.body[:int(answer.headers[INFERENCE_HEADER.lower()])])
    assert [o["parameters"] for o in header["outputs"]] == [{"binary_data_size": 64 * 10 * 4}] * 2
    expected = grpc_outputs(client, batch, version="1")
    for name, array in outputs_of(answer).items():
        assert array.tobytes() == expected[name].tobytes(), name


def test_binary_input_json_output_and_a_chosen_output(address: str, client: AxonClient,
                                                      mnist: ImageDataset) -> None:
    batch = digits(mnist, 3)
    body, headers = binary_infer(batch, binary_output=False,
                                 outputs=[{"name": "probabilities"}])
    answer = call(address, "POST", INFER, body, headers)
    assert answer.status == 200 and INFERENCE_HEADER.lower() not in answer.headers
    got = outputs_of(answer)
    assert list(got) == ["probabilities"]
    assert got["probabilities"].tobytes() == grpc_outputs(client, batch)["probabilities"].tobytes()


def test_nested_json_data_is_read_row_major(address: str, client: AxonClient,
                                            mnist: ImageDataset) -> None:
    batch = digits(mnist, 2)
    document = json_infer(batch)
    document["inputs"][0]["data"] = batch.tolist()
    got = outputs_of(post_json(address, INFER, document))
    assert got["logits"].tobytes() == grpc_outputs(client, batch)["logits"].tobytes()


def test_classification_extension_equals_grpc(address: str, client: AxonClient,
                                              mnist: ImageDataset) -> None:
    batch = digits(mnist, 5)
    requested = [{"name": "probabilities", "parameters": {"classification": 3}},
                 {"name": "logits", "parameters": {"classification": 2, "binary_data": True}}]
    got = outputs_of(post_json(address, INFER, json_infer(batch, outputs=requested)))
    expected = grpc_outputs(client, batch, outputs=[
        oip.ModelInferRequest.InferRequestedOutputTensor(
            name="probabilities", parameters={"classification": oip.InferParameter(
                int64_param=3)}),
        oip.ModelInferRequest.InferRequestedOutputTensor(
            name="logits", parameters={"classification": oip.InferParameter(int64_param=2)})])
    assert got["probabilities"].shape == (5, 3) and got["logits"].shape == (5, 2)
    for name in ("probabilities", "logits"):
        assert got[name].tolist() == expected[name].tolist()
    probabilities = grpc_outputs(client, batch)["probabilities"]
    for row, classes in zip(probabilities, got["probabilities"], strict=True):
        order = np.argsort(-row, kind="stable")[:3]
        # Triton's format: the score as C's %f, the class index, the model card's label.
        assert list(classes) == [f"{row[i]:f}:{i}:{i}" for i in order]
    too_many = outputs_of(post_json(address, INFER, json_infer(batch, outputs=[
        {"name": "probabilities", "parameters": {"classification": 50}}])))
    assert too_many["probabilities"].shape == (5, 10)  # capped at the classes, as Triton does


def test_statistics_count_http_requests(address: str, client: AxonClient,
                                        mnist: ImageDataset) -> None:
    path = f"/v2/models/{DIGITS}/versions/1/stats"
    before = get(address, path).json()["model_stats"][0]
    assert post_json(address, f"/v2/models/{DIGITS}/versions/1/infer",
                     json_infer(digits(mnist, 7))).status == 200
    (after,) = get(address, path).json()["model_stats"]
    assert (after["name"], after["version"]) == (DIGITS, "1")
    assert after["inference_count"] - before["inference_count"] == 7
    assert after["inference_stats"]["success"]["count"] == \
        before["inference_stats"]["success"]["count"] + 1
    assert isinstance(after["inference_stats"]["success"]["ns"], int)
    grpc_stats = client.statistics(DIGITS, "1")[0]
    assert after["inference_count"] == grpc_stats.inference_count
    every = get(address, "/v2/models/stats").json()["model_stats"]
    assert {(s["name"], s["version"]) for s in every} == \
        {(s.name, s.version) for s in client.statistics()}
    assert len(get(address, f"/v2/models/{DIGITS}/stats").json()["model_stats"]) == 2
    assert get(address, f"/v2/models/{UNKNOWN}/stats").status == 404


def test_repository_index_equals_grpc(address: str, client: AxonClient) -> None:
    answer = post_json(address, "/v2/repository/index", {})
    assert answer.status == 200
    expected = [{"name": m.name, "version": m.version, "state": m.state, "reason": m.reason}
                for m in client.repository_index()]
    assert answer.json() == expected
    ready = post_json(address, "/v2/repository/index", {"ready": True}).json()
    assert ready and all(entry["state"] == "READY" for entry in ready)
    assert call(address, "POST", "/v2/repository/index").status == 200  # an empty body: {}


def test_unload_and_load_over_http(address: str, serving_repository: Path) -> None:
    pixels = np.random.default_rng(3).random((2, 3, 16, 16), dtype=np.float32)
    pets_infer = f"/v2/models/{PETS}/infer"
    before = outputs_of(post_json(address, pets_infer, json_infer(pixels)))
    assert post_json(address, f"/v2/repository/models/{PETS}/unload", {}).status == 200
    try:
        refused = post_json(address, pets_infer, json_infer(pixels))
        assert refused.status == 503 and "not loaded (unloaded)" in refused.error
        assert get(address, f"/v2/models/{PETS}/ready").status == 503
    finally:
        assert post_json(address, f"/v2/repository/models/{PETS}/load", {}).status == 200
    after = outputs_of(post_json(address, pets_infer, json_infer(pixels)))
    assert after["probabilities"].tobytes() == before["probabilities"].tobytes()
    broken = post_json(address, f"/v2/repository/models/{BROKEN}/load", {})
    assert broken.status == 400 and "cannot load" in broken.error  # FAILED_PRECONDITION
    unknown = post_json(address, f"/v2/repository/models/{UNKNOWN}/unload", {})
    assert unknown.status == 404


def png(pixels: npt.NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze()).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_route_equals_grpc_classify(address: str, client: AxonClient,
                                          mnist: ImageDataset) -> None:
    for image in mnist.test.images[:8]:
        encoded = png(image)
        answer = call(address, "POST", f"/v2/models/{DIGITS}/classify?top_k=3", encoded,
                      {"Content-Type": "image/png"})
        assert answer.status == 200
        document = answer.json()
        response = client.classifier.Classify(cls.ClassifyRequest(
            model_name=DIGITS, top_k=3, images=[cls.Image(encoded=encoded)]), timeout=30)
        assert (document["model_name"], document["model_version"]) == (DIGITS, "2")
        assert document["classes"] == [
            {"index": c.index, "label": c.label, "probability": c.probability}
            for c in response.results[0].classes]
        assert len(document["classes"]) == 3
    empty = call(address, "POST", f"/v2/models/{DIGITS}/classify", b"",
                 {"Content-Type": "image/png"})
    assert empty.status == 400 and "the body is empty" in empty.error
    too_many = call(address, "POST", f"/v2/models/{DIGITS}/classify?top_k=11", png(image))
    assert too_many.status == 400 and "top_k must be between 1 and 10" in too_many.error


def test_requests_are_counted_under_their_protocol(server: ServerProcess, address: str,
                                                   mnist: ImageDataset) -> None:
    assert server.metrics_port is not None
    assert post_json(address, INFER, json_infer(digits(mnist, 1))).status == 200
    assert get(address, f"/v2/models/{UNKNOWN}").status == 404
    samples = scrape(server.metrics_port)
    assert samples.value("axon_requests_total", model=DIGITS, version="2", method="ModelInfer",
                         code="OK", protocol="http") >= 1
    assert samples.value("axon_requests_total", model="", version="", method="ModelMetadata",
                         code="NOT_FOUND", protocol="http") >= 1
    assert samples.value("axon_request_duration_seconds_count", model=DIGITS, version="2",
                         method="ModelInfer", protocol="http") >= 1
    grpc_calls = samples.matching("axon_requests_total", protocol="grpc")
    assert grpc_calls and all(dict(labels)["protocol"] == "grpc" for labels in grpc_calls)
