"""An image-folder data set: ``root/<class>/*.png|jpg``, e.g. ``cats/`` and ``dogs/``.

Classes are the sub-folder names, sorted. If ``root`` has ``train/`` and ``test/`` sub-folders with
the same classes, those are the splits; otherwise a seeded, per-class share is held out for test.
Files that cannot be decoded are skipped with a warning naming each one; nothing fails silently.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from axon.errors import AxonError
from axon.image_formats import IMAGE_SUFFIXES
from axon.preprocessing import ImageDecodeError, load_image
from axon.training.datasets import DatasetSpec, ImageDataset, Split

log = logging.getLogger(__name__)



class ImageFolderError(AxonError, ValueError):
    """The folder does not describe a usable classification data set."""


def scan_classes(root: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (sorted), for every sub-folder of ``root``."""
    if not root.is_dir():
        raise ImageFolderError(f"{root}: not a folder")
    classes = {
        folder.name: sorted(p for p in folder.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for folder in sorted(root.iterdir())
        if folder.is_dir() and not folder.name.startswith(".")
    }
    if len(classes) < 2:
        raise ImageFolderError(f"{root}: found {len(classes)} class folder(s); "
                               "a classifier needs at least two (e.g. cats/ and dogs/)")
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise ImageFolderError(f"{root}: no PNG/JPEG images in class folder(s) {empty}")
    return classes


def load_image_folder(root: Path, spec: DatasetSpec) -> ImageDataset:
    """Load and split an image folder, resizing every image to ``spec.image_size`` squared."""
    train_root, test_root = root / "train", root / "test"
    if train_root.is_dir() and test_root.is_dir():
        train_files, test_files = scan_classes(train_root), scan_classes(test_root)
        if list(train_files) != list(test_files):
            raise ImageFolderError(f"{root}: train/ has classes {list(train_files)} but test/ "
                                   f"has {list(test_files)}")
    else:
        train_files, test_files = _split(scan_classes(root), spec.test_fraction, spec.seed)
    return ImageDataset(
        name=f"image-folder:{root.name}",
        class_names=tuple(train_files),
        train=_decode(train_files, spec, "train"),
        test=_decode(test_files, spec, "test"),
        layout="nchw",
    )


def _split(classes: dict[str, list[Path]], test_fraction: float,
           seed: int) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    if not 0.0 < test_fraction < 1.0:
        raise ImageFolderError(f"test fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    train: dict[str, list[Path]] = {}
    test: dict[str, list[Path]] = {}
    for name, files in classes.items():
        if len(files) < 2:
            raise ImageFolderError(f"class {name!r} has {len(files)} image; at least two are "
                                   "needed to hold one out for testing")
        order = rng.permutation(len(files))
        held_out = min(len(files) - 1, max(1, round(test_fraction * len(files))))
        test[name] = [files[i] for i in order[:held_out]]
        train[name] = [files[i] for i in order[held_out:]]
    return train, test


def _decode(classes: dict[str, list[Path]], spec: DatasetSpec, split: str) -> Split:
    images, labels, skipped = [], [], []
    total = sum(len(files) for files in classes.values())
    with tqdm(total=total, desc=f"decoding {split} images", unit="img", disable=None) as bar:
        for index, files in enumerate(classes.values()):
            for path in files:
                try:
                    images.append(load_image(path, spec.image_size, spec.image_size,
                                             spec.color_mode))
                    labels.append(index)
                except ImageDecodeError as exc:
                    log.warning("skipping %s", exc)
                    skipped.append(path)
                bar.update()
    if skipped:
        log.warning("%d of %d %s images could not be decoded and were skipped",
                    len(skipped), total, split)
    if not images:
        raise ImageFolderError(f"no decodable images in the {split} split")
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64))
