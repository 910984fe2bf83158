"""The HTTP binding's pure pieces: the status table, the router, the JSON/binary codec, Triton's
JSON of protobuf messages, and the classification strings both protocols send."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from axon.batching_settings import BatchingSettings
from axon.protocol import model_config_pb2 as mc
from axon.protocol import open_inference_pb2 as oip
from axon.server import errors
from axon.server.errors import InvalidInputError, ServingError
from axon.server.http.codec import (
    JSON_BYTES_PER_VALUE,
    InferRequest,
    decode_infer,
    encode_infer,
    json_limit,
)
from axon.server.http.proto_json import message_json
from axon.server.http.router import HttpRequest, HttpResponse, Route, Router
from axon.server.http.status import (
    HTTP_STATUS,
    BodyTooLargeError,
    MethodNotAllowedError,
    RouteNotFoundError,
    http_status,
)
from axon.server.runtime import ModelRuntime, SessionSettings
from axon.server.served_model import OutputChoice, ServedModel
from axon.server.tensors import class_strings, deadline_from_timeout, output_tensors
from tests.support.stall_model import save_stall_model

CODE = grpc.StatusCode


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    path = save_stall_model(tmp_path_factory.mktemp("stall") / "1", "digits")
    return ServedModel("digits", 1, ModelRuntime(path, SessionSettings()),
                       BatchingSettings(max_batch_size=8, max_queue_size=8))


# --- the status table -----------------------------------------------------------------------

def test_every_grpc_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


@pytest.mark.parametrize(("code", "status"), [
    (CODE.OK, 200), (CODE.INVALID_ARGUMENT, 400), (CODE.NOT_FOUND, 404),
    (CODE.UNAVAILABLE, 503), (CODE.RESOURCE_EXHAUSTED, 429), (CODE.DEADLINE_EXCEEDED, 504),
    (CODE.UNAUTHENTICATED, 401), (CODE.PERMISSION_DENIED, 403),
    (CODE.FAILED_PRECONDITION, 400), (CODE.UNIMPLEMENTED, 501), (CODE.INTERNAL, 500)])
def test_the_issues_mapping(code: grpc.StatusCode, status: int) -> None:
    assert HTTP_STATUS[code] == status


def test_every_serving_error_maps_through_its_code() -> None:
    kinds = [value for value in vars(errors).values()
             if isinstance(value, type) and issubclass(value, ServingError)]
    for kind in kinds:
        assert http_status(kind("x")) == HTTP_STATUS[kind.code], kind.__name__
    assert http_status(errors.ModelLoadError("x")) == 400
    assert http_status(errors.QueueFullError("x")) == 429


def test_http_only_errors_refine_the_table() -> None:
    too_large = BodyTooLargeError("x")
    assert (too_large.code, http_status(too_large)) == (CODE.RESOURCE_EXHAUSTED, 413)
    assert not too_large.abort and BodyTooLargeError("x", while_reading=True).abort
    assert http_status(RouteNotFoundError("x")) == 404
    assert http_status(MethodNotAllowedError("x", ("GET",))) == 405


# --- the router -----------------------------------------------------------------------------

async def _nothing(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"")


ROUTER = Router([
    Route("GET", ("v2", "models", "stats"), "/s/ModelStatistics", _nothing),
    Route("GET", ("v2", "models", "{model}"), "/s/ModelMetadata", _nothing),
    Route("POST", ("v2", "models", "{model}", "infer"), "/s/ModelInfer", _nothing),
    Route("POST", ("v2", "models", "{model}", "versions", "{version}", "infer"),
          "/s/ModelInfer", _nothing),
])


def test_routes_match_by_segment_and_decode_each_one() -> None:
    route, params = ROUTER.match("POST", "/v2/models/mnist/versions/2/infer")
    assert (route.name, params) == ("ModelInfer", {"model": "mnist", "version": "2"})
    assert ROUTER.match("GET", "/v2/models/stats")[0].name == "ModelStatistics"
    # An encoded slash stays inside its segment: a name, never a path.
    assert ROUTER.match("GET", "/v2/models/a%2F..%2Fb")[1] == {"model": "a/../b"}
    assert ROUTER.match("GET", "/v2/models/caf%C3%A9")[1] == {"model": "café"}


def test_unknown_paths_and_methods_are_refused() -> None:
    with pytest.raises(RouteNotFoundError):
        ROUTER.match("GET", "/v2/models/mnist/infer/more")
    with pytest.raises(RouteNotFoundError):
        ROUTER.match("GET", "v2/models")
    with pytest.raises(MethodNotAllowedError) as refused:
        ROUTER.match("GET", "/v2/models/mnist/infer")
    assert refused.value.allowed == ("POST",)
    with pytest.raises(InvalidInputError, match="percent-encoded UTF-8"):
        ROUTER.match("GET", "/v2/models/%ff")


# --- the codec ------------------------------------------------------------------------------

def request_json(batch: np.ndarray, **fields: object) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                   "shape": list(batch.shape), "data": batch.ravel().tolist()}],
                       **fields}).encode()


def test_json_and_binary_requests_read_to_the_same_tensor(model: ServedModel) -> None:
    batch = np.random.default_rng(1).random((3, 784), dtype=np.float32)
    from_json = decode_infer(model, request_json(batch, id="r"), None)
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 784],
                                     "parameters": {"binary_data_size": batch.nbytes}}]})
    from_binary = decode_infer(model, header.encode() + batch.tobytes(), str(len(header)))
    assert from_json.batch.tobytes() == from_binary.batch.tobytes() == batch.tobytes()
    assert from_json.id == "r" and from_binary.id == ""
    assert from_json.choices == model.output_choices and from_json.binary == (False, False)
    nested = decode_infer(model, json.dumps({"inputs": [{
        "name": "input", "datatype": "FP32", "shape": [3, 784],
        "data": batch.tolist()}]}).encode(), None)
    assert nested.batch.tobytes() == batch.tobytes()


def test_outputs_binary_flags_and_classification_are_read(model: ServedModel) -> None:
    batch = np.zeros((1, 784), np.float32)
    request = decode_infer(model, request_json(
        batch, outputs=[{"name": "probabilities", "parameters": {"classification": 3}},
                        {"name": "logits", "parameters": {"binary_data": False}}],
        parameters={"binary_data_output": True, "timeout": 5}), None)
    assert request.choices == (OutputChoice(1, 3), OutputChoice(0))
    assert request.binary == (True, False) and request.timeout == 5


def test_a_json_part_past_the_models_bound_is_refused_before_parsing(
        model: ServedModel) -> None:
    limit = json_limit(model)
    assert limit == 8 * 784 * JSON_BYTES_PER_VALUE + 64 * 1024
    with pytest.raises(InvalidInputError, match="send large tensors as binary data"):
        decode_infer(model, b"[" * (limit + 1), None)  # not even valid JSON: never parsed


def test_responses_json_and_binary(model: ServedModel) -> None:
    outputs = model.runtime.run(np.random.default_rng(2).random((2, 784), dtype=np.float32))
    choices = (OutputChoice(0), OutputChoice(1, 2))
    tensors = output_tensors(model, outputs, choices)
    nothing = np.zeros(1, np.float32)
    as_json, length = encode_infer(model, InferRequest("x", nothing, choices, (False, False),
                                                       None), tensors)
    assert length is None
    document = json.loads(as_json)
    assert document["id"] == "x" and document["model_version"] == "1"
    logits, classes = document["outputs"]
    assert np.array(logits["data"], np.float32).tobytes() == outputs[0].tobytes()
    assert classes["datatype"] == "BYTES" and classes["shape"] == [2, 2]
    assert [s.encode() for s in classes["data"]] == list(tensors[1].strings)
    as_binary, length = encode_infer(model, InferRequest("", nothing, choices, (True, True),
                                                         None), tensors)
    assert length is not None
    header = json.loads(as_binary[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert as_binary[length:length + sizes[0]] == outputs[0].astype("<f4").tobytes()
    assert as_binary[length + sizes[0]:] == tensors[1].raw()


# --- classification and timeouts ------------------------------------------------------------

def test_class_strings_are_tritons(model: ServedModel) -> None:
    scores = np.array([[0.1, 0.7, 0.2, 0, 0, 0, 0, 0, 0, 0.7]], np.float32)
    assert class_strings(model, scores, 3) == (b"0.700000:1:1", b"0.700000:9:9",
                                               b"0.200000:2:2")
    tensor = output_tensors(model, [scores], (OutputChoice(0, 2),))[0]
    assert tensor.raw() == b"\x0c\x00\x00\x000.700000:1:1\x0c\x00\x00\x000.700000:9:9"
    unlabeled = class_strings(model, np.array([[1.0, 3.0]], np.float32), 1)
    assert unlabeled == (b"3.000000:1",)  # no labels for an output of another size


def test_timeouts_are_microseconds() -> None:
    assert deadline_from_timeout(None, 10.0) is None
    assert deadline_from_timeout(0, 10.0) is None
    assert deadline_from_timeout(2_500_000, 10.0) == pytest.approx(12.5)
    for bad in (-1, 1.5, "1s", True):
        with pytest.raises(InvalidInputError, match="timeout"):
            deadline_from_timeout(bad, 10.0)


# --- protobuf as Triton's JSON --------------------------------------------------------------

def test_wide_integers_are_numbers_and_defaults_are_written() -> None:
    config = mc.ModelConfig(name="m", max_batch_size=4, input=[mc.ModelInput(
        name="input", data_type=mc.TYPE_FP32, dims=[784])],
        dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=4000),
        version_policy=mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(
            versions=[1, 3])))
    document = message_json(config)
    assert document["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [784],
                                  "format": "FORMAT_NONE"}]
    assert document["dynamic_batching"]["max_queue_delay_microseconds"] == 4000
    assert document["version_policy"] == {"specific": {"versions": [1, 3]}}
    assert document["platform"] == "" and document["output"] == []
    stats = message_json(oip.ModelStatistics(name="m", inference_count=2**40, inference_stats=(
        oip.InferStatistics(success=oip.StatisticDuration(count=1, ns=2**50)))))
    assert stats["inference_count"] == 2**40
    assert stats["inference_stats"]["success"] == {"count": 1, "ns": 2**50}
