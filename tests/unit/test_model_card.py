"""The model card's JSON and ONNX-metadata forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from axon.model_card import Architecture, ModelCard, ModelCardError
from axon.preprocessing import PreprocessingSpec


def sample_card(version: int = 1) -> ModelCard:
    return ModelCard(
        name="mnist", version=version, dataset="mnist", labels=tuple("0123456789"),
        preprocessing=PreprocessingSpec(28, 28, 1, "flat", mean=(0.1307,), std=(0.3081,)),
        architecture=Architecture("default", (1024, 1024), "relu", 1_863_690),
        test_accuracy=0.9872, test_samples=10_000, training_seconds=115.1, opset=20,
        created_at="2026-11-24T18:00:00+00:00")


def test_metadata_round_trip_uses_prefixed_json_values() -> None:
    card = sample_card()
    metadata = card.to_metadata()
    assert json.loads(metadata["axon.labels"]) == list("0123456789")
    assert json.loads(metadata["axon.input_shape"]) == ["N", 784]
    assert ModelCard.from_metadata({**metadata, "other.key": "ignored"}) == card


def test_json_file_round_trip(tmp_path: Path) -> None:
    card = sample_card(7)
    card.write_json(tmp_path / "model.json")
    assert ModelCard.read_json(tmp_path / "model.json") == card


def test_unknown_format_is_refused() -> None:
    data = sample_card().to_dict() | {"format": 99}
    with pytest.raises(ModelCardError, match="unknown model card format 99"):
        ModelCard.from_dict(data)


def test_missing_field_is_reported() -> None:
    data = sample_card().to_dict()
    del data["labels"]
    with pytest.raises(ModelCardError, match=r"malformed model card.*labels"):
        ModelCard.from_dict(data)


def test_foreign_model_without_metadata() -> None:
    with pytest.raises(ModelCardError, match=r"no axon\.\* metadata"):
        ModelCard.from_metadata({"author": "someone"})
