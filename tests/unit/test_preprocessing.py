"""The pixel -> model input definition shared by training and serving."""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pytest
from PIL import Image

from axon.image_formats import SERVED_FORMATS
from axon.preprocessing import (
    ImageDecodeError,
    PreprocessingSpec,
    decode_image,
    fit_normalisation,
    load_image,
    plain_png,
)
from tests.support.images import tiff_with_float_strip_offsets


def test_flat_layout_matches_the_primer_784_inputs() -> None:
    spec = PreprocessingSpec(28, 28, 1, "flat", mean=(0.5,), std=(0.25,))
    images = np.full((3, 28, 28), 255, dtype=np.uint8)
    images[1] = 0
    out = spec.apply(images)
    assert out.shape == (3, 784) and out.dtype == np.float32
    assert spec.input_shape == (784,)
    np.testing.assert_allclose(out[0], 2.0)
    np.testing.assert_allclose(out[1], -2.0)


def test_nchw_layout_normalises_per_channel() -> None:
    spec = PreprocessingSpec(2, 3, 3, "nchw", mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 2.0))
    images = np.full((1, 2, 3, 3), 255, dtype=np.uint8)
    out = spec.apply(images)
    assert out.shape == (1, 3, 2, 3)
    np.testing.assert_allclose(out[0, :, 0, 0], [1.0, 1.0, 0.0])


def test_wrong_image_shape_is_explained() -> None:
    spec = PreprocessingSpec(28, 28, 1, "flat", mean=(0.0,), std=(1.0,))
    with pytest.raises(ValueError,
                       match=r"expected images of shape \[N, 28, 28, 1\], got \[2, 27, 28, 1\]"):
        spec.apply(np.zeros((2, 27, 28, 1), np.uint8))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"channels": 2}, "channels must be 1"),
    ({"layout": "nhwc"}, "layout must be"),
    ({"std": (0.0,)}, "std values must be positive"),
    ({"mean": (0.1, 0.2)}, "one value per channel"),
])
def test_invalid_specs_are_rejected(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"height": 4, "width": 4, "channels": 1, "layout": "flat",
                               "mean": (0.0,), "std": (1.0,)}
    with pytest.raises(ValueError, match=message):
        PreprocessingSpec(**{**base, **kwargs})  # type: ignore[arg-type]


