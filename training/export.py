"""ONNX export with a parity gate, embedded metadata, and publication to the model repository.

A model is published only if onnxruntime reproduces PyTorch on at least 1,000 inputs, the file
passes ``onnx.checker`` and its embedded metadata reads back, through onnxruntime, as the model
card. Parity means: identical arg-max; probabilities within 1e-5 absolute; logits within 1e-5 of
the image's logit scale, max(1, max |logit|). Logits are unbounded and a float32 dot product of
784 terms is only exact to about 1e-7 of the sum of its terms' magnitudes, which for trained nets
reaches 1e-5 absolute: measured on the primer net, torch and onnxruntime are each ~1e-5 from a
float64 reference and up to 2.6e-5 from each other, though both are correct float32 results.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from torch import nn

from axon.errors import AxonError
from axon.model_card import Architecture, ModelCard
from axon.model_repository import (
    CARD_FILENAME,
    MODEL_FILENAME,
    REPORT_DIRNAME,
    ModelRepository,
)
from axon.preprocessing import PreprocessingSpec
from axon.training.datasets import Split
from axon.training.dense_net import parameter_count
from axon.training.train import Hyperparameters

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5
PARITY_FILENAME = "parity.json"
MIN_PARITY_SAMPLES = 1000
BATCH_DIM = "batch"


class ExportError(AxonError, RuntimeError):
    """The exported model is not a faithful, valid copy of the trained one."""


@dataclass(frozen=True)
class ExportSource:
    """A trained model with the facts its model card records."""

    model: nn.Module
    class_names: tuple[str, ...]
    dataset_name: str
    preprocessing: PreprocessingSpec
    hyperparameters: Hyperparameters
    training_seconds: float
    test: Split
    spare: Split
    """Extra real images (e.g. training images) to reach MIN_PARITY_SAMPLES on small test sets."""


@dataclass(frozen=True)
class ParityReport:
    samples: int
    max_abs_diff_logits: float
    max_scaled_diff_logits: float
    """max |diff| / max(1, max |logit| of the same image): relative to the image's logit scale."""
    max_abs_diff_probabilities: float
    argmax_mismatches: int

    @property
    def passed(self) -> bool:
        return (self.max_scaled_diff_logits <= PARITY_TOLERANCE
                and self.max_abs_diff_probabilities <= PARITY_TOLERANCE
                and self.argmax_mismatches == 0)


