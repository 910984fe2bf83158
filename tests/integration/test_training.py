"""Real training runs on real MNIST and on a generated image folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from axon.training.datasets import DatasetSpec, ImageDataset
from axon.training.report import PLOT_FILENAMES, write_report
from axon.training.train import (
    Hyperparameters,
    TrainConfig,
    TrainResult,
    load_checkpoint,
    save_checkpoint,
    train,
)
from tests.conftest import make_image_folder, quick_config


def test_short_run_beats_chance_by_a_wide_margin(primer_run: TrainResult) -> None:
    # Ten classes: chance is 10 %. Two epochs on 12k images of the 784-20-10 net.
    assert primer_run.test_accuracy > 0.85
    assert len(primer_run.dataset.test) == 10_000
    losses = [record.train_loss for record in primer_run.history]
    assert losses[-1] < losses[0]
    assert all(r.validation_accuracy is not None and r.validation_accuracy > 0.5
               for r in primer_run.history)


def test_same_seed_same_weights(mnist_dir: Path, mnist: ImageDataset) -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        config = quick_config(mnist_dir, epochs=1, train_limit=3000, seed=seed)
        return list(train(config, mnist).model.state_dict().values())

    first, again, other = weights(7), weights(7), weights(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_validation_is_held_out_of_training(primer_run: TrainResult) -> None:
    config = primer_run.config
    assert config.validation_fraction == 0.05
    # 12k images, 5 % held out: the model saw 11,400 of them.
    assert primer_run.preprocessing.input_shape == (784,)
    assert 0.05 < primer_run.preprocessing.mean[0] < 0.3


def test_run_report(primer_run: TrainResult, tmp_path: Path) -> None:
    paths = write_report(primer_run, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] == primer_run.test_accuracy
    assert len(metrics["history"]) == 2
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 10_000
    assert np.trace(matrix) / 10_000 == pytest.approx(primer_run.test_accuracy)
    assert metrics["parameters"] == 15_910
    for name in PLOT_FILENAMES:
        with Image.open(tmp_path / name) as plot:
            assert plot.format == "PNG" and plot.width >= 400
    assert len(paths) == 1 + len(PLOT_FILENAMES)


def test_checkpoint_round_trip(primer_run: TrainResult, tmp_path: Path) -> None:
    save_checkpoint(primer_run, tmp_path)
    restored = load_checkpoint(tmp_path)
    assert restored.config == primer_run.config
    assert restored.class_names == primer_run.dataset.class_names
    inputs = torch.from_numpy(primer_run.preprocessing.apply(primer_run.dataset.test.images[:64]))
    with torch.no_grad():
        torch.testing.assert_close(restored.model(inputs), primer_run.model.eval()(inputs))


def test_cats_and_dogs_from_an_image_folder(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets", per_class=40, size=16)
    hyper = Hyperparameters.from_preset("primer", epochs=15, batch_size=16)
    config = TrainConfig(DatasetSpec("image-folder", str(root), image_size=16, color_mode="RGB"),
                         hyper, validation_fraction=0.0, threads=2)
    result = train(config)
    assert result.dataset.class_names == ("cats", "dogs")
    assert result.preprocessing.input_shape == (3, 16, 16)
    assert result.test_accuracy >= 0.9  # chance: 0.5
