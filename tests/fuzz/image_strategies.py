"""Hypothesis strategies for encoded images: random bytes, bytes behind the magic numbers of
every format Pillow opens, valid files of those formats (whole, cut short, bytes overwritten),
and headers that declare sizes up to 2**32 - 1.

The server is handed bytes, not a declared format, so Pillow guesses one from the first bytes.
"""

from __future__ import annotations

import io

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from tests.support.images import jpeg_declaring, png_declaring, real_images

MAGIC_NUMBERS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\xff\xd8\xff\xc0\x00\x11\x08",
                 b"GIF89a", b"GIF87a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP",
                 b"\x00\x00\x01\x00", b"P5\n", b"P6\n", b"8BPS", b"\x01\xda", b"%!PS-Adobe",
                 b"\x0a\x05\x01\x08", b"DDS ", b"icns", b"\x00\x00\x00\x0cjP  ")
"""PNG, JPEG, GIF, BMP, TIFF, WebP, ICO, PGM, PPM, PSD, SGI, EPS, PCX, DDS, ICNS, JPEG 2000."""
GENERATED = (("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGBA", "PNG"),
             ("I;16", "PNG"), ("L", "JPEG"), ("RGB", "JPEG"), ("CMYK", "JPEG"))
"""Pillow modes and the formats that store them: each decodes to something else than RGB."""

pixels_wide = st.one_of(st.integers(0, 64), st.sampled_from([4096, 4097, 65535, 65536]),
                        st.integers(0, 2**32 - 1))
"""Declared sizes: small, at the pixel limit (4096 x 4096), at JPEG's and past it, anything."""


@st.composite
def generated_images(draw: st.DrawFn) -> bytes:
    """A valid PNG or JPEG of random size and mode."""
    mode, image_format = draw(st.sampled_from(GENERATED))
    height, width = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    picture = Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8), "RGB")
    buffer = io.BytesIO()
    picture.convert(mode).save(buffer, format=image_format)
    return buffer.getvalue()


valid_files = st.one_of(st.sampled_from(real_images()), generated_images())


@st.composite
def truncated_files(draw: st.DrawFn) -> bytes:
    data = draw(valid_files)
    return data[:draw(st.integers(0, len(data) - 1))]


@st.composite
def corrupted_files(draw: st.DrawFn) -> bytes:
    """A valid file with a few bytes overwritten, often in its first 256 bytes: the headers,
    where a decoder learns sizes, offsets and types."""
    data = bytearray(draw(valid_files))
    header = min(len(data), 256)
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.sampled_from([header, len(data)]))
        data[draw(st.integers(0, where - 1))] = draw(st.integers(0, 255))
    return bytes(data)


encoded_images = (
    st.binary(max_size=256),
    st.builds(bytes.__add__, st.sampled_from(MAGIC_NUMBERS), st.binary(max_size=256)),
    valid_files, truncated_files(), corrupted_files(),
    st.builds(png_declaring, pixels_wide, pixels_wide,
              st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255]), st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
              st.binary(max_size=64)),
    st.builds(jpeg_declaring, st.integers(0, 65535), st.integers(0, 65535)))
"""Each kind of encoded image, as a separate strategy so that each is drawn as often."""