class _LogitsAndProbabilities(nn.Module):
    """What the served graph computes: the logits and their softmax."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(inputs)
        return logits, torch.softmax(logits, dim=1)


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """Write ``model`` as ONNX: float32 ``input`` [batch, *input_shape] -> logits, probabilities."""
    model.eval()
    example = torch.zeros(2, *input_shape)
    # The exporter logs every optimisation pass and warns about torchvision ops it cannot find;
    # none of it helps the user, and failures still raise.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    for noisy in ("onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            _LogitsAndProbabilities(model).eval(), (example,), str(path),
            input_names=["input"], output_names=["logits", "probabilities"],
            dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},),
            external_data=False, verbose=False,
        )


def parity_inputs(source: ExportSource) -> npt.NDArray[np.float32]:
    """All test images; small data sets are topped up to MIN_PARITY_SAMPLES with spare real
    images, then with seeded uniform-noise images (parity is a numerical check; noise is as
    valid an input as a photo)."""
    images = source.test.images
    if len(images) < MIN_PARITY_SAMPLES:
        images = np.concatenate([images, source.spare.images[:MIN_PARITY_SAMPLES - len(images)]])
    if len(images) < MIN_PARITY_SAMPLES:
        noise = np.random.default_rng(0).integers(
            0, 256, size=(MIN_PARITY_SAMPLES - len(images), *images.shape[1:]), dtype=np.uint8)
        images = np.concatenate([images, noise])
    return source.preprocessing.apply(images)


def check_parity(model: nn.Module, session: ort.InferenceSession,
                 inputs: npt.NDArray[np.float32]) -> ParityReport:
    """Compare onnxruntime against PyTorch on ``inputs``."""
    with torch.no_grad():
        logits, probs = (t.numpy() for t in
                         _LogitsAndProbabilities(model).eval()(torch.from_numpy(inputs)))
    ort_logits, ort_probs = session.run(["logits", "probabilities"], {"input": inputs})
    logits_diff = np.abs(ort_logits - logits)
    return ParityReport(
        samples=len(inputs),
        max_abs_diff_logits=float(logits_diff.max()),
        max_scaled_diff_logits=float((logits_diff / np.maximum(
            1.0, np.abs(logits).max(axis=1, keepdims=True))).max()),
        max_abs_diff_probabilities=float(np.abs(ort_probs - probs).max()),
        argmax_mismatches=int((ort_logits.argmax(1) != logits.argmax(1)).sum()),
    )


def publish(source: ExportSource, repository: ModelRepository, name: str,
            report_files: list[Path]) -> ModelCard:
    """Export, verify and add ``source`` as the next version of ``name``; return its card."""
    cards: list[ModelCard] = []

    def populate(folder: Path, version: int) -> None:
        path = folder / MODEL_FILENAME
        export_onnx(source.model, source.preprocessing.input_shape, path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        parity = check_parity(source.model, session, parity_inputs(source))
        log.info("parity on %d images: max |diff| logits %.2e (%.2e scaled), probabilities "
                 "%.2e, %d arg-max mismatches", parity.samples, parity.max_abs_diff_logits,
                 parity.max_scaled_diff_logits, parity.max_abs_diff_probabilities,
                 parity.argmax_mismatches)
        if not parity.passed:
            raise ExportError(f"onnxruntime disagrees with PyTorch: {parity} "
                              f"(tolerance {PARITY_TOLERANCE})")
        card = _card(source, name, version, _accuracy(session, source), onnx.load(str(path)))
        _embed_metadata(path, card)
        card.write_json(folder / CARD_FILENAME)
        (folder / PARITY_FILENAME).write_text(json.dumps(asdict(parity), indent=2) + "\n")
        _copy_report(report_files, folder / REPORT_DIRNAME)
        cards.append(card)

    repository.publish(name, populate)
    return cards[0]


def _accuracy(session: ort.InferenceSession, source: ExportSource) -> float:
    """Test accuracy of the ONNX model itself, as served."""
    inputs = source.preprocessing.apply(source.test.images)
    (logits,) = session.run(["logits"], {"input": inputs})
    return float((logits.argmax(1) == source.test.labels).mean())


def _card(source: ExportSource, name: str, version: int, accuracy: float,
          model: onnx.ModelProto) -> ModelCard:
    hyper = source.hyperparameters
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return ModelCard(
        name=name, version=version, dataset=source.dataset_name, labels=source.class_names,
        preprocessing=source.preprocessing,
        architecture=Architecture(hyper.preset, hyper.hidden_layers, hyper.activation,
                                  parameter_count(source.model)),
        test_accuracy=accuracy, test_samples=len(source.test),
        training_seconds=round(source.training_seconds, 3), opset=opset,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _embed_metadata(path: Path, card: ModelCard) -> None:
    """Add the card to the model's metadata_props, check the file, and read it back."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in card.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "axon"
    model.doc_string = f"{card.name} v{card.version}: {card.dataset} classifier " \
                       f"({' -> '.join(map(str, card.architecture.hidden_layers))} hidden)"
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path} fails onnx.checker: {exc}") from exc
    embedded = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) \
        .get_modelmeta().custom_metadata_map
    if ModelCard.from_metadata(embedded) != card:
        raise ExportError(f"{path}: embedded metadata does not read back as the model card")


def _copy_report(files: list[Path], folder: Path) -> None:
    folder.mkdir()
    for file in files:
        shutil.copy2(file, folder / file.name)
