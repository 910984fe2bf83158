"""What ``axon bench`` loads: the served model, and the one request it repeats, per API.

- ``infer``: ``inference.GRPCInferenceService/ModelInfer`` with FP32 tensors of the model's
  input shape (the client does the preprocessing);
- ``classify``: ``axon.v1.Classifier/Classify`` with PNG files of the model's image size (the
  server decodes and normalises them).

Each request is checked once through the real client before any load is built on it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

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

    def call(self, api: Api, images: int) -> Call:
        """The request of ``images`` images that bench repeats, once answered for real."""
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
