"""Train -> report -> checkpoint -> export -> publish, for ``axon train`` and ``axon export``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from axon.model_card import ModelCard
from axon.model_repository import ModelRepository, validate_model_name
from axon.training.datasets import DatasetSpec, load_dataset
from axon.training.dense_net import DEFAULT_PRESET
from axon.training.export import ExportSource, publish
from axon.training.report import METRICS_FILENAME, PLOT_FILENAMES, write_report
from axon.training.train import TrainConfig, load_checkpoint, save_checkpoint, train

log = logging.getLogger(__name__)


def default_model_name(spec: DatasetSpec, preset: str) -> str:
    """``mnist``, ``fashion-mnist``, ``<folder name>``; suffixed ``-<preset>`` unless default."""
    stem = Path(spec.data_dir or "images").resolve().name if spec.kind == "image-folder" \
        else spec.kind
    return validate_model_name(stem if preset == DEFAULT_PRESET else f"{stem}-{preset}")


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """A fresh folder ``runs_dir/name/<UTC timestamp>[-n]`` for one run's files."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    parent = runs_dir / name
    parent.mkdir(parents=True, exist_ok=True)
    for suffix in ["", *(f"-{n}" for n in range(2, 1000))]:
        try:
            (run_dir := parent / f"{stamp}{suffix}").mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder under {parent}")


def train_and_publish(config: TrainConfig, name: str, repository: ModelRepository,
                      runs_dir: Path) -> tuple[ModelCard, Path]:
    """Train, write the run report and checkpoint, then publish the next model version."""
    validate_model_name(name)
    result = train(config)
    run_dir = new_run_dir(runs_dir, name)
    report_files = write_report(result, run_dir)
    save_checkpoint(result, run_dir)
    log.info("run report and checkpoint in %s", run_dir)
    source = ExportSource(
        model=result.model, class_names=result.dataset.class_names,
        dataset_name=result.dataset.name, preprocessing=result.preprocessing,
        hyperparameters=config.hyperparameters, training_seconds=result.training_seconds,
        test=result.dataset.test, spare=result.dataset.train)
    return publish(source, repository, name, report_files), run_dir


def export_run(run_dir: Path, repository: ModelRepository, name: str | None = None,
               data_dir: str | None = None) -> ModelCard:
    """Publish a trained run's checkpoint again (e.g. into another repository)."""
    checkpoint = load_checkpoint(run_dir)
    spec = checkpoint.config.dataset
    if data_dir is not None:
        spec = DatasetSpec.from_dict({**spec.to_dict(), "data_dir": data_dir})
    dataset = load_dataset(spec)
    if dataset.class_names != checkpoint.class_names:
        raise ValueError(f"the data set now has classes {dataset.class_names}, but the model "
                         f"was trained on {checkpoint.class_names}")
    source = ExportSource(
        model=checkpoint.model, class_names=checkpoint.class_names,
        dataset_name=checkpoint.dataset_name, preprocessing=checkpoint.preprocessing,
        hyperparameters=checkpoint.config.hyperparameters,
        training_seconds=checkpoint.training_seconds, test=dataset.test, spare=dataset.train)
    report_files = [run_dir / f for f in (METRICS_FILENAME, *PLOT_FILENAMES)
                    if (run_dir / f).is_file()]
    return publish(source, repository, name or default_model_name(
        spec, checkpoint.config.hyperparameters.preset), report_files)
