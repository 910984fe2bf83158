"""Pixels to model input: the one definition shared by training and serving.

A model is trained on ``PreprocessingSpec.apply(images)`` and the spec is embedded in the exported
model, so the server can turn a decoded image into exactly the tensor the model was trained on.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyspng
from PIL import Image, ImageOps, UnidentifiedImageError

from axon.errors import AxonError
from axon.image_formats import SERVED_FORMATS

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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_HEAD = struct.Struct(">I4s")
_IHDR = struct.Struct(">IIBBBBB")
_PNG_COLOUR_TYPES = {"L": 0, "RGB": 2}
_PLAIN_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"gAMA", b"cHRM", b"sRGB", b"iCCP",
                           b"pHYs", b"sBIT", b"tIME", b"bKGD"})
"""Chunks that do not change the pixels Pillow gives for an 8-bit greyscale or RGB PNG (Pillow
reads them into ``info`` only). Any other -- transparency, EXIF orientation, text that may
carry EXIF, anything unknown -- sends the file through Pillow."""

_PLAIN_PNG_SLACK = 16 * 1024
"""Bytes a plain PNG may hold beyond its pixels' (plus 1/64 of them, zlib's worst case and
then some): chunk heads, a colour profile (``iCCP``, usually 0.5-3 KB)."""
_PLAIN_PNG_CHUNKS = 64
"""Chunks a plain PNG may have, plus one per 4 KB of pixels (encoders split ``IDAT`` at 8 KB
or more)."""


def decode_image(data: bytes, height: int, width: int, color_mode: Literal["L", "RGB"], *,
                 max_pixels: int) -> npt.NDArray[np.uint8]:
    """``load_image`` for the formats the server decodes (PNG, JPEG), faster where it can be.

    A PNG that already is what the model takes (``plain_png``) is unfiltered by libspng
    (pyspng): one C call, a sixth of Pillow's time per image, and the same pixels -- PNG is
    lossless, and ``plain_png`` has checked every chunk's CRC and the compressed stream, which
    libspng as pyspng drives it does not. Everything else goes through Pillow, as
    ``load_image`` does.
    """
    if plain_png(data, height, width, color_mode):
        try:
            pixels: npt.NDArray[np.uint8] = pyspng.load(data, color_mode)
        except Exception:  # Pillow gives the verdict on bytes libspng refuses
            pass
        else:
            if pixels.dtype == np.uint8 and pixels.shape[:2] == (height, width):
                return pixels.reshape(height, width, 1 if color_mode == "L" else 3)
    return load_image(data, height, width, color_mode, max_pixels=max_pixels,
                      formats=SERVED_FORMATS)


def plain_png(data: bytes, height: int, width: int, color_mode: Literal["L", "RGB"]) -> bool:
    """Whether ``data`` is a whole, intact PNG that is already what the model takes: 8-bit,
    its colour mode and size, not interlaced, only chunks that leave the pixels alone, every
    CRC right, and one zlib stream holding exactly the image's bytes.

    Checked in Python chunk by chunk, often on the server's event loop: a file much larger than
    the image it holds (padded with empty chunks or stored blocks, say) is left to Pillow, so
    that what this costs stays bounded by the image's own size."""
    channels = 1 if color_mode == "L" else 3
    raw_bytes = height * (1 + width * channels)
    if len(data) > raw_bytes + raw_bytes // 64 + _PLAIN_PNG_SLACK \
            or not data.startswith(_PNG_SIGNATURE):
        return False
    chunks_left = _PLAIN_PNG_CHUNKS + raw_bytes // 4096
    position, compressed, seen_end = len(_PNG_SIGNATURE), [], False
    while position + _CHUNK_HEAD.size <= len(data) and not seen_end:
        length, kind = _CHUNK_HEAD.unpack_from(data, position)
        body_start = position + _CHUNK_HEAD.size
        body_end = body_start + length
        chunks_left -= 1
        if body_end + 4 > len(data) or kind not in _PLAIN_CHUNKS or not chunks_left:
            return False
        if zlib.crc32(data[position + 4:body_end]) != int.from_bytes(data[body_end:body_end + 4]):
            return False
        if position == len(_PNG_SIGNATURE):
            if kind != b"IHDR" or length != _IHDR.size:
                return False
            png_width, png_height, depth, colour, _, _, interlace = _IHDR.unpack_from(
                data, body_start)
            if (png_width, png_height, depth, colour, interlace) != (
                    width, height, 8, _PNG_COLOUR_TYPES[color_mode], 0):
                return False
        elif kind == b"IDAT":
            compressed.append(data[body_start:body_end])
        seen_end = kind == b"IEND"
        position = body_end + 4
    if not seen_end or position != len(data) or not compressed:
        return False
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(b"".join(compressed), raw_bytes + 1)
    except zlib.error:
        return False
    return inflater.eof and not inflater.unused_data and len(raw) == raw_bytes


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
    if image.mode.startswith("I;16"):
        # Pillow's convert clips 16-bit greys at 255 (a mid grey, 32768, would come out white):
        # keep the high byte instead, as Pillow itself does for 16-bit RGB.
        image = Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8), "L")
    image = image.convert(color_mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(height, width, 1 if color_mode == "L" else 3)


class ImageDecodeError(AxonError, ValueError):
    """Bytes or a file that Pillow cannot decode as an image."""


class ImageTooLargeError(ImageDecodeError):
    """An image whose declared size exceeds the caller's pixel limit."""
