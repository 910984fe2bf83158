"""The Open Inference Protocol servicer (package ``inference``), with Triton's extensions."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from axon import __version__
from axon.protocol import open_inference_pb2 as pb
from axon.protocol import open_inference_pb2_grpc as pb_grpc
from axon.server.errors import (
    InvalidInputError,
    ModelControlDisabledError,
    ModelNotFoundError,
    ServingError,
    shown,
    shown_all,
)
from axon.server.metrics import Metrics, attribute_call
from axon.server.model_manager import ModelManager
from axon.server.served_model import PLATFORM, ServedModel
from axon.server.servicers.streams import answer_concurrently
from axon.server.servicers.tensors import (
    MODEL_DATATYPE,
    infer_response,
    request_batch,
    requested_outputs,
)
from axon.server.statistics import Duration, ModelStatistics

if TYPE_CHECKING:
    from axon.server.worker_group import WorkerGroup
from axon.server.status import outcome_of

Context = grpc.aio.ServicerContext[Any, Any]
SERVER_NAME = "axon"
EXTENSIONS = ("model_repository", "statistics")


def deadline_of(context: Context) -> float | None:
    """The call's deadline as a ``time.monotonic()`` instant (None: the caller set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def resolve(models: ModelManager, name: str, version: str) -> ServedModel:
    """The model version a request names; the call is labelled with it for the metrics -- with
    the name alone when a model the server knows cannot answer (unloaded, loading, no such
    version), so an outage of that model shows under its name."""
    if models.knows(name):
        attribute_call(name)
    model = models.get(name, version)
    attribute_call(model.name, model.version)
    return model


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: ModelManager, *, model_control: bool, max_stream_in_flight: int,
                 metrics: Metrics | None = None) -> None:
        self._models = models
        self._metrics = metrics
        self._model_control = model_control
        self._max_stream_in_flight = max_stream_in_flight
        self.ready = False
        """Set by the server once the models it was started with are loaded (by every worker
        of a worker group)."""
        self.group: WorkerGroup | None = None
        """Set in a worker of a worker group: statistics, the index and model control then
        speak for, and act on, every worker."""

    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: Context) -> pb.ModelReadyResponse:
        try:
            resolve(self._models, request.name, request.version)
        except InvalidInputError:
            raise
        except ServingError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: Context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__,
                                         extensions=EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: Context) -> pb.ModelMetadataResponse:
        model = resolve(self._models, request.name, request.version)
        runtime = model.runtime
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[str(m.version) for m in self._models.loaded(model.name)],
            platform=PLATFORM,
            inputs=[pb.ModelMetadataResponse.TensorMetadata(
                name=runtime.input.name, datatype=MODEL_DATATYPE,
                shape=(-1, *runtime.input.shape))],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(
                name=output.name, datatype=MODEL_DATATYPE, shape=(-1, *output.shape))
                for output in runtime.outputs],
            properties=_properties(model))

    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: Context) -> pb.ModelInferResponse:
        return await self._infer(request, deadline_of(context))

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[pb.ModelInferRequest],
                               context: Context) -> AsyncIterator[pb.ModelStreamInferResponse]:
        deadline = deadline_of(context)

        async def answer(request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
            outcome = await outcome_of(lambda: self._infer(request, deadline),
                                       "ModelStreamInfer", self._metrics, context)
            if outcome.result is not None:
                return pb.ModelStreamInferResponse(infer_response=outcome.result)
            return pb.ModelStreamInferResponse(
                error_message=f"{outcome.code.name}: {outcome.message}",
                infer_response=pb.ModelInferResponse(
                    model_name=request.model_name, model_version=request.model_version,
                    id=request.id))

        async for response in answer_concurrently(request_iterator, answer,
                                                  self._max_stream_in_flight):
            yield response

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest,
                              context: Context) -> pb.ModelStatisticsResponse:
        if self.group is not None:
            return pb.ModelStatisticsResponse.FromString(
                await self.group.statistics(request.name, request.version))
        return statistics_response(self._models, request.name, request.version)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest,
                              context: Context) -> pb.RepositoryIndexResponse:
        self._check_repository_name(request.repository_name)
        entries = await self.group.index() if self.group is not None else self._models.index()
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(name=entry.name, version=str(entry.version),
                                                  state=entry.state, reason=entry.reason)
            for entry in entries if entry.state == "READY" or not request.ready])

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Context) -> pb.RepositoryModelLoadResponse:
        self._check_model_control(request.repository_name, request.parameters)
        if self.group is not None:
            await self.group.load(request.model_name)
        else:
            await self._models.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Context) -> pb.RepositoryModelUnloadResponse:
        self._check_model_control(request.repository_name, request.parameters,
                                  allowed=("unload_dependents",))
        if self.group is not None:
            await self.group.unload(request.model_name)
        else:
            await self._models.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def _infer(self, request: pb.ModelInferRequest,
                     deadline: float | None) -> pb.ModelInferResponse:
        model = resolve(self._models, request.model_name, request.model_version)
        batch = request_batch(request, model)
        indexes = requested_outputs(request, model)
        outputs = await model.infer(batch, deadline)
        return infer_response(request, model, outputs, indexes)

    def _check_repository_name(self, name: str) -> None:
        served = self._models.repository.root.resolve().name
        if name and name != served:
            raise ModelNotFoundError(f"unknown repository {shown(name)}; this server serves "
                                     f"{served!r}")

    def _check_model_control(self, repository_name: str, parameters: Any,
                             allowed: tuple[str, ...] = ()) -> None:
        if not self._model_control:
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


def statistics_response(models: ModelManager, name: str,
                        version: str) -> pb.ModelStatisticsResponse:
    """This process's statistics of ``name`` (every model when empty), as the extension
    answers them."""
    if name:
        served = [models.get(name, version)] if version else models.loaded(name)
        if not served:
            models.get(name)  # raises the precise NOT_FOUND / UNAVAILABLE
    elif version:
        raise InvalidInputError("a version needs a model name")
    else:
        served = models.loaded()
    return pb.ModelStatisticsResponse(
        model_stats=[statistics_message(m.name, m.version, m.statistics) for m in served])


def statistics_message(name: str, version: int,
                       stats: ModelStatistics) -> pb.ModelStatistics:
    return pb.ModelStatistics(
        name=name, version=str(version), last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count, execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success), fail=_duration(stats.fail),
            queue=_duration(stats.queue), compute_input=_duration(stats.compute_input),
            compute_infer=_duration(stats.compute_infer),
            compute_output=_duration(stats.compute_output)),
        batch_stats=[pb.InferBatchStatistics(
            batch_size=size, compute_input=_duration(per_size.compute_input),
            compute_infer=_duration(per_size.compute_infer),
            compute_output=_duration(per_size.compute_output))
            for size, per_size in sorted(stats.batches.items())])


def _duration(duration: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=duration.count, ns=duration.ns)
