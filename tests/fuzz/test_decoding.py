"""Fuzzing the image decoder on its own, with no server in the way: thousands of hostile files
a second, where the Classify fuzzing tries a few hundred.

Property: ``load_image`` returns pixels of the asked size or raises ``ImageDecodeError`` (which
the server answers INVALID_ARGUMENT); anything else would reach a caller as INTERNAL.
"""

from __future__ import annotations

import warnings
from typing import Literal

from hypothesis import example, given
from hypothesis import strategies as st

from axon.preprocessing import ImageDecodeError, load_image
from tests.fuzz.image_strategies import corrupted_files, encoded_images
from tests.fuzz.properties import fuzz_settings
from tests.support.images import tiff_with_float_strip_offsets

MAX_PIXELS = 4096 * 4096
"""The server's default --max-image-pixels."""


@fuzz_settings(share=5)
@given(data=st.one_of(corrupted_files(), *encoded_images),
       mode=st.sampled_from(["L", "RGB"]))
# Found by this test: Pillow raised TypeError, and the server answered INTERNAL.
@example(data=tiff_with_float_strip_offsets(), mode="L")
def test_decoding_hostile_bytes_gives_pixels_or_a_decode_error(
        data: bytes, mode: Literal["L", "RGB"]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns of odd files; the server logs nothing
        try:
            pixels = load_image(data, 16, 12, mode, max_pixels=MAX_PIXELS)
        except ImageDecodeError:
            return
    assert pixels.shape == (16, 12, 1 if mode == "L" else 3)
