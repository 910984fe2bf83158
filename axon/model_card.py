"""The model card: what a served model is, embedded in its ONNX file and written beside it.

Every field is stored twice with the same content: as ONNX ``metadata_props`` (key ``axon.<field>``,
JSON value), so the model file alone is self-describing, and as ``model.json`` in the version
directory, so tools can read it without parsing the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axon.errors import AxonError
from axon.preprocessing import PreprocessingSpec

CARD_FORMAT = 1
METADATA_PREFIX = "axon."


class ModelCardError(AxonError, ValueError):
    """A model card is missing, unreadable or of an unknown format."""


@dataclass(frozen=True)
class Architecture:
    """The dense net behind the model: input → hidden layers → outputs."""

    preset: str
    hidden_layers: tuple[int, ...]
    activation: str
    parameters: int


@dataclass(frozen=True)
class ModelCard:
    """Everything a server or client needs to know about one exported model version."""

    name: str
    version: int
    dataset: str
    labels: tuple[str, ...]
    preprocessing: PreprocessingSpec
    architecture: Architecture
    test_accuracy: float
    test_samples: int
    training_seconds: float
    opset: int
    created_at: str
    input_name: str = "input"
    output_names: tuple[str, ...] = ("logits", "probabilities")
    format: int = field(default=CARD_FORMAT)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Model input shape of one image, without the (dynamic) batch dimension."""
        return self.preprocessing.input_shape

    def to_dict(self) -> dict[str, Any]:
        arch = self.architecture
        return {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "dataset": self.dataset,
            "labels": list(self.labels),
            "input_name": self.input_name,
            "input_shape": ["N", *self.input_shape],
            "output_names": list(self.output_names),
            "preprocessing": self.preprocessing.to_dict(),
            "architecture": {
                "preset": arch.preset, "hidden_layers": list(arch.hidden_layers),
                "activation": arch.activation, "parameters": arch.parameters,
            },
            "test_accuracy": self.test_accuracy,
            "test_samples": self.test_samples,
            "training_seconds": self.training_seconds,
            "opset": self.opset,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if data.get("format") != CARD_FORMAT:
            raise ModelCardError(f"unknown model card format {data.get('format')!r}; "
                                 f"this Axon reads format {CARD_FORMAT}")
        try:
            arch = data["architecture"]
            return cls(
                format=CARD_FORMAT,
                name=str(data["name"]),
                version=int(data["version"]),
                dataset=str(data["dataset"]),
                labels=tuple(str(label) for label in data["labels"]),
                input_name=str(data["input_name"]),
                output_names=tuple(str(n) for n in data["output_names"]),
                preprocessing=PreprocessingSpec.from_dict(data["preprocessing"]),
                architecture=Architecture(
                    preset=str(arch["preset"]),
                    hidden_layers=tuple(int(n) for n in arch["hidden_layers"]),
                    activation=str(arch["activation"]),
                    parameters=int(arch["parameters"]),
                ),
                test_accuracy=float(data["test_accuracy"]),
                test_samples=int(data["test_samples"]),
                training_seconds=float(data["training_seconds"]),
                opset=int(data["opset"]),
                created_at=str(data["created_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelCardError(f"malformed model card: {exc!r}") from exc

    def to_metadata(self) -> dict[str, str]:
        """ONNX ``metadata_props``: one ``axon.<field>`` key per field, JSON-encoded values."""
        return {METADATA_PREFIX + key: json.dumps(value) for key, value in self.to_dict().items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> ModelCard:
        """Inverse of ``to_metadata``; keys without the ``axon.`` prefix are ignored."""
        fields = {
            key.removeprefix(METADATA_PREFIX): value
            for key, value in metadata.items() if key.startswith(METADATA_PREFIX)
        }
        if not fields:
            raise ModelCardError("the model carries no axon.* metadata; was it exported by Axon?")
        try:
            return cls.from_dict({key: json.loads(value) for key, value in fields.items()})
        except json.JSONDecodeError as exc:
            raise ModelCardError(f"undecodable model metadata: {exc}") from exc

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read_json(cls, path: Path) -> ModelCard:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelCardError(f"{path}: cannot read model card: {exc}") from exc
        return cls.from_dict(data)
