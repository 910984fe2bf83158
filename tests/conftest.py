"""Shared fixtures: the real MNIST files, short real training runs, generated image folders,
a model repository and a real server built from them.

No fixture here imports the generated ``inference`` stubs: tests/interop imports tritonclient's
copy of the same protocol, and one process cannot hold both (see tests/interop/conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from axon.client.server_process import ServerProcess, running_server
from axon.training import fetch
from axon.training.datasets import DatasetSpec, ImageDataset, load_idx_dataset
from axon.training.train import Hyperparameters, TrainConfig, TrainResult, train
from tests.support.repositories import STARTUP_MODELS, build_serving_repository

# The servers tests start are one process unless a test asks for more (--workers): most tests
# hold requests on one server's event loop (tests/support/stall_model.py) or read one process's
# counters. Worker groups have their own tests (tests/integration/test_workers.py), and the
# default ("auto") is tested there too.
os.environ.setdefault("AXON_WORKERS", "1")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST files: $MNIST_DIR (CI: ../shared/data/mnist), else fetched into the cache."""
    explicit = os.environ.get("MNIST_DIR")
    return fetch.obtain(fetch.MNIST, Path(explicit) if explicit else None)


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> ImageDataset:
    return load_idx_dataset(fetch.MNIST, mnist_dir)


def quick_config(mnist_dir: Path, *, epochs: int = 2, train_limit: int = 12_000,
                 seed: int = 0) -> TrainConfig:
    """A seconds-long run of the primer net on part of MNIST."""
    return TrainConfig(DatasetSpec("mnist", str(mnist_dir)),
                       Hyperparameters.from_preset("primer", epochs=epochs),
                       seed=seed, train_limit=train_limit, threads=2)


@pytest.fixture(scope="session")
def primer_run(mnist_dir: Path, mnist: ImageDataset) -> TrainResult:
    return train(quick_config(mnist_dir), mnist)


def striped_image(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A learnable synthetic picture: 'cats' have horizontal stripes, 'dogs' vertical ones."""
    pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    phase = int(rng.integers(0, 4))
    stripes = (np.arange(size) + phase) // 2 % 2 == 0
    if kind == "cats":
        pixels[stripes, :, :] += 180
    else:
        pixels[:, stripes, :] += 180
    return Image.fromarray(pixels, "RGB")


def make_image_folder(root: Path, per_class: int = 12, size: int = 20, seed: int = 0) -> Path:
    """``root/cats`` and ``root/dogs`` with PNG and JPEG files of differing sizes."""
    rng = np.random.default_rng(seed)
    for kind in ("cats", "dogs"):
        folder = root / kind
        folder.mkdir(parents=True)
        for index in range(per_class):
            image = striped_image(kind, size + index % 3 * 4, rng)
            suffix = ".png" if index % 2 else ".jpg"
            image.save(folder / f"{kind}-{index:03d}{suffix}")
    return root


@pytest.fixture(scope="session")
def pets_run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """An RGB cats-vs-dogs net on a generated 16x16 image folder (seconds to train)."""
    root = make_image_folder(tmp_path_factory.mktemp("images") / "pets", per_class=16, size=16)
    config = TrainConfig(DatasetSpec("image-folder", str(root), image_size=16, color_mode="RGB"),
                         Hyperparameters.from_preset("primer", epochs=30),
                         validation_fraction=0.0, threads=2)
    return train(config)


@pytest.fixture(scope="session")
def serving_repository(primer_run: TrainResult, pets_run: TrainResult,
                       tmp_path_factory: pytest.TempPathFactory) -> Path:
    """See tests/support/repositories.py for the models and why each exists."""
    return build_serving_repository(tmp_path_factory.mktemp("serving") / "models",
                                    primer_run, pets_run)


@pytest.fixture(scope="session")
def server(serving_repository: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real ``axon serve`` for the session; tests that unload a model load it back."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(serving_repository, log, "--models", ",".join(STARTUP_MODELS),
                        "--max-message-bytes", str(8 * 1024 * 1024)) as process:
        yield process
