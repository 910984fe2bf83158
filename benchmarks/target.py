"""What ``axon bench`` loads: the served model, and the one request it repeats, per API and
protocol.

- ``infer``: ``inference.GRPCInferenceService/ModelInfer`` with FP32 tensors of the model's
  input shape (the client does the preprocessing); over HTTP, ``POST /v2/models/M/infer`` with
  the same tensor as JSON (``http-json``) or as binary tensor data (``http-binary``, the answer
  binary too);
- ``classify``: ``axon.v1.Classifier/Classify`` with PNG files of the model's image size (the
  server decodes and normalises them); over HTTP, one PNG to ``/v2/models/M/classify``.

Each request is checked once through a real client before any load is built on it.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from axon.benchmarks.loadgen import Call, LoadError
from axon.client.common import AxonClientError, classify_request, infer_request
from axon.client.sync_client import AxonClient

Api = Literal["infer", "classify"]
METHODS: dict[Api, str] = {
    "infer": "/inference.GRPCInferenceService/ModelInfer",
    "classify": "/axon.v1.Classifier/Classify",
}
PROTOCOLS = ("grpc", "http-json", "http-binary")


@dataclass(frozen=True)
class Target:
    """The served model under load, and the server process when bench started it."""

    client: AxonClient
    model: str
    version: str
    input_shape: tuple[int, ...]
    """One image as the model takes it, e.g. (784,)."""
    image_shape: tuple[int, int, int]
    """One image as the classification API takes it: height, width, channels."""
    server_pid: int | None
    security_flags: tuple[str, ...] = ()
    """The TLS and token flags bench was given, handed on to the load generator."""
    http_address: str | None = None
    """The server's HTTP/REST port (None: it has none)."""

    def call(self, api: Api, images: int, protocol: str = "grpc") -> Call:
        """The request of ``images`` images that bench repeats, once answered for real."""
        if protocol != "grpc":
            if self.http_address is None:
                raise LoadError(f"{protocol}: the server has no HTTP port (give --http-address "
                                "with --address)")
            return http_call(self, api, images, binary=protocol == "http-binary")
        version = self.version
        try:
            if api == "infer":
                batch = np.random.default_rng(0).random((images, *self.input_shape),
                                                        dtype=np.float32)
                outputs = self.client.infer(self.model, batch, version=version)
                answered = len(next(iter(outputs.values())))
                body = infer_request(self.model, batch, version=version).SerializeToString()
            else:
                pictures = [png_image(*self.image_shape)] * images
                answered = len(self.client.classify(pictures, model=self.model,
                                                    version=version).results)
                body = classify_request(pictures, self.model, version, 1).SerializeToString()
        except AxonClientError as error:
            raise LoadError(f"{api}: a request of {images} images failed: {error}") from error
        if answered != images:
            raise LoadError(f"{api}: a request of {images} images got {answered} answers")
        return Call(self.client.address, METHODS[api], body, self.security_flags)


def png_image(height: int, width: int, channels: int, seed: int = 0) -> bytes:
    """A PNG of random pixels: the server decodes it like any photo. Noise compresses worse
    than a real digit (about 880 bytes against 200-300 at 28x28), so it errs on the side of
    more bytes to move and decode."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels),
                                                  dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0], "L") if channels == 1 else \
        Image.fromarray(pixels, "RGB")
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    return encoded.getvalue()


def http_call(target: Target, api: Api, images: int, *, binary: bool) -> Call:
    """The HTTP request of ``images`` images, sent once and its answer checked."""
    assert target.http_address is not None
    base = f"/v2/models/{target.model}" + (f"/versions/{target.version}" if target.version
                                           else "")
    headers: dict[str, str] = {}
    if api == "classify":
        if images != 1:
            raise LoadError("classify over HTTP takes one image per request")
        body, path = png_image(*target.image_shape), f"{base}/classify"
        headers["Content-Type"] = "image/png"
    else:
        path = f"{base}/infer"
        batch = np.random.default_rng(0).random((images, *target.input_shape),
                                                dtype=np.float32)
        tensor: dict[str, Any] = {"name": "input", "datatype": "FP32",
                                  "shape": list(batch.shape)}
        if binary:
            tensor["parameters"] = {"binary_data_size": batch.nbytes}
            header = json.dumps({"inputs": [tensor],
                                 "parameters": {"binary_data_output": True}}).encode()
            body = header + batch.astype("<f4").tobytes()
            headers |= {"Content-Type": "application/octet-stream",
                        "Inference-Header-Content-Length": str(len(header))}
        else:
            tensor["data"] = batch.ravel().tolist()
            body = json.dumps({"inputs": [tensor]}).encode()
            headers["Content-Type"] = "application/json"
    _check_http(target, path, body, headers, images if api == "infer" else None)
    return Call(target.http_address, path, body, target.security_flags, http=True,
                headers=tuple(headers.items()))


def _check_http(target: Target, path: str, body: bytes, headers: dict[str, str],
                rows: int | None) -> None:
    """Send the request once (plain HTTP only: a TLS server is checked by the load itself)."""
    if any(flag.startswith("--tls") for flag in target.security_flags):
        return
    request = urllib.request.Request(f"http://{target.http_address}{path}", data=body,
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer, length = response.read(), response.headers.get(
                "Inference-Header-Content-Length")
    except urllib.error.HTTPError as error:
        raise LoadError(f"{path}: the request failed: HTTP {error.code} "
                        f"{error.read()[:300]!r}") from error
    if rows is not None:
        document = json.loads(answer[:int(length)] if length else answer)
        if document["outputs"][0]["shape"][0] != rows:
            raise LoadError(f"{path}: a request of {rows} images got another answer")
