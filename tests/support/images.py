"""Image files for hostile-input tests: real ones in several formats, and crafted ones whose
headers lie (a few bytes declaring gigapixels)."""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[2] / "clients" / "samples"
_JPEG_START_OF_FRAME = b"\xff\xc0"
_EXIF_ORIENTATION = 0x0112
_TIFF_STRIP_OFFSETS, _TIFF_FLOAT = 273, 11


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with a correct CRC, so a decoder believes it."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, bit_depth: int = 8, colour_type: int = 0,
                  idat: bytes = b"\x00" * 64) -> bytes:
    """A tiny PNG whose valid header claims ``width`` x ``height`` pixels (up to 2**32 - 1
    each): a decompression bomb as far as the header goes."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + \
        png_chunk(b"IDAT", zlib.compress(idat)) + png_chunk(b"IEND", b"")


def encoded(image: Image.Image, image_format: str) -> bytes:
    return _saved(image, image_format)


def real_png() -> bytes:
    return encoded(Image.fromarray(np.zeros((28, 28), np.uint8)), "PNG")


@cache
def real_jpeg() -> bytes:
    """A 28x28 RGB JPEG with some structure (so its entropy-coded data is not trivial)."""
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    return encoded(Image.fromarray(pixels, "RGB"), "JPEG")


def jpeg_declaring(width: int, height: int) -> bytes:
    """``real_jpeg`` with its frame header claiming ``width`` x ``height`` (up to 65535)."""
    data = bytearray(real_jpeg())
    frame = data.index(_JPEG_START_OF_FRAME)
    # Marker (2), segment length (2), sample precision (1), then height and width.
    data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def tiff_with_float_strip_offsets() -> bytes:
    """A valid little-endian TIFF whose StripOffsets entry is retyped from LONG to FLOAT: Pillow
    then seeks to a float and raises TypeError, not the OSError or ValueError of a bad file."""
    data = bytearray(_saved(Image.open(io.BytesIO(real_jpeg())).convert("RGB"), "TIFF"))
    directory = struct.unpack_from("<I", data, 4)[0]
    for entry in range(struct.unpack_from("<H", data, directory)[0]):
        at = directory + 2 + 12 * entry
        if struct.unpack_from("<H", data, at)[0] == _TIFF_STRIP_OFFSETS:
            struct.pack_into("<H", data, at + 2, _TIFF_FLOAT)
            return bytes(data)
    raise AssertionError("Pillow wrote a TIFF without strip offsets")


@cache
def real_images() -> tuple[bytes, ...]:
    """Valid files Pillow decodes: the client's sample PNGs, a JPEG, and the other formats
    Pillow would open if handed them (the server is sent bytes, not a declared format)."""
    samples = tuple(path.read_bytes() for path in sorted(SAMPLES.glob("*.png")))
    picture = Image.open(io.BytesIO(real_jpeg())).convert("RGB")
    others = tuple(encoded(picture, image_format) for image_format in
                   ("GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM", "TGA"))
    # Rotated by EXIF, which the server honours: corrupting these reaches the EXIF parser.
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = 6
    tall = picture.crop((0, 0, 20, 28))
    rotated = tuple(_saved(tall, image_format, exif=exif.tobytes())
                    for image_format in ("JPEG", "PNG", "WEBP"))
    return (*samples, real_jpeg(), encoded(picture.convert("L"), "JPEG"),
            encoded(picture.convert("RGBA"), "PNG"), encoded(picture.convert("P"), "PNG"),
            encoded(picture.convert("I;16"), "PNG"), *others, *rotated,
            _saved(picture, "TIFF", compression="tiff_lzw"),
            _saved(picture, "JPEG", progressive=True))


def _saved(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()
