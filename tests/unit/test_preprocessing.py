"""The pixel -> model input definition shared by training and serving."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from axon.preprocessing import (
    SERVED_FORMATS,
    ImageDecodeError,
    PreprocessingSpec,
    fit_normalisation,
    load_image,
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
