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

from axon.preprocessing import ImageDecodeError, decode_image, fit_pixels, plain_png
from axon.server.errors import InvalidInputError
from axon.server.served_model import ServedModel

PROBABILITIES_OUTPUT = "probabilities"
Pixels = npt.NDArray[np.uint8]


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


@dataclass(frozen=True)
class ImageFailure:
    """Why one image of a request asking for per-image errors was not classified."""

    message: str


ImageResult = list[ClassScore] | ImageFailure


async def classify(resolve: Callable[[], ServedModel],
                   images: Sequence[ImageInput | ImageFailure],
                   top_k: int, *, max_image_pixels: int, decoder: Executor,
                   deadline: float | None = None, per_image_errors: bool = False,
                   ) -> tuple[ServedModel, list[ImageResult]]:
    """The ``top_k`` most probable classes of each image, most probable first, and the model
    version that answered. ``resolve`` names the model.

    An image that cannot be decoded -- or that is given as an ``ImageFailure``, one the
    caller's message already got wrong -- fails the request (InvalidInputError naming the first
    such), or, with ``per_image_errors``, gets an ``ImageFailure`` while the others are
    classified.
    """
    model = resolve()
    _check_request(model, images, top_k)
    decoded = await _decode(model, images, max_image_pixels, decoder, per_image_errors)
    current = resolve()
    if current is not model:  # reloaded while the images decoded: the old one is closing
        _check_request(current, images, top_k)
        if current.card.preprocessing != model.card.preprocessing:
            decoded = await _decode(current, images, max_image_pixels, decoder,
                                    per_image_errors)
        model = current
    results: list[ImageResult] = [item if isinstance(item, ImageFailure) else []
                                  for item in decoded]
    good = [item for item in decoded if not isinstance(item, ImageFailure)]
    if good:
        outputs = await model.infer(model.card.preprocessing.apply(np.stack(good)), deadline)
        scores = iter(_ranked(model, outputs, top_k))
        results = [item if isinstance(item, ImageFailure) else next(scores) for item in results]
    return model, results


def _check_request(model: ServedModel, images: Sequence[object], top_k: int) -> None:
    classes = len(model.card.labels)
    if not images:
        raise InvalidInputError("the request holds no images")
    if len(images) > model.batching.max_batch_size:
        raise InvalidInputError(f"the request holds {len(images)} images; model {model.name} "
                                f"takes at most {model.batching.max_batch_size} per request")
    if not 1 <= top_k <= classes:
        raise InvalidInputError(f"top_k must be between 1 and {classes} (the number of classes "
                                f"of {model.name}), got {top_k}")


async def _decode(model: ServedModel, images: Sequence[ImageInput | ImageFailure],
                  max_image_pixels: int,
                  decoder: Executor, per_image_errors: bool) -> list[Pixels | ImageFailure]:
    """Images already at the model's size and format decode in microseconds each: here, on
    the loop, where a hand-off to the decoder threads would cost more than the work. Others
    (photos to resize, JPEGs, bombs to refuse) decode on the decoder threads, where Pillow's
    C decoders run without the interpreter lock."""
    if all(_decodes_at_once(model, image) for image in images):
        return decode_images(model, images, max_image_pixels, per_image_errors)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(decoder, decode_images, model, images, max_image_pixels,
                                      per_image_errors)


def _decodes_at_once(model: ServedModel, image: ImageInput | ImageFailure) -> bool:
    spec = model.card.preprocessing
    if isinstance(image, ImageFailure):
        return True
    if isinstance(image, bytes):
        return plain_png(image, spec.height, spec.width, spec.color_mode)
    return (image.height, image.width, image.channels) == (spec.height, spec.width,
                                                            spec.channels)


def decode_images(model: ServedModel, images: Sequence[ImageInput | ImageFailure],
                  max_image_pixels: int, per_image_errors: bool = False,
                  ) -> list[Pixels | ImageFailure]:
    """Each image as uint8 [H, W, C] at the model's input size. A bad image raises
    InvalidInputError naming its position, or becomes an ``ImageFailure`` (at that position)
    with ``per_image_errors``."""
    spec = model.card.preprocessing
    decoded: list[Pixels | ImageFailure] = []
    for position, image in enumerate(images):
        if isinstance(image, ImageFailure):
            if not per_image_errors:
                raise InvalidInputError(f"image {position}: {image.message}")
            decoded.append(image)
            continue
        try:
            if isinstance(image, bytes):
                if not image:
                    raise ImageDecodeError("the image is empty")
                decoded.append(decode_image(image, spec.height, spec.width, spec.color_mode,
                                            max_pixels=max_image_pixels))
            else:
                decoded.append(fit_pixels(_raw_array(image, max_image_pixels),
                                          spec.height, spec.width, spec.color_mode))
        except ImageDecodeError as exc:
            if not per_image_errors:
                raise InvalidInputError(f"image {position}: {exc}") from exc
            decoded.append(ImageFailure(str(exc)))
    return decoded


def _raw_array(image: RawPixels, max_pixels: int) -> Pixels:
    if image.channels not in (1, 3) or image.height < 1 or image.width < 1:
        raise ImageDecodeError(f"raw pixels need height and width >= 1 and 1 or 3 channels, "
                               f"got {image.height}x{image.width}x{image.channels}")
    if image.height * image.width > max_pixels:
        raise ImageDecodeError(f"{image.height}x{image.width} pixels (height x width, "
                               f"{image.height * image.width:,}) exceed the limit of "
                               f"{max_pixels:,}")
    expected = image.height * image.width * image.channels
    if len(image.data) != expected:
        raise ImageDecodeError(f"{image.height}x{image.width}x{image.channels} uint8 pixels "
                               f"need {expected:,} bytes, got {len(image.data):,}")
    return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width,
                                                       image.channels)


def _ranked(model: ServedModel, outputs: Sequence[npt.NDArray[np.float32]],
            top_k: int) -> list[list[ClassScore]]:
    probabilities = _probabilities(model, outputs)
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    labels = model.card.labels
    return [[ClassScore(i, labels[i], p) for i, p in zip(order.tolist(),
                                                         row[order].tolist(), strict=True)]
            for row, order in zip(probabilities, ranked, strict=True)]


def _probabilities(model: ServedModel, outputs: Sequence[npt.NDArray[np.float32]],
                   ) -> npt.NDArray[np.float32]:
    if PROBABILITIES_OUTPUT in model.output_names:
        probabilities: npt.NDArray[np.float32] = outputs[
            model.output_names.index(PROBABILITIES_OUTPUT)]
        return probabilities
    logits = outputs[0].astype(np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax: npt.NDArray[np.float32] = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return softmax
