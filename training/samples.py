"""Test-set images written out as PNG files: real pictures for a new user to classify."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from axon.training.datasets import ImageDataset


def slug(label: str) -> str:
    """``label`` as a file-name part: ``T-shirt/top`` -> ``t-shirt-top``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "class"


def export_samples(dataset: ImageDataset, folder: Path, count: int) -> list[Path]:
    """The first ``count`` test images as ``<label>-test<index>.png`` in ``folder``.

    Written losslessly (PNG) at their own size, so each file decodes to the data set's pixels.
    Existing files of the same name are replaced; others in ``folder`` are left alone.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    folder.mkdir(parents=True, exist_ok=True)
    test = dataset.test
    written = []
    for index in range(min(count, len(test))):
        label = dataset.class_names[int(test.labels[index])]
        pixels = test.images[index]
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        path = folder / f"{slug(label)}-test{index:05d}.png"
        image.save(path, format="PNG")
        written.append(path)
    return written
