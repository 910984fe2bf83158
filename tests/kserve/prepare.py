"""What the KServe SDK tests need from Axon's side, made with Axon's own interpreter (the KServe
tests run in a virtualenv of their own, without torch): a model repository with a digit model
trained on real MNIST, and a batch of test digits with onnxruntime's answers for them.

``python -m tests.kserve.prepare OUT`` writes ``OUT/models/`` and ``OUT/digits.npz`` (inputs,
logits, probabilities).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from axon.model_repository import MODEL_FILENAME, ModelRepository
from axon.training import fetch
from axon.training.datasets import load_idx_dataset
from axon.training.train import train
from tests.conftest import quick_config
from tests.support.repositories import DIGITS, publish_run

DIGIT_COUNT = 64


def main(out: Path) -> None:
    explicit = os.environ.get("MNIST_DIR")
    mnist_dir = fetch.obtain(fetch.MNIST, Path(explicit) if explicit else None)
    mnist = load_idx_dataset(fetch.MNIST, mnist_dir)
    result = train(quick_config(mnist_dir), mnist)
    repository = ModelRepository(out / "models")
    card = publish_run(result, repository, DIGITS)
    inputs = card.preprocessing.apply(mnist.test.images[:DIGIT_COUNT])
    session = ort.InferenceSession(str(repository.root / DIGITS / "1" / MODEL_FILENAME),
                                   providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(["logits", "probabilities"], {"input": inputs})
    np.savez(out / "digits.npz", inputs=inputs, logits=logits, probabilities=probabilities,
             labels=list(card.labels))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
