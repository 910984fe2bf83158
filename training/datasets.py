"""Data sets as uint8 image arrays with integer labels, ready for ``PreprocessingSpec``.

Three kinds: ``mnist`` and ``fashion-mnist`` (IDX files, flat 784-value input, as the primer's
digit net expects) and ``image-folder`` (one sub-folder per class, [C, H, W] input).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from axon.preprocessing import InputLayout
from axon.training import fetch
from axon.training.idx import IdxFormatError, read_idx_images, read_idx_labels

DatasetKind = Literal["mnist", "fashion-mnist", "image-folder"]
DATASET_KINDS: tuple[DatasetKind, ...] = ("mnist", "fashion-mnist", "image-folder")


@dataclass(frozen=True)
class DatasetSpec:
    """Which data set to load and how; stored in checkpoints so export can reload it."""

    kind: DatasetKind
    data_dir: str | None = None
    """IDX sets: folder of the four files (None: the cache folder). Image folders: the root."""
    image_size: int = 32
    """Image folders: images are resized to image_size x image_size pixels."""
    color_mode: Literal["L", "RGB"] = "L"
    """Image folders: greyscale (L) or RGB input."""
    test_fraction: float = 0.2
    """Image folders without train/ and test/ sub-folders: share of each class held out."""
    seed: int = 0
    """Image folders: seed of the train/test split."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        return cls(**data)


@dataclass(frozen=True)
class Split:
    """Images uint8 [N, H, W, C] and their class indices int64 [N]."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise ValueError(f"images {self.images.shape} and labels {self.labels.shape} "
                             "do not describe the same [N, H, W, C] samples")

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, count: int | None) -> Split:
        """The first ``count`` samples (all when ``count`` is None)."""
        return self if count is None else Split(self.images[:count], self.labels[:count])


@dataclass(frozen=True)
class ImageDataset:
    """A named train/test pair of splits with class names and the input layout it implies."""

    name: str
    class_names: tuple[str, ...]
    train: Split
    test: Split
    layout: InputLayout


def load_dataset(spec: DatasetSpec) -> ImageDataset:
    """Load (fetching if needed) the data set ``spec`` describes."""
    if spec.kind == "image-folder":
        from axon.training.image_folder import load_image_folder

        if spec.data_dir is None:
            raise ValueError("an image-folder data set needs its root folder (--data-dir)")
        return load_image_folder(Path(spec.data_dir), spec)
    info = fetch.DATASETS[spec.kind]
    directory = fetch.obtain(info, Path(spec.data_dir) if spec.data_dir else None)
    return load_idx_dataset(info, directory)


def load_idx_dataset(info: fetch.IdxDatasetInfo, directory: Path) -> ImageDataset:
    """Read the four IDX files of ``info`` from ``directory`` and check they agree."""
    splits = []
    for images_entry, labels_entry in ((info.train_images, info.train_labels),
                                       (info.test_images, info.test_labels)):
        images_path = fetch.locate(directory, images_entry)
        labels_path = fetch.locate(directory, labels_entry)
        if images_path is None or labels_path is None:
            raise FileNotFoundError(f"{directory}: missing {images_entry.filename} or "
                                    f"{labels_entry.filename}")
        images = read_idx_images(images_path)
        labels = read_idx_labels(labels_path)
        if len(images) != len(labels):
            raise IdxFormatError(f"{images_path} holds {len(images)} images but {labels_path} "
                                 f"holds {len(labels)} labels")
        if labels.max(initial=0) >= len(info.class_names):
            raise IdxFormatError(f"{labels_path}: label {labels.max()} out of range for "
                                 f"{len(info.class_names)} classes")
        splits.append(Split(images[..., np.newaxis], labels.astype(np.int64)))
    return ImageDataset(info.name, info.class_names, splits[0], splits[1], layout="flat")
