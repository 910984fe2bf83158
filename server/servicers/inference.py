"""The Open Inference Protocol servicer (package ``inference``), with Triton's extensions:
protobuf in and out around the data plane (server/data_plane.py) and the tensor rules
(server/tensors.py)."""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import grpc
import numpy as np

from axon import __version__
from axon.protocol import open_inference_pb2 as pb
from axon.protocol import open_inference_pb2_grpc as pb_grpc
from axon.server.batching import Array
from axon.server.data_plane import EXTENSIONS, SERVER_NAME, DataPlane, resolve
from axon.server.infer_requests import SplitRequest
from axon.server.metrics import Metrics
from axon.server.served_model import OutputChoice, ServedModel
from axon.server.servicers.streams import answer_concurrently
from axon.server.servicers.tensors import (
    infer_response,
    request_batch,
    request_deadline,
    requested_outputs,
    stream_response,
)
from axon.server.status import outcome_of
from axon.server.tensors import WIRE_FP32, earliest

Context = grpc.aio.ServicerContext[Any, Any]


def deadline_of(context: Context) -> float | None:
    """The call's deadline as a ``time.monotonic()`` instant (None: the caller set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane, *, max_stream_in_flight: int = 256,
                 metrics: Metrics | None = None) -> None:
        self._plane = plane
        self._metrics = metrics
        self._max_stream_in_flight = max_stream_in_flight

    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: Context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._plane.model_ready(request.name,
                                                                   request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: Context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__,
                                         extensions=EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: Context) -> pb.ModelMetadataResponse:
        metadata = self._plane.model_metadata(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=metadata.name, versions=metadata.versions, platform=metadata.platform,
            inputs=[pb.ModelMetadataResponse.TensorMetadata(
                name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.inputs],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(
                name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.outputs],
            properties=metadata.properties)

    async def ModelConfig(self, request: pb.ModelConfigRequest,
                          context: Context) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self._plane.model_config(request.name,
                                                                      request.version))

    # The two inference methods answer with the response already serialized (see
    # server/wire.py; app.py registers them to send bytes as they are), which the generated
    # base class's annotations do not foresee.
    async def ModelInfer(  # type: ignore[override]
            self, request: pb.ModelInferRequest | SplitRequest, context: Context) -> bytes:
        # The body of ``_infer``, not a call to it: a coroutine less per request. A split
        # request has no id (server/infer_requests.py).
        model, batch, choices, deadline = self._prepare(request, deadline_of(context))
        request_id = "" if isinstance(request, SplitRequest) else request.id
        return infer_response(request_id, model, await model.infer(batch, deadline), choices)

    async def ModelStreamInfer(  # type: ignore[override]
            self, request_iterator: AsyncIterator[pb.ModelInferRequest],
            context: Context) -> AsyncIterator[bytes]:
        deadline = deadline_of(context)

        async def answer(request: pb.ModelInferRequest) -> bytes:
            outcome = await outcome_of(lambda: self._infer(request, deadline),
                                       "ModelStreamInfer", self._metrics, context)
            if outcome.result is not None:
                return stream_response(outcome.result)
            return pb.ModelStreamInferResponse(
                error_message=f"{outcome.code.name}: {outcome.message}",
                infer_response=pb.ModelInferResponse(
                    model_name=request.model_name, model_version=request.model_version,
                    id=request.id)).SerializeToString()

        async for response in answer_concurrently(request_iterator, answer,
                                                  self._max_stream_in_flight):
            yield response

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest,
                              context: Context) -> pb.ModelStatisticsResponse:
        return pb.ModelStatisticsResponse(
            model_stats=await self._plane.statistics(request.name, request.version))

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest,
                              context: Context) -> pb.RepositoryIndexResponse:
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(name=entry.name, version=str(entry.version),
                                                  state=entry.state, reason=entry.reason)
            for entry in await self._plane.repository_index(request.repository_name,
                                                             request.ready)])

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Context) -> pb.RepositoryModelLoadResponse:
        await self._plane.load(request.model_name, request.repository_name, request.parameters)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Context) -> pb.RepositoryModelUnloadResponse:
        await self._plane.unload(request.model_name, request.repository_name,
                                 request.parameters)
        return pb.RepositoryModelUnloadResponse()

    async def _infer(self, request: pb.ModelInferRequest, deadline: float | None) -> bytes:
        model, batch, choices, deadline = self._prepare_message(request, deadline)
        return infer_response(request.id, model, await model.infer(batch, deadline), choices)

    def _prepare(self, request: pb.ModelInferRequest | SplitRequest, deadline: float | None
                 ) -> Prepared:
        """The model, input, outputs asked for and deadline of ``request``, all checked.

        A split request's head was checked against the same model version by an earlier
        request with the same head: only its input's length and values are left to check.
        Otherwise the request is checked whole, and what its head asks is kept for the next.
        """
        if not isinstance(request, SplitRequest):
            return self._prepare_message(request, deadline)
        head = request.head
        model = resolve(self._plane.models, head.model_name, head.model_version)
        checked: _CheckedHead | None = head.checked
        if checked is not None and checked.model() is model \
                and len(request.raw) == checked.raw_bytes:
            # A view of gRPC's bytes, unaligned for float32 wherever the head's length leaves
            # the raw contents: nothing downstream needs them aligned (ServedModel.check_values).
            batch: Array = np.frombuffer(request.raw, dtype=WIRE_FP32).reshape(checked.shape)
            model.check_values(batch)
            if checked.has_parameters:
                deadline = earliest(deadline, request_deadline(head.message, time.monotonic()))
            return model, batch, checked.choices, deadline
        prepared = self._prepare_message(request.whole(), deadline)
        model, batch, choices = prepared[:3]
        head.checked = _CheckedHead(weakref.ref(model), batch.shape, len(request.raw), choices,
                                    bool(head.message.parameters))
        return prepared

    def _prepare_message(self, request: pb.ModelInferRequest, deadline: float | None
                         ) -> Prepared:
        model = resolve(self._plane.models, request.model_name, request.model_version)
        batch = request_batch(request, model)
        choices = requested_outputs(request, model)
        if request.parameters:
            deadline = earliest(deadline, request_deadline(request, time.monotonic()))
        return model, batch, choices, deadline


Prepared = tuple[ServedModel, Array, tuple[OutputChoice, ...], float | None]
"""A request's model version, input, outputs asked for and deadline."""


class _CheckedHead(NamedTuple):
    """What a request head asks of the model version it was checked against."""

    model: weakref.ref[ServedModel]
    """Weak: a head kept by the parser must not keep an unloaded model's session alive."""
    shape: tuple[int, ...]
    raw_bytes: int
    choices: tuple[OutputChoice, ...]
    has_parameters: bool
    """A timeout may be among them: the deadline is worked out per request."""
