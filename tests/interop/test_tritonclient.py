"""Wire compatibility: Axon's Open Inference Protocol service, driven by ``tritonclient.grpc``.

tritonclient is NVIDIA's stock client from PyPI with its own generated copy of the protocol, so
every call here crosses the wire exactly as it would for a Triton user. Answers are checked
against onnxruntime run in this process on the same model files, bit for bit.
"""

from __future__ import annotations

import copy
import json
import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from google.protobuf.descriptor import FieldDescriptor
from tritonclient.grpc import InferenceServerClient as Client
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from axon.client.server_process import ServerProcess
from axon.model_card import ModelCard
from axon.model_repository import CARD_FILENAME, MODEL_FILENAME
from axon.training.datasets import ImageDataset
from tests.interop.descriptors import Contract, describe, describe_all
from tests.support.repositories import BROKEN, DIGITS, PETS

Arrays = dict[str, npt.NDArray[np.float32]]

OUTPUTS = ("logits", "probabilities")
UNKNOWN = "no-such-model"
ROOT = Path(__file__).resolve().parents[2]


def model_input(repository: Path, name: str,
                images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """uint8 images as the model's float32 input, by the preprocessing its card records."""
    card = ModelCard.read_json(repository / name / "1" / CARD_FILENAME)
    return card.preprocessing.apply(images)


def offline(repository: Path, name: str, version: int, batch: npt.NDArray[np.float32]) -> Arrays:
    """Every output of one onnxruntime run in this process: the truth the server must match."""
    path = repository / name / str(version) / MODEL_FILENAME
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"input": batch}), strict=True))


def tensor(batch: npt.NDArray[np.float32]) -> triton.InferInput:
    """The batch as tritonclient's InferInput; its gRPC client always sends raw contents."""
    infer_input = triton.InferInput("input", list(batch.shape), "FP32")
    infer_input.set_data_from_numpy(batch)
    return infer_input


def arrays(result: triton.InferResult) -> Arrays:
    """The outputs present in a tritonclient InferResult, decoded by tritonclient itself."""
    names = [output.name for output in result.get_response().outputs]
    return {name: np.asarray(result.as_numpy(name)) for name in names}


def digits(mnist: ImageDataset, repository: Path, count: int) -> npt.NDArray[np.float32]:
    return model_input(repository, DIGITS, mnist.test.images[:count])


def pets_batch(repository: Path) -> npt.NDArray[np.float32]:
    pixels = np.random.default_rng(7).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    return model_input(repository, PETS, pixels)


def index_states(client: Client) -> dict[tuple[str, str], str]:
    return {(m.name, m.version): m.state for m in client.get_model_repository_index().models}


def test_liveness_and_readiness(client: Client) -> None:
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    assert client.is_model_ready(DIGITS, "1") is True
    assert client.is_model_ready(DIGITS, "2") is True
    assert client.is_model_ready(DIGITS, "3") is False
    assert client.is_model_ready(UNKNOWN) is False
    assert client.is_model_ready(BROKEN) is False  # on disk, never loaded


def test_server_and_model_metadata(client: Client) -> None:
    server = client.get_server_metadata()
    assert server.name == "axon" and server.version
    assert {"model_repository", "statistics"} <= set(server.extensions)
    metadata = client.get_model_metadata(DIGITS)
    assert (metadata.name, list(metadata.versions)) == (DIGITS, ["1", "2"])
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == \
        [("input", "FP32", [-1, 784])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == \
        [(name, "FP32", [-1, 10]) for name in OUTPUTS]
    # The JSON path goes through MessageToJson with Axon's extra `properties` field unknown.
    as_json = client.get_model_metadata(DIGITS, model_version="1", as_json=True)
    assert as_json["versions"] == ["1", "2"] and as_json["inputs"][0]["shape"] == ["-1", "784"]


def test_raw_infer_equals_onnxruntime_in_process(
        client: Client, mnist: ImageDataset, serving_repository: Path) -> None:
    batch = digits(mnist, serving_repository, 16)
    expected = offline(serving_repository, DIGITS, 1, batch)
    result = client.infer(DIGITS, [tensor(batch)], model_version="1", request_id="raw-16")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (DIGITS, "1", "raw-16")
    answers = arrays(result)
    assert list(answers) == list(OUTPUTS)
    for name in OUTPUTS:
        assert answers[name].dtype == np.float32 and answers[name].shape == (16, 10)
        assert np.array_equal(answers[name], expected[name]), name
    assert (answers["probabilities"].argmax(1) == mnist.test.labels[:16]).mean() > 0.8


@pytest.mark.parametrize("requested", [["probabilities"], ["logits"], ["probabilities", "logits"]])
def test_requested_outputs_subset(client: Client, mnist: ImageDataset,
                                  serving_repository: Path, requested: list[str]) -> None:
    batch = digits(mnist, serving_repository, 16)
    expected = offline(serving_repository, DIGITS, 1, batch)
    result = client.infer(DIGITS, [tensor(batch)], model_version="1",
                          outputs=[triton.InferRequestedOutput(name) for name in requested])
    answers = arrays(result)
    assert sorted(answers) == sorted(requested)
    for name in requested:
        assert np.array_equal(answers[name], expected[name]), name


def test_typed_fp32_contents_equal_raw(client: Client, server: ServerProcess,
                                       mnist: ImageDataset, serving_repository: Path) -> None:
    """tritonclient's gRPC InferInput has no typed mode (it always fills raw_input_contents), so
    the typed request is built with tritonclient's own generated messages and stub."""
    batch = digits(mnist, serving_repository, 16)
    request = service_pb2.ModelInferRequest(
        model_name=DIGITS, model_version="1", id="typed-16",
        inputs=[service_pb2.ModelInferRequest.InferInputTensor(
            name="input", datatype="FP32", shape=list(batch.shape),
            contents=service_pb2.InferTensorContents(fp32_contents=batch.ravel().tolist()))])
    with grpc.insecure_channel(server.address) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request,
                                                                                  timeout=30)
    assert response.id == "typed-16"
    typed = arrays(triton.InferResult(response))
    raw = arrays(client.infer(DIGITS, [tensor(batch)], model_version="1"))
    expected = offline(serving_repository, DIGITS, 1, batch)
    for name in OUTPUTS:
        assert np.array_equal(typed[name], raw[name]), name
        assert np.array_equal(typed[name], expected[name]), name


