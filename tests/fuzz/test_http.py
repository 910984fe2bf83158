"""Fuzzing the HTTP port: random JSON for /infer, nearly valid inference requests (JSON and
binary tensor data, with lengths that lie), random routes, methods, headers and bodies, and raw
bytes below HTTP. Every answer must be a status the server gives on purpose with a short
``{"error": ...}``, never 500; the server logs no traceback; a good request follows each example.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
from hypothesis import assume, example, given
from hypothesis import strategies as st

from axon.client.server_process import ServerProcess
from tests.fuzz.properties import (
    SERVED_MODELS,
    assert_http_still_serving,
    check_http_status,
    fuzz_settings,
)
from tests.fuzz.strategies import TRITON_PARAMETERS, model_names, short_text, versions
from tests.support.http import INFERENCE_HEADER, call, raw_exchange, status_of
from tests.support.repositories import DIGITS, PETS

MODEL_INPUTS = {DIGITS: [1, 784], PETS: [1, 3, 16, 16]}
DATATYPES = ("FP32", "FP64", "INT32", "BYTES", "BOOL", "fp32", "")

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), short_text)
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(short_text, children, max_size=5)),
    max_leaves=25)
documents = st.dictionaries(st.one_of(st.sampled_from(["id", "inputs", "outputs",
                                                       "parameters"]), short_text),
                            json_values, max_size=5)
parameters = st.dictionaries(st.one_of(st.sampled_from(TRITON_PARAMETERS), short_text),
                             json_values, max_size=3)
dimensions = st.one_of(st.integers(-3, 300), st.sampled_from([784, 3, 16, 2**31, 2**63 - 1]),
                       st.integers(-2**70, 2**70))


@st.composite
def infer_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """A good inference request (JSON or binary data) with a few things broken, or none."""
    model = draw(st.sampled_from(sorted(MODEL_INPUTS)))
    shape = list(MODEL_INPUTS[model])
    values = np.full(int(np.prod(shape)), 0.5, np.float32)
    tensor: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": shape}
    document: dict[str, Any] = {"inputs": [tensor]}
    binary = draw(st.booleans())
    raw = values.tobytes() if binary else b""
    if binary:
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = values.tolist()
    if draw(st.booleans()):
        tensor["datatype"] = draw(st.one_of(st.sampled_from(DATATYPES), short_text))
    if draw(st.booleans()):
        tensor["shape"] = draw(st.one_of(st.lists(dimensions, max_size=6), json_values))
    if draw(st.booleans()):
        if binary:
            tensor["parameters"]["binary_data_size"] = draw(st.one_of(
                st.integers(-10, len(raw) + 10), json_values))
        else:
            tensor["data"] = draw(st.one_of(
                st.lists(json_scalars, max_size=20), json_values,
                st.just(values.reshape(shape).tolist()), st.just(values.tolist()[:-1]),
                st.just([1e39] * len(values))))
    if draw(st.booleans()):
        document["outputs"] = draw(st.lists(st.fixed_dictionaries(
            {"name": st.one_of(st.sampled_from(["probabilities", "logits"]), short_text)},
            optional={"parameters": st.dictionaries(
                st.sampled_from(["classification", "binary_data", "shared_memory_region"]),
                st.one_of(st.integers(-3, 20), json_values), max_size=2)}), max_size=3))
    if draw(st.booleans()):
        document["parameters"] = draw(parameters)
    header = json.dumps(document).encode()
    headers = {"Content-Type": "application/json"}
    if binary:
        length = len(header) + draw(st.sampled_from([0, 0, 0, -1, 1, -len(header), 10**6]))
        headers[INFERENCE_HEADER] = str(length)
        if draw(st.booleans()):
            raw = raw[:draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=8))
    return f"/v2/models/{model}/infer", header + raw, headers


@fuzz_settings()
@given(request=infer_requests())
def test_nearly_valid_inference_requests(fuzz_server: ServerProcess,
                                         request: tuple[str, bytes, dict[str, str]]) -> None:
    path, body, headers = request
    answer = call(fuzz_server.http_address, "POST", path, body, headers)
    check_http_status(answer.status, answer.body)
    assert_http_still_serving(fuzz_server)


@fuzz_settings(share=1 / 2)
@given(document=st.one_of(documents, json_values), model=st.sampled_from(sorted(MODEL_INPUTS)))
def test_random_json_for_inference(fuzz_server: ServerProcess, document: Any,
                                   model: str) -> None:
    answer = call(fuzz_server.http_address, "POST", f"/v2/models/{model}/infer",
                  json.dumps(document).encode(), {"Content-Type": "application/json"})
    check_http_status(answer.status, answer.body)
    assert_http_still_serving(fuzz_server)


SEGMENTS = ("v2", "models", DIGITS, PETS, "versions", "1", "2", "infer", "ready", "config",
            "stats", "classify", "repository", "index", "load", "health", "live", "..", ".",
            "", "%2F", "%ff", "%00", "%2e%2e", "%")
segments = st.one_of(st.sampled_from(SEGMENTS), short_text.map(lambda s: quote(s, safe="")),
                     model_names.map(lambda s: quote(s[:300], safe="")),
                     versions.map(lambda s: quote(s[:300], safe="")))
HEADER_NAMES = ("Content-Type", "Content-Encoding", INFERENCE_HEADER, "Expect", "Accept",
                "Authorization", "X-Request-Id")
header_values = st.one_of(
    st.sampled_from(["application/json", "application/octet-stream", "image/png",
                     "multipart/form-data; boundary=x", "gzip", "deflate", "identity", "br",
                     "100-continue", "0", "-1", "99999999999999999999", ""]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60))


@fuzz_settings(share=1 / 2)
@given(method=st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
                        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10)),
       path=st.lists(segments, min_size=1, max_size=7).map(lambda parts: "/" + "/".join(parts)),
       query=st.one_of(st.just(""), st.sampled_from(["?top_k=3", "?top_k=0", "?top_k=x",
                                                     "?top_k=" + "9" * 30, "?a=%ff&&="])),
       headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=4),
       body=st.one_of(st.just(b""), st.binary(max_size=200),
                      st.sampled_from([b"{}", b'{"ready": true}', b"\x89PNG\r\n\x1a\n"])))
@example(method="POST", path=f"/v2/models/{DIGITS}/classify", query="?top_k=3", headers={},
         body=b"\x89PNG\r\n\x1a\n")
def test_random_routes_methods_headers_and_bodies(
        fuzz_server: ServerProcess, *, method: str, path: str, query: str,
        headers: dict[str, str], body: bytes) -> None:
    try:
        parts = [unquote(p, errors="strict") for p in path.split("/")]
    except UnicodeDecodeError:
        parts = []
    # Unloading a served model is a success that would fail the next good request.
    assume(not (parts[-1:] == ["unload"] and set(parts) & set(SERVED_MODELS)))
    answer = call(fuzz_server.http_address, method, path + query, body, headers)
    check_http_status(answer.status, answer.body)
    assert_http_still_serving(fuzz_server)


REQUEST_LINES = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.builds(lambda method, target, version: method + b" " + target + b" " + version,
              st.sampled_from([b"GET", b"POST", b"get", b"PRI", b"\x00"]),
              st.one_of(st.sampled_from([b"/v2", b"*", b"http://x/v2", b"/v2/health/live"]),
                        st.binary(max_size=50)),
              st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9.9", b""])))


@fuzz_settings(share=1 / 3)
@given(line=REQUEST_LINES,
       rest=st.one_of(st.just(b"\r\nHost: x\r\n\r\n"), st.binary(max_size=200),
                      st.just(b"\r\nContent-Length: 5\r\n\r\n{"),
                      st.just(b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}")))
def test_raw_bytes_below_http(fuzz_server: ServerProcess, line: bytes, rest: bytes) -> None:
    received = raw_exchange(fuzz_server.http_address, line + rest, wait=2, first=True)
    status = status_of(received)
    if status:  # no answer at all (the server waits for more, or closed) is fine too
        body = received.partition(b"\r\n\r\n")[2]
        check_http_status(status, body)
    assert_http_still_serving(fuzz_server)
