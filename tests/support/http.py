"""Plain HTTP/1.1 calls for the tests (the standard library's http.client, so the tests see
exactly what went over the wire), and the shapes of the requests they send."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

INFERENCE_HEADER = "Inference-Header-Content-Length"


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-case names."""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The ``{"error": ...}`` message of an error answer (asserting it is one)."""
        document = self.json()
        assert isinstance(document, dict) and list(document) == ["error"], document
        assert isinstance(document["error"], str)
        return document["error"]


def call(address: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, *, timeout: float = 30,
         context: ssl.SSLContext | None = None) -> Answer:
    """One request on a fresh connection (``address`` is host:port)."""
    host, _, port = address.rpartition(":")
    connection: http.client.HTTPConnection = \
        http.client.HTTPSConnection(host, int(port), timeout=timeout, context=context) \
        if context is not None else http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, response.read(),
                      {k.lower(): v for k, v in response.getheaders()})
    finally:
        connection.close()


def get(address: str, path: str, **kwargs: Any) -> Answer:
    return call(address, "GET", path, **kwargs)


def post_json(address: str, path: str, document: Any, **kwargs: Any) -> Answer:
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return call(address, "POST", path, json.dumps(document).encode(), headers, **kwargs)


def json_infer(batch: npt.NDArray[np.float32], *, outputs: list[dict[str, Any]] | None = None,
               **fields: Any) -> dict[str, Any]:
    """An inference request with ``batch`` as JSON data."""
    document: dict[str, Any] = {**fields, "inputs": [{
        "name": "input", "datatype": "FP32", "shape": list(batch.shape),
        "data": batch.ravel().tolist()}]}
    if outputs is not None:
        document["outputs"] = outputs
    return document


def binary_infer(batch: npt.NDArray[np.float32], *, binary_output: bool = True,
                 outputs: list[dict[str, Any]] | None = None) -> tuple[bytes, dict[str, str]]:
    """An inference request with ``batch`` as binary tensor data: body and headers."""
    raw = np.ascontiguousarray(batch, dtype="<f4").tobytes()
    document: dict[str, Any] = {"inputs": [{
        "name": "input", "datatype": "FP32", "shape": list(batch.shape),
        "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": binary_output}}
    if outputs is not None:
        document["outputs"] = outputs
    header = json.dumps(document).encode()
    return header + raw, {INFERENCE_HEADER: str(len(header)),
                          "Content-Type": "application/octet-stream"}


def outputs_of(answer: Answer) -> dict[str, npt.NDArray[Any]]:
    """Every output of an inference answer, JSON or binary, as numpy arrays."""
    length = int(answer.headers.get(INFERENCE_HEADER.lower(), len(answer.body)))
    document = json.loads(answer.body[:length])
    arrays: dict[str, npt.NDArray[Any]] = {}
    offset = length
    for output in document["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            dtype = np.float32 if output["datatype"] == "FP32" else object
            arrays[output["name"]] = np.array(output["data"], dtype=dtype).reshape(
                output["shape"])
            continue
        raw = answer.body[offset:offset + size]
        offset += size
        if output["datatype"] == "FP32":
            arrays[output["name"]] = np.frombuffer(raw, "<f4").reshape(output["shape"])
        else:
            arrays[output["name"]] = np.array(length_prefixed(raw), dtype=object).reshape(
                output["shape"])
    return arrays


def length_prefixed(raw: bytes) -> list[str]:
    """Triton's BYTES tensor encoding, read back: each element after its 4-byte length."""
    items, offset = [], 0
    while offset < len(raw):
        size = int.from_bytes(raw[offset:offset + 4], "little")
        items.append(raw[offset + 4:offset + 4 + size].decode())
        offset += 4 + size
    return items


def raw_exchange(address: str, data: bytes, *, wait: float = 5.0,
                 context: ssl.SSLContext | None = None, first: bool = False) -> bytes:
    """Send ``data`` as it is on a fresh connection, then read until the server closes it or
    ``wait`` seconds pass (with ``first``: until one whole response has come); everything the
    server sent."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        stream: socket.socket | ssl.SSLSocket = sock if context is None \
            else context.wrap_socket(sock, server_hostname=host)
        stream.sendall(data)
        received = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = stream.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
            if first and _whole_response(received):
                break
        return received


def _whole_response(received: bytes) -> bool:
    head, separator, body = received.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def status_of(raw: bytes) -> int:
    """The status code of the first response in ``raw`` (0: no response)."""
    first = raw.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[1].isdigit() else 0
