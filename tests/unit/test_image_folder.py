"""The image-folder data set (cats/, dogs/ ...) on folders the tests generate."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from axon.training.datasets import DatasetSpec, load_dataset
from axon.training.image_folder import ImageFolderError
from tests.conftest import make_image_folder


def test_classes_split_and_shapes(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets", per_class=10)
    dataset = load_dataset(DatasetSpec("image-folder", str(root), image_size=16,
                                       color_mode="RGB", test_fraction=0.2))
    assert dataset.class_names == ("cats", "dogs")
    assert dataset.layout == "nchw"
    assert dataset.train.images.shape == (16, 16, 16, 3)
    assert dataset.test.images.shape == (4, 16, 16, 3)
    assert np.bincount(dataset.test.labels).tolist() == [2, 2]  # stratified per class
    assert np.bincount(dataset.train.labels).tolist() == [8, 8]


def test_split_is_seeded(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets", per_class=10)

    def test_images(seed: int) -> np.ndarray:
        return load_dataset(DatasetSpec("image-folder", str(root), 8, seed=seed)).test.images

    np.testing.assert_array_equal(test_images(3), test_images(3))
    assert not np.array_equal(test_images(3), test_images(4))


def test_greyscale_mode(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets", per_class=4)
    dataset = load_dataset(DatasetSpec("image-folder", str(root), image_size=12))
    assert dataset.train.images.shape[1:] == (12, 12, 1)


def test_explicit_train_and_test_folders(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "pets" / "train", per_class=6)
    make_image_folder(tmp_path / "pets" / "test", per_class=3, seed=1)
    dataset = load_dataset(DatasetSpec("image-folder", str(tmp_path / "pets"), 8))
    assert (len(dataset.train), len(dataset.test)) == (12, 6)


def test_undecodable_files_are_skipped_and_named(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    root = make_image_folder(tmp_path / "pets", per_class=6)
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "cats" / "notes.txt").write_text("not an image, not even looked at")
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(DatasetSpec("image-folder", str(root), 8))
    assert len(dataset.train) + len(dataset.test) == 12
    assert "broken.png" in caplog.text
    assert "1 of " in caplog.text


def test_one_class_is_not_a_classifier(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets", per_class=4)
    shutil.rmtree(root / "dogs")
    with pytest.raises(ImageFolderError, match="found 1 class folder"):
        load_dataset(DatasetSpec("image-folder", str(root)))


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets", per_class=4)
    (root / "birds").mkdir()
    with pytest.raises(ImageFolderError,
                       match=r"no PNG/JPEG images in class folder\(s\) \['birds'\]"):
        load_dataset(DatasetSpec("image-folder", str(root)))


def test_mismatched_train_test_classes(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "pets" / "train", per_class=2)
    make_image_folder(tmp_path / "pets" / "test", per_class=2)
    shutil.move(tmp_path / "pets" / "test" / "dogs", tmp_path / "pets" / "test" / "wolves")
    with pytest.raises(ImageFolderError, match="train/ has classes"):
        load_dataset(DatasetSpec("image-folder", str(tmp_path / "pets")))


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ImageFolderError, match="not a folder"):
        load_dataset(DatasetSpec("image-folder", str(tmp_path / "absent")))
