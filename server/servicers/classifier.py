"""Axon's classification API servicer (package ``axon.v1``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import Any

import grpc

from axon.protocol.v1 import classification_pb2 as pb
from axon.protocol.v1 import classification_pb2_grpc as pb_grpc
from axon.server.data_plane import resolve
from axon.server.errors import InvalidInputError
from axon.server.image_classification import (
    ImageFailure,
    ImageInput,
    ImageResult,
    RawPixels,
    classify,
)
from axon.server.metrics import Metrics
from axon.server.model_manager import ModelManager
from axon.server.served_model import ServedModel
from axon.server.servicers.inference import deadline_of
from axon.server.servicers.streams import answer_concurrently
from axon.server.status import outcome_of

Context = grpc.aio.ServicerContext[Any, Any]


class ClassifierServicer(pb_grpc.ClassifierServicer):
    def __init__(self, models: ModelManager, decoder: Executor, *, max_image_pixels: int,
                 max_image_bytes: int, max_stream_in_flight: int,
                 metrics: Metrics | None = None) -> None:
        self._models = models
        self._metrics = metrics
        self._decoder = decoder
        self._max_image_pixels = max_image_pixels
        self._max_image_bytes = max_image_bytes
        self._max_stream_in_flight = max_stream_in_flight

    async def Classify(self, request: pb.ClassifyRequest,
                       context: Context) -> pb.ClassifyResponse:
        return await self._classify(request, deadline_of(context))

    async def ClassifyStream(self, request_iterator: AsyncIterator[pb.ClassifyStreamRequest],
                             context: Context) -> AsyncIterator[pb.ClassifyStreamResponse]:
        deadline = deadline_of(context)

        async def answer(message: pb.ClassifyStreamRequest) -> pb.ClassifyStreamResponse:
            outcome = await outcome_of(lambda: self._classify(message.request, deadline),
                                       "ClassifyStream", self._metrics, context)
            if outcome.result is not None:
                return pb.ClassifyStreamResponse(id=message.id, response=outcome.result)
            code = outcome.code
            return pb.ClassifyStreamResponse(id=message.id, error=pb.Error(
                code=code.value[0], status=code.name, message=outcome.message))

        async for response in answer_concurrently(request_iterator, answer,
                                                  self._max_stream_in_flight):
            yield response

    async def ListModels(self, request: pb.ListModelsRequest,
                         context: Context) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[_description(m) for m in self._models.loaded()])

    async def _classify(self, request: pb.ClassifyRequest,
                        deadline: float | None) -> pb.ClassifyResponse:
        images = [_image(image, self._max_image_bytes) for image in request.images]
        model, results = await classify(
            lambda: self._model(request.model_name, request.model_version), images,
            request.top_k or 1, max_image_pixels=self._max_image_pixels,
            decoder=self._decoder, deadline=deadline,
            per_image_errors=request.per_image_errors)
        return pb.ClassifyResponse(
            model_name=model.name, model_version=str(model.version),
            results=[_classification(result) for result in results])

    def _model(self, name: str, version: str) -> ServedModel:
        if not name:
            loaded = self._models.loaded_names()
            if len(loaded) != 1:
                raise InvalidInputError("model_name is required when the server has "
                                        f"{len(loaded)} models loaded ({', '.join(loaded)})")
            name = loaded[0]
        return resolve(self._models, name, version)


def _classification(result: ImageResult) -> pb.ImageClassification:
    if isinstance(result, ImageFailure):
        return pb.ImageClassification(error=pb.Error(
            code=_INVALID.value[0], status=_INVALID.name, message=result.message))
    return pb.ImageClassification(classes=[
        pb.ClassScore(index=s.index, label=s.label, probability=s.probability) for s in result])


_INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _image(image: pb.Image, max_bytes: int) -> ImageInput | ImageFailure:
    """The image as the classifier takes it, or what is wrong with it (which fails the request,
    naming the image, unless it asked for per-image errors)."""
    source = image.WhichOneof("source")
    if source == "encoded":
        data = image.encoded  # (each read of a bytes field copies it)
        if len(data) <= max_bytes:
            return data
        problem = f"the image is {len(data):,} bytes; the limit is {max_bytes:,} " \
                  "(--max-image-bytes)"
    elif source == "pixels":
        pixels = image.pixels
        return RawPixels(pixels.height, pixels.width, pixels.channels, pixels.data)
    else:
        problem = "the image has neither encoded bytes nor pixels"
    return ImageFailure(problem)


def _description(model: ServedModel) -> pb.ModelDescription:
    spec = model.card.preprocessing
    return pb.ModelDescription(
        name=model.name, version=str(model.version), dataset=model.card.dataset,
        labels=model.card.labels, image_height=spec.height, image_width=spec.width,
        image_channels=spec.channels, test_accuracy=model.card.test_accuracy,
        execution_provider=model.provider, max_batch_size=model.batching.max_batch_size,
        max_queue_delay_ms=model.batching.max_queue_delay_ms)
