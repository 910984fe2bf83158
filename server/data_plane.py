"""What the Open Inference Protocol answers, whichever transport asks: health, metadata,
configuration, statistics and model control, as plain values. The gRPC servicer
(servicers/inference.py) and the HTTP routes (http/routes.py) only convert these to their wire
formats, so the two protocols cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from axon.protocol import model_config_pb2 as mc
from axon.protocol import open_inference_pb2 as pb
from axon.server.errors import (
    InvalidInputError,
    ModelControlDisabledError,
    ModelNotFoundError,
    ServingError,
    shown,
    shown_all,
)
from axon.server.metrics import attribute_call
from axon.server.model_manager import IndexEntry, ModelManager
from axon.server.served_model import PLATFORM, ServedModel
from axon.server.tensors import MODEL_DATATYPE
from axon.server.triton_schema import model_config, statistics_message

SERVER_NAME = "axon"
EXTENSIONS = ("binary_tensor_data", "classification", "model_configuration",
              "model_repository", "statistics")
"""The protocol extensions Axon implements, as Triton names them (binary tensor data is an
HTTP matter; the rest hold for both protocols)."""


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]
    """-1 for the variable batch dimension."""


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    """Every loaded version of the model."""
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    properties: dict[str, str]


def resolve(models: ModelManager, name: str, version: str) -> ServedModel:
    """The model version a request names; the call is labelled with it for the metrics -- with
    the name alone when a model the server knows cannot answer (unloaded, loading, no such
    version), so an outage of that model shows under its name."""
    if models.knows(name):
        attribute_call(name)
    model = models.get(name, version)
    attribute_call(model.name, model.version)
    return model


class DataPlane:
    """Every non-inference answer of the protocol; inference is the transports' conversion
    around ``ServedModel.infer``."""

    def __init__(self, models: ModelManager, *, model_control: bool = True) -> None:
        self.models = models
        self.model_control = model_control
        self.ready = False
        """Set by the server once the models it was started with are loaded; cleared when it
        starts stopping."""

    def resolve(self, name: str, version: str = "") -> ServedModel:
        return resolve(self.models, name, version)

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether the model (version) is loaded; a malformed name or version is an error."""
        try:
            self.resolve(name, version)
        except InvalidInputError:
            raise
        except ServingError:
            return False
        return True

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        model = self.resolve(name, version)
        runtime = model.runtime
        return ModelMetadata(
            name=model.name, versions=[str(m.version) for m in self.models.loaded(model.name)],
            platform=PLATFORM,
            inputs=[TensorMetadata(runtime.input.name, MODEL_DATATYPE,
                                   (-1, *runtime.input.shape))],
            outputs=[TensorMetadata(output.name, MODEL_DATATYPE, (-1, *output.shape))
                     for output in runtime.outputs],
            properties=_properties(model))

    def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        model = self.resolve(name, version)
        return model_config(model, self.models.policy_of(model.name))

    def statistics(self, name: str = "", version: str = "") -> list[pb.ModelStatistics]:
        """Of one model version, every loaded version of one model, or every loaded model."""
        if name:
            models = [self.models.get(name, version)] if version else self.models.loaded(name)
            if not models:
                self.models.get(name)  # raises the precise NOT_FOUND / UNAVAILABLE
        elif version:
            raise InvalidInputError("a version needs a model name")
        else:
            models = self.models.loaded()
        return [statistics_message(m.name, m.version, m.statistics) for m in models]

    def repository_index(self, repository_name: str = "",
                         ready_only: bool = False) -> list[IndexEntry]:
        self._check_repository_name(repository_name)
        return [entry for entry in self.models.index()
                if entry.state == "READY" or not ready_only]

    async def load(self, model_name: str, repository_name: str = "",
                   parameters: Iterable[str] = ()) -> None:
        self._check_model_control(repository_name, parameters)
        await self.models.load(model_name)

    async def unload(self, model_name: str, repository_name: str = "",
                     parameters: Iterable[str] = ()) -> None:
        self._check_model_control(repository_name, parameters, allowed=("unload_dependents",))
        await self.models.unload(model_name)

    def _check_repository_name(self, name: str) -> None:
        served = self.models.repository.root.resolve().name
        if name and name != served:
            raise ModelNotFoundError(f"unknown repository {shown(name)}; this server serves "
                                     f"{served!r}")

    def _check_model_control(self, repository_name: str, parameters: Iterable[str],
                             allowed: tuple[str, ...] = ()) -> None:
        if not self.model_control:
            raise ModelControlDisabledError("model control is disabled on this server "
                                            "(started with --no-model-control)")
        self._check_repository_name(repository_name)
        unsupported = sorted(set(parameters) - set(allowed))
        if unsupported:
            raise InvalidInputError(f"unsupported parameters {shown_all(unsupported)}; "
                                    "Axon loads models as the repository holds them (edit the "
                                    "model's config.json to change how it is served)")


def _properties(model: ServedModel) -> dict[str, str]:
    batching = model.batching
    return {
        "execution_provider": model.provider,
        "max_batch_size": str(batching.max_batch_size),
        "max_queue_delay_ms": f"{batching.max_queue_delay_ms:g}",
        "dataset": model.card.dataset,
        "labels": json.dumps(list(model.card.labels)),
        "test_accuracy": f"{model.card.test_accuracy:.6f}",
    }