def test_dict_round_trip() -> None:
    spec = PreprocessingSpec(32, 32, 3, "nchw", mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert PreprocessingSpec.from_dict(spec.to_dict()) == spec


def test_fit_normalisation_per_channel() -> None:
    images = np.zeros((2, 1, 2, 3), np.uint8)
    images[..., 0] = 255
    images[0, ..., 1] = 255
    mean, std = fit_normalisation(images)
    np.testing.assert_allclose(mean, [1.0, 0.5, 0.0])
    np.testing.assert_allclose(std, [1e-6, 0.5, 1e-6])


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_load_image_converts_and_resizes_png_and_jpeg() -> None:
    colour = Image.new("RGB", (40, 20), (255, 0, 0))
    grey = load_image(_encoded(colour, "PNG"), 28, 28, "L")
    assert grey.shape == (28, 28, 1) and grey.dtype == np.uint8
    assert int(grey[0, 0, 0]) == 76  # ITU-R 601-2 luma of pure red
    rgb = load_image(_encoded(colour, "JPEG"), 8, 16, "RGB")
    assert rgb.shape == (8, 16, 3)
    assert rgb[..., 0].min() > 240 and rgb[..., 1].max() < 15


def test_undecodable_bytes_raise_a_decode_error() -> None:
    with pytest.raises(ImageDecodeError, match="9-byte image: not a decodable PNG/JPEG"):
        load_image(b"not a png", 28, 28, "L")


def test_a_file_that_makes_pillow_raise_something_unusual_is_a_decode_error() -> None:
    # Pillow raises TypeError for this TIFF, not the OSError or ValueError of a bad file.
    with pytest.raises(ImageDecodeError, match="not a decodable PNG/JPEG image "
                                               r"\(malformed image data\)"):
        load_image(tiff_with_float_strip_offsets(), 28, 28, "L")


def test_served_images_are_png_or_jpeg_only() -> None:
    """Training folders may hold any format Pillow reads; the server decodes PNG and JPEG
    only, so no other of Pillow's decoders ever sees a caller's bytes."""
    bmp = _encoded(Image.new("L", (28, 28), 9), "BMP")
    assert load_image(bmp, 28, 28, "L").shape == (28, 28, 1)
    with pytest.raises(ImageDecodeError, match=r"not a decodable PNG/JPEG image \(unrecognised "
                                               r"format\)"):
        load_image(bmp, 28, 28, "L", formats=SERVED_FORMATS)
    png = _encoded(Image.new("L", (28, 28), 9), "PNG")
    assert load_image(png, 28, 28, "L", formats=SERVED_FORMATS).shape == (28, 28, 1)


def encoded(image: Image.Image, format: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _noise(mode: str, size: tuple[int, int] = (28, 28)) -> Image.Image:
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    pixels = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    return Image.fromarray(pixels, mode)


def _rotated_png() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return encoded(_noise("L"), exif=exif.tobytes())


DECODE_CASES: dict[str, tuple[Callable[[], bytes], Literal["L", "RGB"], bool]] = {
    # name: (file, model colour mode, decoded by libspng's fast path)
    "grey PNG at the model's size": (lambda: encoded(_noise("L")), "L", True),
    "RGB PNG at the model's size": (lambda: encoded(_noise("RGB")), "RGB", True),
    "grey PNG for an RGB model": (lambda: encoded(_noise("L")), "RGB", False),
    "RGB PNG for a grey model": (lambda: encoded(_noise("RGB")), "L", False),
    "grey PNG of another size": (lambda: encoded(_noise("L", (32, 20))), "L", False),
    "16-bit grey PNG": (lambda: encoded(_noise("L").convert("I;16")), "L", False),
    "palette PNG": (lambda: encoded(_noise("RGB").convert("P")), "L", False),
    "grey PNG with transparency": (lambda: encoded(_noise("L"), transparency=0), "L", False),
    "PNG with EXIF orientation": (_rotated_png, "L", False),
    "JPEG": (lambda: encoded(_noise("L"), "JPEG"), "L", False),
}


@pytest.mark.parametrize("case", DECODE_CASES.values(), ids=DECODE_CASES.keys())
def test_the_servers_decoder_gives_exactly_what_training_decodes(
        case: tuple[Callable[[], bytes], Literal["L", "RGB"], bool]) -> None:
    """decode_image takes libspng's fast path only for PNGs that are already what the model
    takes, and gives the same pixels as load_image (training's decoder) for every file."""
    make, mode, fast = case
    data = make()
    assert plain_png(data, 28, 28, mode) is fast
    served = decode_image(data, 28, 28, mode, max_pixels=10**6)
    trained = load_image(data, 28, 28, mode)
    assert served.dtype == np.uint8 and served.shape == trained.shape
    assert np.array_equal(served, trained)


def _with_idat(data: bytes, change: Callable[[bytearray], None]) -> bytes:
    """``data`` (signature, IHDR, one IDAT, IEND) with its IDAT body changed and the CRC made
    right again: damage that only the compressed stream shows."""
    ihdr_end = 8 + 8 + 13 + 4
    length = int.from_bytes(data[ihdr_end:ihdr_end + 4])
    body = bytearray(data[ihdr_end + 8:ihdr_end + 8 + length])
    change(body)
    chunk = b"IDAT" + bytes(body)
    return data[:ihdr_end] + len(body).to_bytes(4) + chunk + \
        zlib.crc32(chunk).to_bytes(4) + data[ihdr_end + 12 + length:]


DAMAGED: dict[str, Callable[[bytes], bytes]] = {
    "zeros after the header": lambda data: data[:60] + bytes(len(data) - 60),
    "a flipped byte inside the stream": lambda data: _with_idat(
        data, lambda body: body.__setitem__(100, body[100] ^ 0xFF)),
    "a wrong Adler-32": lambda data: _with_idat(
        data, lambda body: body.__setitem__(len(body) - 1, body[-1] ^ 0xFF)),
    "no IEND": lambda data: data[:-12],
    "trailing bytes": lambda data: data + b"junk",
}


@pytest.mark.parametrize("damage", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_png_takes_pillows_path_and_gets_its_verdict(
        damage: Callable[[bytes], bytes]) -> None:
    """libspng, as pyspng drives it, decodes some damaged files into garbage (it skips the
    stream's checksum): plain_png must send every damaged file to Pillow, whose verdict -- an
    error, or the pixels it recovers -- is what training would have seen."""
    data = damage(encoded(_noise("L")))
    assert not plain_png(data, 28, 28, "L")
    try:
        trained = load_image(data, 28, 28, "L")
    except ImageDecodeError as error:
        with pytest.raises(ImageDecodeError) as served:
            decode_image(data, 28, 28, "L", max_pixels=10**6)
        assert str(served.value) == str(error)
    else:
        assert np.array_equal(decode_image(data, 28, 28, "L", max_pixels=10**6), trained)


def _padded_with_empty_idats(data: bytes, count: int) -> bytes:
    """``data`` (signature, IHDR, one IDAT, IEND) with ``count`` empty IDAT chunks after its
    IDAT: still a valid PNG of the same pixels, ``12 * count`` bytes longer."""
    empty = (0).to_bytes(4) + b"IDAT" + zlib.crc32(b"IDAT").to_bytes(4)
    return data[:-12] + empty * count + data[-12:]


@pytest.mark.parametrize("count", [100, 400_000], ids=["many chunks", "a 4.8 MB file"])
def test_a_png_padded_far_beyond_its_pixels_is_left_to_pillow(count: int) -> None:
    """Checking a file chunk by chunk in Python costs about 0.1 s per MB, on the server's
    event loop: a PNG much larger than its pixels, or of many more chunks than they need, is
    not taken as plain (Pillow decodes it on a decoder thread), and its pixels are the same."""
    plain = encoded(_noise("L"))
    assert plain_png(plain, 28, 28, "L")
    padded = _padded_with_empty_idats(plain, count)
    assert not plain_png(padded, 28, 28, "L")
    assert np.array_equal(decode_image(padded, 28, 28, "L", max_pixels=10**6),
                          load_image(plain, 28, 28, "L"))


def test_a_png_with_a_colour_profile_and_split_idats_is_still_plain() -> None:
    """The bounds leave room for what encoders write: a colour profile, IDAT split in 8 KB
    chunks (as libpng does) on a larger image."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = _noise("RGB", (224, 224))
    data = encoded(image, icc_profile=profile)
    ihdr_end = 8 + 8 + 13 + 4
    chunks, position = [], ihdr_end
    while position < len(data) - 12:
        length = int.from_bytes(data[position:position + 4])
        chunks.append(data[position:position + 12 + length])
        position += 12 + length
    idat = b"".join(c[8:-4] for c in chunks if c[4:8] == b"IDAT")
    split = [idat[i:i + 8192] for i in range(0, len(idat), 8192)]
    resplit = data[:ihdr_end] + b"".join(c for c in chunks if c[4:8] != b"IDAT") + b"".join(
        len(piece).to_bytes(4) + b"IDAT" + piece + zlib.crc32(b"IDAT" + piece).to_bytes(4)
        for piece in split) + data[-12:]
    assert len(split) > 10
    assert plain_png(resplit, 224, 224, "RGB")
    assert np.array_equal(decode_image(resplit, 224, 224, "RGB", max_pixels=10**6),
                          load_image(data, 224, 224, "RGB"))


def test_a_16_bit_grey_png_keeps_its_greys_rather_than_clipping_them_to_white() -> None:
    """Pillow's own conversion of 16-bit greys clips at 255: a mid grey (32768) would come out
    white and the image be classified as something else, silently. Each pixel keeps its high
    byte, as Pillow does for 16-bit RGB."""
    wide = (np.arange(28 * 28, dtype=np.uint32) * 83 % 65536).astype(np.uint16).reshape(28, 28)
    data = encoded(Image.fromarray(wide))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    expected = (wide >> 8).astype(np.uint8)
    for decoded in (load_image(data, 28, 28, "L"),
                    decode_image(data, 28, 28, "L", max_pixels=10**6)):
        assert np.array_equal(decoded[..., 0], expected)
    rgb = load_image(data, 28, 28, "RGB")
    assert np.array_equal(rgb, np.repeat(expected[..., None], 3, axis=2))
