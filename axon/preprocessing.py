"""Pixels to model input: the one definition shared by training and serving.

A model is trained on ``PreprocessingSpec.apply(images)`` and the spec is embedded in the exported
model, so the server can turn a decoded image into exactly the tensor the model was trained on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from axon.errors import AxonError

InputLayout = Literal["flat", "nchw"]
"""``flat``: one row of H*W*C values per image (MNIST's 784); ``nchw``: [C, H, W] per image."""

PIXEL_SCALE = 1.0 / 255.0


@dataclass(frozen=True)
class PreprocessingSpec:
    """How uint8 images of shape [N, H, W, C] become float32 model input.

    ``value = (pixel * scale - mean[c]) / std[c]``, then laid out as ``layout`` says.
    """

    height: int
    width: int
    channels: int
    layout: InputLayout
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = PIXEL_SCALE

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB), got {self.channels}")
        if self.layout not in ("flat", "nchw"):
            raise ValueError(f"layout must be 'flat' or 'nchw', got {self.layout!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Model input shape of one image, without the batch dimension."""
        if self.layout == "flat":
            return (self.height * self.width * self.channels,)
        return (self.channels, self.height, self.width)

    @property
    def color_mode(self) -> Literal["L", "RGB"]:
        """The Pillow mode an image must be converted to before ``apply``."""
        return "L" if self.channels == 1 else "RGB"

    def apply(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Normalise uint8 images [N, H, W, C] (or [N, H, W] when greyscale) to model input."""
        if images.ndim == 3 and self.channels == 1:
            images = images[..., np.newaxis]
        expected = (self.height, self.width, self.channels)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"expected images of shape [N, {', '.join(map(str, expected))}], "
                             f"got {list(images.shape)}")
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        values = (images.astype(np.float32) * np.float32(self.scale) - mean) / std
        if self.layout == "flat":
            return np.ascontiguousarray(values.reshape(len(values), -1))
        return np.ascontiguousarray(values.transpose(0, 3, 1, 2))

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height, "width": self.width, "channels": self.channels,
            "layout": self.layout, "mean": list(self.mean), "std": list(self.std),
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessingSpec:
        return cls(
            height=int(data["height"]), width=int(data["width"]),
            channels=int(data["channels"]), layout=data["layout"],
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            scale=float(data["scale"]),
        )


def fit_normalisation(images: npt.NDArray[np.uint8]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``images * PIXEL_SCALE`` ([N, H, W, C]), for a training set."""
    channels = range(images.shape[-1])
    mean = tuple(float(images[..., c].mean(dtype=np.float64)) * PIXEL_SCALE for c in channels)
    std = tuple(max(float(images[..., c].std(dtype=np.float64)) * PIXEL_SCALE, 1e-6)
                for c in channels)
    return mean, std


SERVED_FORMATS = ("PNG", "JPEG")
"""What the classification API decodes: the formats callers send, and no more of Pillow's
decoders than that (some, like EPS, would run other programs)."""


def load_image(source: Path | bytes, height: int, width: int,
               color_mode: Literal["L", "RGB"], *, max_pixels: int | None = None,
               formats: tuple[str, ...] | None = None) -> npt.NDArray[np.uint8]:
    """Decode a PNG/JPEG (path or encoded bytes) into uint8 [height, width, channels].

    EXIF orientation is honoured, the image converted to ``color_mode`` (greyscale or RGB) and
    resized, without keeping the aspect ratio, to ``height`` x ``width``. Training and serving
    both decode through here, so a served image is prepared exactly as training images were.
    An image declaring more than ``max_pixels`` pixels is refused before it is decoded (a
    decompression bomb: a few KB of PNG can declare gigabytes of pixels). ``formats`` limits
    the decoders tried (Pillow's names; None: every one Pillow has, for training folders).
    Raises ``ImageDecodeError``.
    """
    name = source if isinstance(source, Path) else f"{len(source)}-byte image"
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source,
                        formats=formats) as opened:
            declared = opened.width * opened.height
            if max_pixels is not None and declared > max_pixels:
                raise ImageTooLargeError(
                    f"{name}: declares {opened.width}x{opened.height} pixels "
                    f"({declared:,}); the limit is {max_pixels:,}")
            return _fit(ImageOps.exif_transpose(opened), height, width, color_mode)
    except ImageDecodeError:
        raise
    except Exception as exc:  # whatever a decoder raises on these bytes, the bytes are at fault
        # Pillow's decoders raise more than OSError and ValueError on malformed files (a TIFF
        # whose strip offsets are floats raises TypeError), and the bytes come from callers.
        raise ImageDecodeError(f"{name}: not a decodable PNG/JPEG image "
                               f"({_decode_failure(exc)})") from exc


def _decode_failure(error: Exception) -> str:
    """Why Pillow could not decode an image, in words for whoever sent it."""
    if isinstance(error, UnidentifiedImageError):
        # PIL's own text names an in-memory object's address: say what it means instead.
        return "unrecognised format"
    if isinstance(error, OSError | ValueError | SyntaxError | Image.DecompressionBombError):
        return str(error)  # Pillow's words for a bad file: "image file is truncated", ...
    return "malformed image data"  # other errors' texts are about Pillow's own code


def fit_pixels(pixels: npt.NDArray[np.uint8], height: int, width: int,
               color_mode: Literal["L", "RGB"]) -> npt.NDArray[np.uint8]:
    """Raw uint8 pixels [h, w, 1 or 3] as ``load_image`` would return them for that image."""
    wanted = 1 if color_mode == "L" else 3
    if pixels.shape == (height, width, wanted):
        return pixels
    mode = "L" if pixels.shape[2] == 1 else "RGB"
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    return _fit(image, height, width, color_mode)


def _fit(image: Image.Image, height: int, width: int,
         color_mode: Literal["L", "RGB"]) -> npt.NDArray[np.uint8]:
    image = image.convert(color_mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(height, width, 1 if color_mode == "L" else 3)


class ImageDecodeError(AxonError, ValueError):
    """Bytes or a file that Pillow cannot decode as an image."""


class ImageTooLargeError(ImageDecodeError):
    """An image whose declared size exceeds the caller's pixel limit."""
