"""IDX parsing: good files (raw and gzipped), bad magic numbers, truncated and trailing data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from axon.training import fetch
from axon.training.idx import (
    IdxFormatError,
    encode_idx,
    parse_idx,
    read_idx_images,
    read_idx_labels,
    write_idx,
)


def _images(count: int = 5) -> np.ndarray:
    return np.arange(count * 4 * 3, dtype=np.uint8).reshape(count, 4, 3)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_round_trip_images_and_labels(tmp_path: Path, suffix: str) -> None:
    images, labels = _images(), np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / f"images{suffix}", images)
    write_idx(tmp_path / f"labels{suffix}", labels)
    np.testing.assert_array_equal(read_idx_images(tmp_path / f"images{suffix}"), images)
    np.testing.assert_array_equal(read_idx_labels(tmp_path / f"labels{suffix}"), labels)


def test_header_is_the_documented_big_endian_layout() -> None:
    data = encode_idx(_images(2))
    assert struct.unpack(">IIII", data[:16]) == (2051, 2, 4, 3)
    assert struct.unpack(">II", encode_idx(np.zeros(7, np.uint8))[:8]) == (2049, 7)


def test_other_element_types_parse_big_endian() -> None:
    values = np.array([[1.5, -2.0], [3.25, 1e6]], dtype=np.float32)
    parsed = parse_idx(encode_idx(values), "floats")
    assert parsed.dtype == np.float32
    np.testing.assert_array_equal(parsed, values)


def test_bad_magic_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "not-idx.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(IdxFormatError, match=r"not-idx\.bin: bad magic number 0x89504e47"):
        read_idx_images(path)


def test_labels_file_is_not_accepted_as_images(tmp_path: Path) -> None:
    path = tmp_path / "labels.idx"
    write_idx(path, np.zeros(10, np.uint8))
    with pytest.raises(IdxFormatError, match=r"labels\.idx: bad magic number 2049.*expected 2051"):
        read_idx_images(path)


def test_truncated_data_says_how_much_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "short-images"
    path.write_bytes(encode_idx(_images(5))[:-7])
    with pytest.raises(IdxFormatError,
                       match=r"short-images: truncated data: header promises shape \[5, 4, 3\] "
                             r"\(60 bytes\), file has 53"):
        read_idx_images(path)


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "stub"
    path.write_bytes(encode_idx(_images())[:9])
    with pytest.raises(IdxFormatError, match="stub: truncated header"):
        read_idx_images(path)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(encode_idx(_images(50)))[:-20])
    with pytest.raises(IdxFormatError, match=r"cut\.gz: corrupt or truncated gzip"):
        read_idx_images(path)


def test_trailing_bytes_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "long"
    path.write_bytes(encode_idx(_images()) + b"junk")
    with pytest.raises(IdxFormatError, match="long: 4 unexpected trailing bytes"):
        read_idx_images(path)


def test_missing_file_is_an_idx_error(tmp_path: Path) -> None:
    with pytest.raises(IdxFormatError, match=r"nowhere\.gz: cannot read"):
        read_idx_labels(tmp_path / "nowhere.gz")


def test_real_mnist_files(mnist_dir: Path) -> None:
    train = read_idx_images(mnist_dir / "train-images-idx3-ubyte.gz")
    labels = read_idx_labels(mnist_dir / "train-labels-idx1-ubyte.gz")
    test = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")
    assert train.shape == (60_000, 28, 28) and test.shape == (10_000, 28, 28)
    assert train.dtype == np.uint8 and train.max() == 255 and train.min() == 0
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                            5851, 5949]
    for entry in fetch.MNIST.files:
        path = fetch.locate(mnist_dir, entry)
        assert path is not None
        fetch.verify_file(path, entry)