def test_stream_answers_every_id_and_survives_an_unknown_model(
        client: Client, mnist: ImageDataset, serving_repository: Path) -> None:
    batch = digits(mnist, serving_repository, 20)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)),
                        stream_timeout=60)
    try:
        for i in range(20):
            if i == 10:
                client.async_stream_infer(UNKNOWN, [tensor(batch[:1])], request_id="bad")
            client.async_stream_infer(DIGITS, [tensor(batch[i:i + 1])], request_id=f"r{i}")
    finally:
        client.stop_stream()  # closes the request side, then waits for every answer
    received = [answers.get_nowait() for _ in range(answers.qsize())]
    assert len(received) == 21
    results = {result.get_response().id: result for result, error in received if error is None}
    errors = [error for _, error in received if error is not None]
    assert set(results) == {f"r{i}" for i in range(20)}
    assert len(errors) == 1
    assert errors[0].message().startswith("NOT_FOUND: ") and UNKNOWN in errors[0].message()
    for i in range(20):
        unary = arrays(client.infer(DIGITS, [tensor(batch[i:i + 1])]))
        streamed = arrays(results[f"r{i}"])
        for name in OUTPUTS:
            assert np.array_equal(streamed[name], unary[name]), (i, name)


def test_repository_index(client: Client) -> None:
    states = index_states(client)
    assert states[(DIGITS, "1")] == states[(DIGITS, "2")] == states[(PETS, "1")] == "READY"
    broken = [m for m in client.get_model_repository_index().models if m.name == BROKEN]
    assert [(m.version, m.state) for m in broken] == [("1", "UNAVAILABLE")]
    assert broken[0].reason


def test_unload_and_load_a_model(client: Client, serving_repository: Path) -> None:
    batch = pets_batch(serving_repository)
    client.unload_model(PETS)
    try:
        assert client.is_model_ready(PETS) is False
        assert index_states(client)[(PETS, "1")] == "UNAVAILABLE"
        with pytest.raises(InferenceServerException) as error:
            client.infer(PETS, [tensor(batch)])
        assert error.value.status() == "StatusCode.UNAVAILABLE"
        assert PETS in error.value.message()
    finally:
        client.load_model(PETS)  # the server is shared by the whole session
    assert client.is_model_ready(PETS) is True
    answers = arrays(client.infer(PETS, [tensor(batch)]))
    expected = offline(serving_repository, PETS, 1, batch)
    assert answers["probabilities"].shape == (4, 2)
    for name in OUTPUTS:
        assert np.array_equal(answers[name], expected[name]), name


def test_loading_a_broken_model_fails_and_harms_nothing(client: Client) -> None:
    with pytest.raises(InferenceServerException) as error:
        client.load_model(BROKEN)
    assert error.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert "cannot load" in error.value.message()
    assert client.is_model_ready(BROKEN) is False
    assert client.is_model_ready(DIGITS, "1") is True


