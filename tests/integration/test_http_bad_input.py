"""Bad input over HTTP: each case gets the status the error table gives it and a short
``{"error": ...}`` message saying what was wrong, and the next good request still succeeds.
Requests are built by hand (and, below the HTTP layer, written on a raw socket) so they can be
wrong in every way."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from axon.client.server_process import ServerProcess
from tests.integration.test_bad_input import png_declaring, real_png
from tests.support.http import (
    INFERENCE_HEADER,
    Answer,
    call,
    json_infer,
    post_json,
    raw_exchange,
)
from tests.support.repositories import BROKEN, DIGITS

ONE = np.full((1, 784), 0.5, dtype=np.float32)
INFER = f"/v2/models/{DIGITS}/infer"
Request = Callable[[str], Answer]


def send(path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         method: str = "POST") -> Request:
    return lambda address: call(address, method, path, body, headers)


def document(changes: Callable[[dict[str, Any]], object], path: str = INFER) -> Request:
    """A good JSON inference request, changed by ``changes`` (which edits it in place)."""
    request = json_infer(ONE)
    changes(request)
    return send(path, json.dumps(request).encode(), {"Content-Type": "application/json"})


def tensor(**fields: Any) -> Request:
    return document(lambda request: request["inputs"][0].update(fields))


def with_binary(header: dict[str, Any], data: bytes, length: str | None = None) -> Request:
    text = json.dumps(header).encode()
    return send(INFER, text + data, {INFERENCE_HEADER: length or str(len(text))})


BINARY_INPUT = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784],
                            "parameters": {"binary_data_size": 784 * 4}}]}


def raw(data: bytes) -> Request:
    """``data`` written on a socket as it is; the first response parsed back."""
    def request(address: str) -> Answer:
        received = raw_exchange(address, data, first=True)
        head, _, body = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0
        return Answer(status, body)
    return request


@dataclass(frozen=True)
class Case:
    request: Request
    status: int
    message: str


CASES = {
    "malformed JSON": Case(send(INFER, b"{bad"), 400, "the request body is not valid JSON"),
    "truncated JSON": Case(send(INFER, json.dumps(json_infer(ONE)).encode()[:1000]), 400,
                           "not valid JSON"),
    "an empty body": Case(send(INFER, b""), 400, "not valid JSON"),
    "a JSON array": Case(send(INFER, b"[1, 2]"), 400, "must be a JSON object with \"inputs\""),
    "JSON nested past parsing": Case(send(INFER, b"[" * 2000 + b"]" * 2000), 400,
                                     "not valid JSON"),
    "inputs that are not a list": Case(document(lambda r: r.update(inputs={})), 400,
                                       "\"inputs\" must be a list of tensors"),
    "no inputs": Case(document(lambda r: r.update(inputs=[])), 400,
                      "the request has no inputs"),
    "a wrong input name": Case(tensor(name="pixels"), 400,
                               "missing input 'input' (got 'pixels')"),
    "an input without a name": Case(tensor(name=7), 400, "every input needs a \"name\""),
    "a wrong datatype": Case(tensor(datatype="INT32"), 400,
                             "has datatype 'INT32'; mnist takes one input 'input' FP32"),
    "a wrong shape": Case(tensor(shape=[1, 783]), 400,
                          "must have shape [N, 784] with N from 1 to 256, got [1, 783]"),
    "a shape of strings": Case(tensor(shape=["1", "784"]), 400,
                               "\"shape\" of input 'input' must be a list of integers"),
    "a batch too large": Case(tensor(shape=[300, 784]), 400, "holds 300 items"),
    "too few values": Case(tensor(data=[0.5] * 783), 400,
                           "has 783 values in \"data\"; shape [1, 784] needs 784"),
    "strings as data": Case(tensor(data=["0.5"] * 784), 400,
                            "must hold numbers only (FP32), not strings"),
    "null in the data": Case(tensor(data=[None] * 784), 400, "must hold numbers only"),
    "booleans as data": Case(tensor(data=[True] * 784), 400, "not true/false"),
    "ragged nested data": Case(tensor(data=[[0.5] * 783, [0.5]]), 400,
                               "in nested lists of equal lengths"),
    "data that is not a list": Case(tensor(data="0.5"), 400,
                                    "\"data\" of input 'input' must be a list of numbers"),
    "no data at all": Case(document(lambda r: r["inputs"][0].pop("data")), 400,
                           "has neither \"data\" nor parameters.binary_data_size"),
    "a number beyond FP32": Case(tensor(data=[1e39] * 784), 400,
                                 "holds 784 NaN or infinite values"),
    "binary data larger than declared": Case(
        with_binary(BINARY_INPUT, ONE.tobytes() + b"\0" * 8), 400,
        "declares binary_data_size 3,136, but the body holds 3,144 bytes"),
    "binary data smaller than declared": Case(
        with_binary(BINARY_INPUT, ONE.tobytes()[:3000]), 400,
        "declares binary_data_size 3,136, but the body holds 3,000 bytes"),
    "binary data without its header length": Case(
        send(INFER, json.dumps(BINARY_INPUT).encode() + ONE.tobytes()), 400,
        "not valid JSON"),
    "a header length past the body": Case(
        with_binary(BINARY_INPUT, ONE.tobytes(), length="999999"), 400,
        "header Inference-Header-Content-Length is '999999'"),
    "a header length that is not a number": Case(
        with_binary(BINARY_INPUT, ONE.tobytes(), length="-5"), 400,
        "header Inference-Header-Content-Length is '-5'"),
    "a header length in digits beyond ASCII": Case(
        # '²' is a digit to str.isdigit, not to int(); sent as its UTF-8 bytes.
        with_binary(BINARY_INPUT, ONE.tobytes(), length="²".encode().decode("latin-1")), 400,
        "header Inference-Header-Content-Length is '²'"),
    "a header length of 5,000 digits": Case(
        with_binary(BINARY_INPUT, ONE.tobytes(), length="0" * 4999 + "5"), 400,
        "header Inference-Header-Content-Length is '000000"),
    "bytes after the JSON that no input claims": Case(
        with_binary(json_infer(ONE), b"\0" * 16), 400,
        "holds 16 bytes after its JSON part, but no input declares binary_data_size"),
    "a binary size that does not fit the shape": Case(
        with_binary({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 784],
                                 "parameters": {"binary_data_size": 784 * 4}}]},
                    ONE.tobytes()), 400,
        "has 3,136 bytes of raw contents; shape [2, 784] of FP32 needs 6,272"),
    "a negative binary size": Case(
        with_binary({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784],
                                 "parameters": {"binary_data_size": -1}}]}, b""), 400,
        "binary_data_size of input 'input' must be a non-negative integer"),
    "data and binary data together": Case(
        with_binary({"inputs": [{**json_infer(ONE)["inputs"][0],
                                 "parameters": {"binary_data_size": 3136}}]}, ONE.tobytes()),
        400, "has both \"data\" and binary_data_size"),
    "an unknown output": Case(document(lambda r: r.update(outputs=[{"name": "scores"}])), 400,
                              "unknown output 'scores' requested"),
    "an output requested twice": Case(
        document(lambda r: r.update(outputs=[{"name": "logits"}, {"name": "logits"}])), 400,
        "output 'logits' is requested twice; name each output at most once"),
    "300,000 outputs requested": Case(
        document(lambda r: r.update(outputs=[{"name": "logits"}] * 300_000)), 400,
        "300,000 outputs requested; mnist has 2 ('logits', 'probabilities')"),
    "a classification of zero classes": Case(
        document(lambda r: r.update(outputs=[{"name": "probabilities",
                                              "parameters": {"classification": 0}}])), 400,
        "parameter 'classification' of output 'probabilities' must be a positive integer"),
    "binary_data that is not a flag": Case(
        document(lambda r: r.update(outputs=[{"name": "logits",
                                              "parameters": {"binary_data": "yes"}}])), 400,
        "parameter 'binary_data' must be true or false"),
    "a shared-memory parameter": Case(
        document(lambda r: r.update(parameters={"shared_memory_region": "r0"})), 400,
        "asks for the shared-memory extension, which Axon does not implement"),
    "a timeout that is not a duration": Case(
        document(lambda r: r.update(parameters={"timeout": "1s"})), 400,
        "parameter 'timeout' must be a non-negative integer"),
    "an id that is not a string": Case(document(lambda r: r.update(id=7)), 400,
                                       "\"id\" must be a string"),
    "an unknown model": Case(send("/v2/models/resnet/infer", b"{}"), 404,
                             "unknown model 'resnet'; loaded models: "),
    "an unknown version": Case(document(lambda r: None, f"/v2/models/{DIGITS}/versions/9/infer"),
                               404, "has no loaded version 9 (loaded: 1, 2)"),
    "a version that is not a number": Case(
        document(lambda r: None, f"/v2/models/{DIGITS}/versions/latest/infer"), 400,
        "model version must be a positive integer"),
    "a model name that climbs out": Case(send("/v2/models/..%2F..%2Fetc%2Fpasswd/infer", b"{}"),
                                         404, "unknown model '../../etc/passwd'"),
    "loading a path": Case(send("/v2/repository/models/..%2Fetc/load", b"{}"), 400,
                           "invalid model name '../etc'"),
    "a path of dot segments": Case(send("/v2/models/../../../etc/passwd", method="GET"), 404,
                                   "no route"),
    "a path that is not UTF-8": Case(send("/v2/models/%ff/ready", method="GET"), 400,
                                     "is not percent-encoded UTF-8"),
    "an unknown route": Case(send("/v1/models/mnist:predict", b"{}"), 404, "no route"),
    "a wrong method": Case(send(INFER, method="GET"), 405, "'GET' is not allowed on"),
    "a wrong method for health": Case(send("/v2/health/live", b"", method="POST"), 405,
                                      "use GET"),
    "an image sent as tensors": Case(send(INFER, real_png(), {"Content-Type": "image/png"}), 415,
                                     "send images to /v2/models/NAME/classify"),
    "tensors sent as an image": Case(
        send(f"/v2/models/{DIGITS}/classify", b"{}", {"Content-Type": "application/json"}), 415,
        "send tensors to /v2/models/NAME/infer"),
    "a multipart form": Case(send(INFER, b"--x--", {"Content-Type": "multipart/form-data"}),
                             415, "content type 'multipart/form-data' is not accepted here"),
    "an unknown content encoding": Case(
        send(INFER, json.dumps(json_infer(ONE)).encode(), {"Content-Encoding": "zstd"}), 415,
        "the body's Content-Encoding cannot be decoded; use gzip, deflate or none"),
    "a content encoding Axon does not take": Case(
        send(INFER, json.dumps(json_infer(ONE)).encode(), {"Content-Encoding": "br"}), 415,
        "content encoding 'br' is not accepted"),
    "gzip that is not gzip": Case(send(INFER, b"not gzip", {"Content-Encoding": "gzip"}), 400,
                                  "not valid data of its Content-Encoding"),
    "a gzip bomb past the limit": Case(
        send(INFER, gzip.compress(b" " * (9 * 1024 * 1024)), {"Content-Encoding": "gzip"}),
        413, "the body is more than 8,388,608 bytes"),
    "a huge declared length": Case(
        raw(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {2**62}\r\n\r\n".encode()),
        413, "the body is 4,611,686,018,427,387,904 bytes; ModelInfer takes at most"),
    "an oversized header": Case(
        raw(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"),
        431, "a header is longer than 8190 bytes"),
    "too many headers": Case(
        raw(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"), 431,
        "more than 128 headers"),
    "an oversized request line": Case(
        raw(b"GET /v2/models/" + b"m" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"), 414,
        "the request line is longer than 8190 bytes"),
    "not HTTP at all": Case(raw(b"HELLO THERE\r\n\r\n"), 400, "malformed HTTP request"),
    "a broken chunk": Case(
        raw(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            "zz\r\n{}\r\n0\r\n\r\n".encode()), 400, "malformed"),
    "a corrupt image": Case(send(f"/v2/models/{DIGITS}/classify", b"\x89PNG\r\n\x1a\n garbage",
                                 {"Content-Type": "image/png"}), 400,
                            "image 0: 16-byte image: not a decodable"),
    "a decompression bomb": Case(send(f"/v2/models/{DIGITS}/classify",
                                      png_declaring(5000, 5000)), 400,
                                 "declares 5000x5000 pixels (25,000,000)"),
    "a top_k that is not a number": Case(send(f"/v2/models/{DIGITS}/classify?top_k=three",
                                              real_png()), 400,
                                         "top_k must be a positive integer, got 'three'"),
    "an index request that is not JSON": Case(send("/v2/repository/index", b"ready"), 400,
                                              "not valid JSON"),
    "an index flag that is not a flag": Case(send("/v2/repository/index", b'{"ready": "yes"}'),
                                             400, "\"ready\" must be true or false"),
    "a load with a config parameter": Case(
        send(f"/v2/repository/models/{DIGITS}/load", b'{"parameters": {"config": "{}"}}'), 400,
        "unsupported parameters 'config'"),
    "loading a corrupt model": Case(send(f"/v2/repository/models/{BROKEN}/load", b"{}"), 400,
                                    "broken/1/model.onnx: onnxruntime cannot load it"),
    "a control body past its limit": Case(
        send("/v2/repository/index", b" " * (64 * 1024 + 1)), 413, "takes at most 65,536"),
}


@pytest.fixture(scope="module")
def address(server: ServerProcess) -> str:
    return server.http_address


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_http_input_gets_its_status_and_the_server_carries_on(
        address: str, server: ServerProcess, case: Case) -> None:
    answer = case.request(address)
    assert answer.status == case.status, answer.body[:500]
    message = Answer(answer.status, answer.body).error
    assert case.message in message, message
    assert len(message) < 1000, "messages stay short whatever the input"
    assert "Traceback" not in message and 'File "' not in message
    good = post_json(address, INFER, json_infer(ONE))
    assert good.status == 200 and len(good.json()["outputs"]) == 2
    assert server.process.poll() is None
    assert "Traceback" not in server.log()


def test_every_case_is_distinct_and_there_are_enough() -> None:
    assert len(CASES) >= 25
    assert len({case.message for case in CASES.values()}) >= 25
