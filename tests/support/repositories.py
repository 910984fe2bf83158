"""Model repositories for server tests, built from real (short) training runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from axon.model_card import ModelCard
from axon.model_repository import CONFIG_FILENAME, MODEL_FILENAME, ModelRepository
from training.export import ExportSource, publish
from training.train import TrainResult

DIGITS = "mnist"
"""Two versions (same weights), served with version policy ``all``."""
HOLD_DEADLINE, HOLD_CANCEL, HOLD_QUEUE = "hold-deadline", "hold-cancel", "hold-queue"
"""Each holds its first request 1 s (a quarter of a 4 s delay, the pause rule) and queues at
most 8 images: for deadlines, cancellation and overflow. One model per test, because after a
lone request has run the batcher stops waiting (the lone-caller rule), so only a model that has
not yet run holds a request for sure."""
HOLDS = (HOLD_DEADLINE, HOLD_CANCEL, HOLD_QUEUE)
BATCHED = "mnist-batched"
"""Holds requests up to 1 s (250 ms without arrivals): concurrent requests land in one batch."""
PETS = "pets"
"""An RGB cats-vs-dogs model trained on a generated image folder (16x16)."""
BROKEN = "broken"
"""A model.onnx that is not ONNX; not loaded at start."""
STARTUP_MODELS = (DIGITS, BATCHED, PETS, *HOLDS)


def source_of(result: TrainResult) -> ExportSource:
    return ExportSource(
        model=result.model, class_names=result.dataset.class_names,
        dataset_name=result.dataset.name, preprocessing=result.preprocessing,
        hyperparameters=result.config.hyperparameters, training_seconds=result.training_seconds,
        test=result.dataset.test, spare=result.dataset.train)


def publish_run(result: TrainResult, repository: ModelRepository, name: str) -> ModelCard:
    return publish(source_of(result), repository, name, [])


def copy_model(repository: ModelRepository, source: str, version: int, target: str,
               config: dict[str, Any] | None = None) -> None:
    """``target`` v1: the files of ``source`` v``version``, with its own config.json."""
    destination = repository.root / target / "1"
    shutil.copytree(repository.version_dir(source, version), destination)
    (repository.root / target / CONFIG_FILENAME).write_text(json.dumps(config or {}))


def build_serving_repository(root: Path, digits: TrainResult, pets: TrainResult) -> Path:
    repository = ModelRepository(root)
    publish_run(digits, repository, DIGITS)
    publish_run(digits, repository, DIGITS)
    (root / DIGITS / CONFIG_FILENAME).write_text(json.dumps({"version_policy": "all"}))
    for hold in HOLDS:
        copy_model(repository, DIGITS, 1, hold, {"max_queue_delay_ms": 4000,
                                                 "max_batch_size": 8, "max_queue_size": 8})
    copy_model(repository, DIGITS, 1, BATCHED, {"max_queue_delay_ms": 1000})
    publish_run(pets, repository, PETS)
    (root / BROKEN / "1").mkdir(parents=True)
    (root / BROKEN / "1" / MODEL_FILENAME).write_bytes(b"this is not an ONNX model")
    return root
