"""What the Open Inference Protocol answers, whichever transport asks: health, metadata,
configuration, statistics and model control, as plain values. The gRPC servicer
(servicers/inference.py) and the HTTP routes (http/routes.py) only convert these to their wire
formats, so the two protocols cannot drift apart.

In a worker of a worker group (``axon serve --workers N``), what must describe the whole server
(statistics, the repository index) and what must change every worker (loads and unloads) goes
through the group (server/worker_group.py), so either protocol, on any worker, speaks for and
acts on all of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from axon.server.worker_group import WorkerGroup

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
    try:
        model = models.get(name, version)
    except Exception:
        if models.knows(name):
            attribute_call(name)
        raise
    attribute_call(model.name, model.version_label)
    return model


class DataPlane:
    """Every non-inference answer of the protocol; inference is the transports' conversion
    around ``ServedModel.infer``."""

    def __init__(self, models: ModelManager, *, model_control: bool = True) -> None:
        self.models = models
        self.model_control = model_control
        self.ready = False
        """Set by the server once the models it was started with are loaded (by every worker
        of a worker group); cleared when it starts stopping."""
        self.group: WorkerGroup | None = None
        """Set in a worker of a worker group: statistics, the index and model control then
        speak for, and act on, every worker."""

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

    async def statistics(self, name: str = "", version: str = "") -> list[pb.ModelStatistics]:
        """Of one model version, every loaded version of one model, or every loaded model (of
        every worker, summed, in a worker group)."""
        if self.group is not None:
            return list(pb.ModelStatisticsResponse.FromString(
                await self.group.statistics(name, version)).model_stats)
        return local_statistics(self.models, name, version)

    async def repository_index(self, repository_name: str = "",
                               ready_only: bool = False) -> list[IndexEntry]:
        self._check_repository_name(repository_name)
        entries = await self.group.index() if self.group is not None else self.models.index()
        return [entry for entry in entries if entry.state == "READY" or not ready_only]

    async def load(self, model_name: str, repository_name: str = "",
                   parameters: Iterable[str] = ()) -> None:
        """(Re)load ``model_name`` (in every worker of a group before returning)."""
        self._check_model_control(repository_name, parameters)
        if self.group is not None:
            await self.group.load(model_name)
        else:
            await self.models.load(model_name)

    async def unload(self, model_name: str, repository_name: str = "",
                     parameters: Iterable[str] = ()) -> None:
        """Unload ``model_name`` (in every worker of a group before returning)."""
        self._check_model_control(repository_name, parameters, allowed=("unload_dependents",))
        if self.group is not None:
            await self.group.unload(model_name)
        else:
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


def local_statistics(models: ModelManager, name: str = "",
                     version: str = "") -> list[pb.ModelStatistics]:
    """This process's statistics of one model version, every loaded version of one model, or
    every loaded model (``name`` empty)."""
    if name:
        served = [models.get(name, version)] if version else models.loaded(name)
        if not served:
            models.get(name)  # raises the precise NOT_FOUND / UNAVAILABLE
    elif version:
        raise InvalidInputError("a version needs a model name")
    else:
        served = models.loaded()
    return [statistics_message(m.name, m.version, m.statistics) for m in served]


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
