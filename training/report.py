"""The run report: ``metrics.json`` plus loss, accuracy and confusion-matrix plots (PNG)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt

from axon.training.dense_net import parameter_count
from axon.training.train import TrainResult

METRICS_FILENAME = "metrics.json"
PLOT_FILENAMES = ("loss.png", "accuracy.png", "confusion_matrix.png")


def confusion_matrix(truth: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64],
                     num_classes: int) -> npt.NDArray[np.int64]:
    """Counts [true class, predicted class]."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def write_report(result: TrainResult, run_dir: Path) -> list[Path]:
    """Write metrics JSON and the three plots into ``run_dir``; return the paths written."""
    names = result.dataset.class_names
    matrix = confusion_matrix(result.dataset.test.labels, result.test_predictions, len(names))
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    metrics: dict[str, Any] = {
        "config": result.config.to_dict(),
        "dataset": result.dataset.name,
        "class_names": list(names),
        "parameters": parameter_count(result.model),
        "train_samples": len(result.dataset.train),
        "test_samples": len(result.dataset.test),
        "training_seconds": round(result.training_seconds, 3),
        "test_loss": result.test_loss,
        "test_accuracy": result.test_accuracy,
        "per_class_test_accuracy": dict(zip(names, per_class.tolist(), strict=True)),
        "confusion_matrix": matrix.tolist(),
        "history": [asdict(record) for record in result.history],
    }
    paths = [run_dir / METRICS_FILENAME, *(run_dir / name for name in PLOT_FILENAMES)]
    paths[0].write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    _plot_curves(result, "loss", paths[1])
    _plot_curves(result, "accuracy", paths[2])
    _plot_confusion(matrix, names, result.test_accuracy, paths[3])
    return paths


def _plot_curves(result: TrainResult, metric: str, path: Path) -> None:
    epochs = [record.epoch for record in result.history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [getattr(r, f"train_{metric}") for r in result.history], "o-", label="train")
    validation = [getattr(r, f"validation_{metric}") for r in result.history]
    if all(v is not None for v in validation):
        ax.plot(epochs, validation, "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{result.dataset.name}: {metric} per epoch "
                 f"({result.config.hyperparameters.preset})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_confusion(matrix: npt.NDArray[np.int64], names: tuple[str, ...], accuracy: float,
                    path: Path) -> None:
    size = max(4.0, 0.55 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test confusion matrix (accuracy {accuracy:.2%})")
    if len(names) <= 20:
        threshold = matrix.max() / 2
        for (row, col), count in np.ndenumerate(matrix):
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > threshold else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
