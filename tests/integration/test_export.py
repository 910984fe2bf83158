"""ONNX export: parity gate, embedded metadata, dynamic batch, repository versions."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from axon.model_card import ModelCard
from axon.model_repository import CARD_FILENAME, MODEL_FILENAME, ModelRepository
from axon.training import export
from axon.training.datasets import DatasetSpec, ImageDataset
from axon.training.export import ExportError, check_parity, publish
from axon.training.train import Hyperparameters, TrainConfig, TrainResult, train
from tests.conftest import make_image_folder
from tests.support.repositories import source_of


@pytest.fixture(scope="module")
def published(primer_run: TrainResult,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRepository, ModelCard]:
    repository = ModelRepository(tmp_path_factory.mktemp("repo"))
    report = tmp_path_factory.mktemp("report") / "metrics.json"
    report.write_text("{}")
    return repository, publish(source_of(primer_run), repository, "digits", [report])


def _session(repository: ModelRepository, card: ModelCard) -> ort.InferenceSession:
    path = repository.version_dir(card.name, card.version) / MODEL_FILENAME
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_parity_was_checked_on_the_whole_test_set(
        published: tuple[ModelRepository, ModelCard]) -> None:
    repository, _ = published
    parity = json.loads((repository.version_dir("digits", 1) / export.PARITY_FILENAME).read_text())
    assert parity["samples"] == 10_000
    assert parity["argmax_mismatches"] == 0
    assert parity["max_abs_diff_probabilities"] <= 1e-5
    assert parity["max_scaled_diff_logits"] <= 1e-5


def test_onnx_accuracy_equals_pytorch_accuracy(published: tuple[ModelRepository, ModelCard],
                                               primer_run: TrainResult) -> None:
    _, card = published
    assert card.test_accuracy == pytest.approx(primer_run.test_accuracy, abs=1e-9)
    assert card.test_samples == 10_000


def test_metadata_round_trip(published: tuple[ModelRepository, ModelCard]) -> None:
    repository, card = published
    folder = repository.version_dir("digits", 1)
    embedded = _session(repository, card).get_modelmeta().custom_metadata_map
    assert ModelCard.from_metadata(embedded) == card
    assert ModelCard.read_json(folder / CARD_FILENAME) == card
    assert card.labels == tuple("0123456789")
    assert card.architecture.hidden_layers == (20,)
    assert card.dataset == "mnist" and card.version == 1
    assert (folder / "report" / "metrics.json").is_file()


def test_onnx_file_is_valid_with_a_current_opset(
        published: tuple[ModelRepository, ModelCard]) -> None:
    repository, card = published
    path = repository.version_dir("digits", 1) / MODEL_FILENAME
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert card.opset >= 18
    graph_input = model.graph.input[0]
    assert graph_input.name == "input"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 784
    assert [o.name for o in model.graph.output] == ["logits", "probabilities"]


@pytest.mark.parametrize("batch", [1, 3, 257])
def test_dynamic_batch(published: tuple[ModelRepository, ModelCard], mnist: ImageDataset,
                       batch: int) -> None:
    repository, card = published
    inputs = card.preprocessing.apply(mnist.test.images[:batch])
    logits, probabilities = _session(repository, card).run(None, {"input": inputs})
    assert logits.shape == probabilities.shape == (batch, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_parity_check_detects_a_different_model(primer_run: TrainResult,
                                                published: tuple[ModelRepository, ModelCard],
                                                mnist: ImageDataset) -> None:
    repository, card = published
    altered = copy.deepcopy(primer_run.model)
    with torch.no_grad():
        next(altered.parameters())[0, 0] += 1e-3
    inputs = card.preprocessing.apply(mnist.test.images[:1000])
    assert check_parity(primer_run.model, _session(repository, card), inputs).passed
    report = check_parity(altered, _session(repository, card), inputs)
    assert not report.passed and report.max_abs_diff_logits > 1e-5


def test_failed_parity_publishes_nothing(primer_run: TrainResult,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_export = export.export_onnx

    def faulty_exporter(model: torch.nn.Module, shape: tuple[int, ...], path: Path) -> None:
        broken = copy.deepcopy(model)  # stands in for an exporter bug
        with torch.no_grad():
            for parameter in broken.parameters():
                parameter.mul_(1.01)
        real_export(broken, shape, path)

    monkeypatch.setattr(export, "export_onnx", faulty_exporter)
    repository = ModelRepository(tmp_path)
    with pytest.raises(ExportError, match="onnxruntime disagrees with PyTorch"):
        publish(source_of(primer_run), repository, "digits", [])
    assert repository.versions("digits") == []


def test_next_version_and_image_input(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets", per_class=10, size=16)
    config = TrainConfig(DatasetSpec("image-folder", str(root), image_size=16),
                         Hyperparameters.from_preset("primer", epochs=2),
                         validation_fraction=0.0, threads=2)
    result = train(config)
    repository = ModelRepository(tmp_path / "repo")
    cards = [publish(source_of(result), repository, "pets", []) for _ in range(2)]
    assert [c.version for c in cards] == [1, 2] == repository.versions("pets")
    assert cards[1].input_shape == (1, 16, 16)
    assert cards[1].labels == ("cats", "dogs")
    parity = json.loads((repository.version_dir("pets", 2) / export.PARITY_FILENAME).read_text())
    assert parity["samples"] == 1000  # 20 real images topped up with noise images
    logits, _ = _session(repository, cards[1]).run(
        None, {"input": cards[1].preprocessing.apply(result.dataset.test.images)})
    assert logits.shape == (4, 2)
