"""Image classification on a served model: decode, normalise, infer, rank.

Images are prepared from the model card alone (size, colour mode, normalisation), exactly as
the training images were, so callers send pictures, not tensors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from axon.preprocessing import SERVED_FORMATS, ImageDecodeError, fit_pixels, load_image
from server.errors import InvalidInputError
from server.model import ServedModel

PROBABILITIES_OUTPUT = "probabilities"


@dataclass(frozen=True)
class RawPixels:
    """Raw uint8 pixels, row-major [height, width, channels]."""

    height: int
    width: int
    channels: int
    data: bytes


ImageInput = bytes | RawPixels
"""An encoded PNG/JPEG file, or raw pixels."""


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str
    probability: float


async def classify(resolve: Callable[[], ServedModel], images: Sequence[ImageInput],
                   top_k: int, *, max_image_pixels: int, decoder: Executor,
                   deadline: float | None = None,
                   ) -> tuple[ServedModel, list[list[ClassScore]]]:
    """The ``top_k`` most probable classes of each image, most probable first, and the model
    version that answered. ``resolve`` names the model; images decode on ``decoder``."""
    model = resolve()
    _check_request(model, images, top_k)
    loop = asyncio.get_running_loop()
    pixels = await loop.run_in_executor(decoder, decode_images, model, images, max_image_pixels)
    current = resolve()
    if current is not model:  # reloaded while the images decoded: the old one is closing
        _check_request(current, images, top_k)
        if current.card.preprocessing != model.card.preprocessing:
            pixels = await loop.run_in_executor(decoder, decode_images, current, images,
                                                max_image_pixels)
        model = current
    outputs = await model.infer(model.card.preprocessing.apply(pixels), deadline)
    probabilities = _probabilities(model, outputs)
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    labels = model.card.labels
    return model, [[ClassScore(int(i), labels[i], float(row[i])) for i in order]
                   for row, order in zip(probabilities, ranked, strict=True)]


def _check_request(model: ServedModel, images: Sequence[ImageInput], top_k: int) -> None:
    classes = len(model.card.labels)
    if not images:
        raise InvalidInputError("the request holds no images")
    if len(images) > model.policy.max_batch_size:
        raise InvalidInputError(f"the request holds {len(images)} images; model {model.name} "
                                f"takes at most {model.policy.max_batch_size} per request")
    if not 1 <= top_k <= classes:
        raise InvalidInputError(f"top_k must be between 1 and {classes} (the number of classes "
                                f"of {model.name}), got {top_k}")


def decode_images(model: ServedModel, images: Sequence[ImageInput],
                  max_image_pixels: int) -> npt.NDArray[np.uint8]:
    """uint8 [N, H, W, C] at the model's input size; InvalidInputError names the bad image."""
    spec = model.card.preprocessing
    decoded = []
    for position, image in enumerate(images):
        try:
            if isinstance(image, bytes):
                if not image:
                    raise InvalidInputError(f"image {position} is empty")
                decoded.append(load_image(image, spec.height, spec.width, spec.color_mode,
                                          max_pixels=max_image_pixels,
                                          formats=SERVED_FORMATS))
            else:
                decoded.append(fit_pixels(_raw_array(image, position, max_image_pixels),
                                          spec.height, spec.width, spec.color_mode))
        except ImageDecodeError as exc:
            raise InvalidInputError(f"image {position}: {exc}") from exc
    return np.stack(decoded)


def _raw_array(image: RawPixels, position: int, max_pixels: int) -> npt.NDArray[np.uint8]:
    if image.channels not in (1, 3) or image.height < 1 or image.width < 1:
        raise InvalidInputError(f"image {position}: raw pixels need height and width >= 1 and "
                                f"1 or 3 channels, got "
                                f"{image.height}x{image.width}x{image.channels}")
    if image.height * image.width > max_pixels:
        raise InvalidInputError(f"image {position}: {image.height}x{image.width} pixels (height x "
                                f"width, {image.height * image.width:,}) exceed the limit of "
                                f"{max_pixels:,}")
    expected = image.height * image.width * image.channels
    if len(image.data) != expected:
        raise InvalidInputError(f"image {position}: {image.height}x{image.width}x{image.channels} "
                                f"uint8 pixels need {expected:,} bytes, got {len(image.data):,}")
    return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width,
                                                       image.channels)


def _probabilities(model: ServedModel, outputs: list[npt.NDArray[np.float32]],
                   ) -> npt.NDArray[np.float32]:
    if PROBABILITIES_OUTPUT in model.output_names:
        probabilities: npt.NDArray[np.float32] = outputs[
            model.output_names.index(PROBABILITIES_OUTPUT)]
        return probabilities
    logits = outputs[0].astype(np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax: npt.NDArray[np.float32] = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return softmax
