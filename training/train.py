"""The training loop: estimate the outputs, measure the loss, update the weights; repeat.

Reads top to bottom: a config, the data, the model, the loop, then a checkpoint that carries its
own config so ``axon export`` can rebuild the model without being told how it was made.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from axon.preprocessing import PreprocessingSpec, fit_normalisation
from axon.training.datasets import DatasetSpec, ImageDataset, Split, load_dataset
from axon.training.dense_net import (
    PRESETS,
    DenseNet,
    Recipe,
    one_hot,
    one_hot_cross_entropy,
    parameter_count,
)

log = logging.getLogger(__name__)

CHECKPOINT_FILENAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
EVAL_BATCH = 4096


@dataclass(frozen=True)
class Hyperparameters(Recipe):
    """The resolved architecture and optimiser settings of one run: a preset's recipe with the
    run's overrides, and the preset's name.

    Its fields stay flat (the recipe's seven and ``preset``, no nesting), so checkpoints and
    ``metrics.json`` store the keys they always have and old checkpoints load as they are.
    """

    preset: str

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> Hyperparameters:
        """The preset's values, with every non-None override applied."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        base = PRESETS[preset]
        params = cls(**{f.name: getattr(base, f.name) for f in fields(Recipe)}, preset=preset)
        return replace(params, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (with the seed, the run is reproducible)."""

    dataset: DatasetSpec
    hyperparameters: Hyperparameters
    seed: int = 0
    validation_fraction: float = 0.05
    """Share of the training set held out to report progress per epoch; the test set is only
    evaluated once, at the end."""
    train_limit: int | None = None
    """Use only the first N training images (quick experiments and tests)."""
    threads: int | None = None
    """torch intra-op threads (None: torch's default, one per core)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation fraction must be in [0, 1), "
                             f"got {self.validation_fraction}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"train limit must be at least 1, got {self.train_limit}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        hyper = dict(data["hyperparameters"], hidden_layers=tuple(
            data["hyperparameters"]["hidden_layers"]))
        return cls(**{**data, "dataset": DatasetSpec.from_dict(data["dataset"]),
                      "hyperparameters": Hyperparameters(**hyper)})


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    validation_loss: float | None
    validation_accuracy: float | None
    seconds: float


@dataclass
class TrainResult:
    """A trained model with what is needed to report on it and export it."""

    config: TrainConfig
    model: DenseNet
    dataset: ImageDataset
    preprocessing: PreprocessingSpec
    history: list[EpochRecord] = field(default_factory=list)
    training_seconds: float = 0.0
    test_loss: float = 0.0
    test_accuracy: float = 0.0
    test_predictions: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))


def preprocessing_for(dataset: ImageDataset) -> PreprocessingSpec:
    """The normalisation fitted on the training images, with the data set's input layout."""
    _, height, width, channels = dataset.train.images.shape
    mean, std = fit_normalisation(dataset.train.images)
    return PreprocessingSpec(height=height, width=width, channels=channels,
                             layout=dataset.layout, mean=mean, std=std)


def build_model(hyper: Hyperparameters, preprocessing: PreprocessingSpec,
                num_classes: int) -> DenseNet:
    return DenseNet(preprocessing.input_shape, hyper.hidden_layers, num_classes,
                    hyper.activation, hyper.dropout)


def train(config: TrainConfig, dataset: ImageDataset | None = None) -> TrainResult:
    """Train a ``DenseNet`` as ``config`` says; ``dataset`` skips loading when given."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    dataset = replace(dataset, train=dataset.train.head(config.train_limit))
    train_split, validation_split = _hold_out(dataset.train, config.validation_fraction,
                                              config.seed)
    preprocessing = preprocessing_for(replace(dataset, train=train_split))
    hyper = config.hyperparameters
    model = build_model(hyper, preprocessing, len(dataset.class_names))
    log.info("training %s (%s, %d parameters) on %s: %d train / %d validation images",
             hyper.preset, " -> ".join(map(str, [*preprocessing.input_shape, *hyper.hidden_layers,
                                                  len(dataset.class_names)])),
             parameter_count(model), dataset.name, len(train_split), len(validation_split))

    inputs, targets = _tensors(train_split, preprocessing, len(dataset.class_names))
    validation = _tensors(validation_split, preprocessing, len(dataset.class_names))
    optimizer = torch.optim.AdamW(model.parameters(), lr=hyper.learning_rate,
                                  weight_decay=hyper.weight_decay)
    steps_per_epoch = -(-len(inputs) // hyper.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=hyper.learning_rate, total_steps=hyper.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    result = TrainResult(config, model, dataset, preprocessing)
    started = time.perf_counter()
    for epoch in range(1, hyper.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        losses, correct = [], 0
        with tqdm(total=len(inputs), desc=f"epoch {epoch}/{hyper.epochs}", unit="img",
                  disable=None, leave=False) as bar:
            for batch in torch.split(order, hyper.batch_size):
                logits = model(inputs[batch])
                loss = one_hot_cross_entropy(logits, targets[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                schedule.step()
                losses.append(loss.item() * len(batch))
                correct += int((logits.argmax(1) == targets[batch].argmax(1)).sum())
                bar.update(len(batch))
                bar.set_postfix(loss=f"{loss.item():.4f}")
        val_loss, val_accuracy, _ = evaluate(model, *validation)
        record = EpochRecord(epoch, sum(losses) / len(inputs), correct / len(inputs),
                             val_loss, val_accuracy, time.perf_counter() - epoch_started)
        result.history.append(record)
        log.info("epoch %d/%d  loss %.4f  accuracy %.2f%%  validation loss %s  accuracy %s"
                 "  (%.1f s)",
                 epoch, hyper.epochs, record.train_loss, 100 * record.train_accuracy,
                 _fmt(val_loss, "{:.4f}"), _fmt(val_accuracy, "{:.2%}"), record.seconds)
    result.training_seconds = time.perf_counter() - started
    test_inputs, test_targets = _tensors(dataset.test, preprocessing, len(dataset.class_names))
    test_loss, test_accuracy, predictions = evaluate(model, test_inputs, test_targets)
    assert test_loss is not None and test_accuracy is not None
    result.test_loss, result.test_accuracy, result.test_predictions = (
        test_loss, test_accuracy, predictions)
    log.info("trained in %.1f s; test accuracy %.2f%% on %d images",
             result.training_seconds, 100 * test_accuracy, len(dataset.test))
    return result


def evaluate(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
             ) -> tuple[float | None, float | None, npt.NDArray[np.int64]]:
    """Mean loss, accuracy and predicted classes; (None, None, []) for an empty set."""
    if len(inputs) == 0:
        return None, None, np.empty(0, np.int64)
    model.eval()
    total_loss, predictions = 0.0, []
    with torch.no_grad():
        for start in range(0, len(inputs), EVAL_BATCH):
            logits = model(inputs[start:start + EVAL_BATCH])
            chunk = targets[start:start + EVAL_BATCH]
            total_loss += float(one_hot_cross_entropy(logits, chunk)) * len(chunk)
            predictions.append(logits.argmax(1))
    predicted = torch.cat(predictions)
    accuracy = int((predicted == targets.argmax(1)).sum()) / len(inputs)
    return total_loss / len(inputs), accuracy, predicted.numpy().astype(np.int64)


def save_checkpoint(result: TrainResult, run_dir: Path) -> Path:
    """Write the weights with the config, class names and pre-processing that produced them."""
    path = run_dir / CHECKPOINT_FILENAME
    torch.save({
        "format": CHECKPOINT_FORMAT,
        "config": result.config.to_dict(),
        "class_names": list(result.dataset.class_names),
        "dataset_name": result.dataset.name,
        "preprocessing": result.preprocessing.to_dict(),
        "training_seconds": result.training_seconds,
        "state_dict": result.model.state_dict(),
    }, path)
    return path


@dataclass(frozen=True)
class Checkpoint:
    config: TrainConfig
    class_names: tuple[str, ...]
    dataset_name: str
    preprocessing: PreprocessingSpec
    training_seconds: float
    model: DenseNet


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Rebuild the trained model (in eval mode) from ``run_dir``'s checkpoint."""
    path = run_dir / CHECKPOINT_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {CHECKPOINT_FILENAME}; "
                                "is this a folder written by axon train?")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an Axon checkpoint of format {CHECKPOINT_FORMAT}")
    config = TrainConfig.from_dict(data["config"])
    preprocessing = PreprocessingSpec.from_dict(data["preprocessing"])
    class_names = tuple(data["class_names"])
    model = build_model(config.hyperparameters, preprocessing, len(class_names))
    model.load_state_dict(data["state_dict"])
    model.eval()
    return Checkpoint(config, class_names, data["dataset_name"], preprocessing,
                      float(data["training_seconds"]), model)


def _hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """A seeded random ``fraction`` of ``split`` for validation; the rest for training."""
    count = int(len(split) * fraction)
    order = np.random.default_rng(seed).permutation(len(split))
    held, kept = np.sort(order[:count]), np.sort(order[count:])
    return (Split(split.images[kept], split.labels[kept]),
            Split(split.images[held], split.labels[held]))


def _tensors(split: Split, preprocessing: PreprocessingSpec,
             num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.from_numpy(preprocessing.apply(split.images))
    return inputs, one_hot(torch.from_numpy(split.labels), num_classes)


def _fmt(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)
