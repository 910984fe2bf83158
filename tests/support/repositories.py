"""Model repositories for server tests, built from real (short) training runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from axon.model_card import ModelCard
from axon.model_repository import CONFIG_FILENAME, MODEL_FILENAME, ModelRepository
from axon.training.export import ExportSource, publish
from axon.training.train import TrainResult
from tests.support.stall_model import STALL_CONFIG, save_stall_model

DIGITS = "mnist"
"""Two versions (same weights), served with version policy ``all``."""
HOLD_DEADLINE, HOLD_CANCEL, HOLD_QUEUE = "hold-deadline", "hold-cancel", "hold-queue"
"""Stall models (tests/support/stall_model.py): one instance that a request can keep busy for
as long as it asks, so that requests sent meanwhile wait in its queue (of at most 8 images):
for deadlines, cancellation and overflow. One model per test, so that tests do not queue behind
each other's stalls."""
HOLDS = (HOLD_DEADLINE, HOLD_CANCEL, HOLD_QUEUE)
BATCHED = "mnist-batched"
"""A stall model too: requests sent while it is held all run together when it is free."""
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
    for stalling in (*HOLDS, BATCHED):
        save_stall_model(root / stalling / "1", stalling)
        (root / stalling / CONFIG_FILENAME).write_text(json.dumps(
            STALL_CONFIG if stalling != BATCHED else {**STALL_CONFIG, "max_batch_size": 64,
                                                      "max_queue_size": 64}))
    publish_run(pets, repository, PETS)
    (root / BROKEN / "1").mkdir(parents=True)
    (root / BROKEN / "1" / MODEL_FILENAME).write_bytes(b"this is not an ONNX model")
    return root