def test_statistics_count_items_and_executions(client: Client, mnist: ImageDataset,
                                               serving_repository: Path) -> None:
    def stats() -> Any:
        (entry,) = client.get_inference_statistics(DIGITS, "1").model_stats
        return entry

    before = stats()
    client.infer(DIGITS, [tensor(digits(mnist, serving_repository, 5))], model_version="1")
    after = stats()
    assert (after.name, after.version) == (DIGITS, "1")
    assert after.inference_count - before.inference_count == 5
    assert after.execution_count - before.execution_count >= 1
    assert after.inference_stats.success.count - before.inference_stats.success.count == 1
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    assert after.last_inference >= int(time.time() * 1000) - 60_000  # wall clock, ms


def test_statistics_of_every_loaded_model(client: Client) -> None:
    listed = {(s.name, s.version) for s in client.get_inference_statistics().model_stats}
    ready = {key for key, state in index_states(client).items() if state == "READY"}
    assert listed == ready
    assert {(DIGITS, "1"), (DIGITS, "2"), (PETS, "1")} <= listed
    assert BROKEN not in {name for name, _ in listed}
    with pytest.raises(InferenceServerException) as error:
        client.get_inference_statistics(UNKNOWN)
    assert error.value.status() == "StatusCode.NOT_FOUND"


def test_unknown_model_is_not_found(client: Client, mnist: ImageDataset,
                                    serving_repository: Path) -> None:
    with pytest.raises(InferenceServerException) as error:
        client.infer(UNKNOWN, [tensor(digits(mnist, serving_repository, 1))])
    assert error.value.status() == "StatusCode.NOT_FOUND"
    assert UNKNOWN in error.value.message()


def test_wrong_shape_is_invalid_argument(client: Client) -> None:
    with pytest.raises(InferenceServerException) as error:
        client.infer(DIGITS, [tensor(np.zeros((1, 783), dtype=np.float32))])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "784" in error.value.message()


@pytest.fixture(scope="module")
def axon_contract() -> Contract:
    """Axon's descriptors, read in a fresh interpreter (this one holds tritonclient's copy)."""
    done = subprocess.run([sys.executable, "-m", "tests.interop.descriptors"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return cast(Contract, json.loads(done.stdout))


def message_differences(ours: Contract, theirs: Contract) -> set[str]:
    """Each way Axon's messages differ from tritonclient's; extra Triton fields don't count."""
    differences = set()
    for message, fields in ours["messages"].items():
        their_fields = theirs["messages"].get(message)
        if their_fields is None:
            differences.add(f"{message}: absent")
            continue
        their_numbers = {shape["number"] for shape in their_fields.values()}
        for name, shape in fields.items():
            if name in their_fields and their_fields[name] != shape:
                differences.add(f"{message}.{name}: {shape} != {their_fields[name]}")
            elif name not in their_fields:
                # Harmless only if tritonclient skips the number as unknown, not misreads it.
                clash = " (number taken)" if shape["number"] in their_numbers else ""
                differences.add(f"{message}.{name}: absent{clash}")
    return differences


def test_every_axon_message_matches_tritonclients(axon_contract: Contract) -> None:
    differences = message_differences(axon_contract, describe_all(
        service_pb2.DESCRIPTOR, model_config_pb2.DESCRIPTOR))
    # The Open Inference Protocol's model properties (a map, hence its entry message).
    assert differences == {"inference.ModelMetadataResponse.properties: absent",
                           "inference.ModelMetadataResponse.PropertiesEntry: absent"}
    assert len(axon_contract["messages"]) > 30  # the comparison saw the whole file
    assert "inference.ModelDynamicBatching" in axon_contract["messages"]  # and the config


def test_the_comparison_notices_a_changed_field() -> None:
    theirs = describe(service_pb2.DESCRIPTOR)
    ours = copy.deepcopy(theirs)
    ours["messages"]["inference.ModelInferRequest"]["raw_input_contents"]["number"] = 8
    ours["messages"]["inference.InferTensorContents"]["fp32_contents"]["type"] = \
        FieldDescriptor.TYPE_DOUBLE
    assert message_differences(theirs, theirs) == set()
    changed = {difference.split(":")[0] for difference in message_differences(ours, theirs)}
    assert changed == {"inference.ModelInferRequest.raw_input_contents",
                       "inference.InferTensorContents.fp32_contents"}


def test_every_axon_method_matches_tritonclients(axon_contract: Contract) -> None:
    theirs = describe(service_pb2.DESCRIPTOR)["services"]
    ours = axon_contract["services"]
    assert list(ours) == ["inference.GRPCInferenceService"]
    service = ours["inference.GRPCInferenceService"]
    assert len(service) == 12 and service["ModelStreamInfer"]["client_streaming"]
    their_service = theirs["inference.GRPCInferenceService"]
    for method, shape in service.items():
        assert their_service.get(method) == shape, method
