"""Measure the accuracy targets of docs/training.md: full training runs on the full test sets.

    python -m training.bench_targets [--only mnist-default,mnist-primer,fashion-default]

Prints one row per run (test accuracy, training seconds, target, verdict) and exits non-zero
if a target is missed. Trains only; nothing is published.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass

from axon.cpus import cpus_label
from axon.markdown import LEFT, markdown_table
from axon.training.datasets import DatasetKind, DatasetSpec
from axon.training.train import Hyperparameters, TrainConfig, train


@dataclass(frozen=True)
class Target:
    dataset: DatasetKind
    preset: str
    min_accuracy: float
    max_seconds: float | None


TARGETS = {
    "mnist-default": Target("mnist", "default", 0.982, 180.0),
    "mnist-primer": Target("mnist", "primer", 0.950, None),
    "fashion-default": Target("fashion-mnist", "default", 0.890, None),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(TARGETS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    rows, failed = [], False
    for key in args.only.split(","):
        target = TARGETS[key]
        data_dir = os.environ.get("MNIST_DIR") or None if target.dataset == "mnist" else None
        config = TrainConfig(DatasetSpec(target.dataset, data_dir),
                             Hyperparameters.from_preset(target.preset))
        result = train(config)
        ok = result.test_accuracy >= target.min_accuracy and (
            target.max_seconds is None or result.training_seconds <= target.max_seconds)
        failed |= not ok
        limit = f" in <= {target.max_seconds:.0f} s" if target.max_seconds else ""
        rows.append([key, f"{result.test_accuracy:.2%}", f"{result.training_seconds:.1f} s",
                     f">= {target.min_accuracy:.1%}{limit}", "met" if ok else "MISSED"])
    print(f"\n{cpus_label()}")
    print(markdown_table(["run", "test accuracy", "training time", "target", "verdict"],
                         [LEFT] * 5, rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
