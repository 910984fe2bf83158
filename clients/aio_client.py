"""The asyncio twin of ``AxonClient``: the same calls, results, errors and retries, awaited.

For callers that already run an event loop (web services, pipelines fanning out many images):
calls from many tasks share one channel, and ``classify_stream`` keeps at most ``window``
requests of a stream unanswered, so a fast producer waits instead of filling memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from axon.protocol import open_inference_pb2 as oip
from axon.protocol import open_inference_pb2_grpc as oip_grpc
from axon.protocol.v1 import classification_pb2 as cls
from axon.protocol.v1 import classification_pb2_grpc as cls_grpc
from clients.client import (
    DEFAULT_MESSAGE_BYTES,
    DEFAULT_RETRY,
    Classification,
    ImageSource,
    RetryPolicy,
    channel_options,
    classification_of,
    classify_request,
    client_error,
    infer_request,
    response_arrays,
    retry_pauses,
    should_retry,
)
from clients.security import NO_SECURITY, ConnectionSecurity

ResponseT = TypeVar("ResponseT")


class AsyncAxonClient:
    """Asyncio client over one channel; use as an async context manager."""

    def __init__(self, address: str, *, timeout: float | None = 30.0,
                 max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
                 retry: RetryPolicy = DEFAULT_RETRY,
                 security: ConnectionSecurity = NO_SECURITY) -> None:
        """``timeout``: each call's deadline in seconds, retries included (None: none);
        ``security``: TLS, client certificate and token (default: plain text, no token)."""
        self.address = address
        self.timeout = timeout
        self.retry = retry
        self.retries = 0
        self.metadata = security.metadata
        self.channel = security.aio_channel(address, channel_options(max_message_bytes))
        self.inference = oip_grpc.GRPCInferenceServiceStub(self.channel)
        self.classifier = cls_grpc.ClassifierStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    async def __aenter__(self) -> AsyncAxonClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def ready(self) -> bool:
        """Whether the server reports ready (ServerReady)."""
        response = await self._call(lambda timeout: self.inference.ServerReady(
            oip.ServerReadyRequest(), timeout=timeout, metadata=self.metadata))
        return response.ready

    async def classify(self, images: Sequence[ImageSource], *, model: str = "",
                       version: str = "", top_k: int = 1) -> Classification:
        request = classify_request(images, model, version, top_k)
        response = await self._call(
            lambda timeout: self.classifier.Classify(request, timeout=timeout,
                                                     metadata=self.metadata))
        return classification_of(response)

    async def infer(self, model: str, batch: npt.NDArray[np.float32], *, version: str = "",
                    outputs: Sequence[str] = ()) -> dict[str, npt.NDArray[np.float32]]:
        request = infer_request(model, batch, version=version, outputs=outputs)
        response = await self._call(
            lambda timeout: self.inference.ModelInfer(request, timeout=timeout,
                                                      metadata=self.metadata))
        return response_arrays(response)

    async def health(self, service: str = "") -> str:
        """grpc.health.v1 status of the server (``""``) or of a model by name: ``SERVING``,
        ``NOT_SERVING``; NOT_FOUND (raised) for a name the server does not know."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._call(lambda timeout: self.health_stub.Check(
            request, timeout=timeout, metadata=self.metadata))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    async def model_metadata(self, model: str, version: str = "") -> oip.ModelMetadataResponse:
        request = oip.ModelMetadataRequest(name=model, version=version)
        return await self._call(
            lambda timeout: self.inference.ModelMetadata(request, timeout=timeout,
                                                         metadata=self.metadata))

    async def models(self) -> list[cls.ModelDescription]:
        response = await self._call(lambda timeout: self.classifier.ListModels(
            cls.ListModelsRequest(), timeout=timeout, metadata=self.metadata))
        return list(response.models)

    async def classify_stream(self, requests: AsyncIterable[tuple[str, cls.ClassifyRequest]], *,
                              window: int = 64, timeout: float | None = None,
                              ) -> AsyncIterator[cls.ClassifyStreamResponse]:
        """Answers (in completion order) to ``(id, request)`` pairs sent on one stream, with
        at most ``window`` sent and not yet answered. ``timeout`` bounds the whole stream
        (default: none, for streams as long as their input)."""
        if window < 1:
            raise ValueError("window must be at least 1")
        slots = asyncio.Semaphore(window)
        call = self.classifier.ClassifyStream(timeout=timeout, metadata=self.metadata)

        async def send() -> None:
            async for request_id, request in requests:
                await slots.acquire()
                await call.write(cls.ClassifyStreamRequest(id=request_id, request=request))
            await call.done_writing()

        sender = asyncio.create_task(send())
        try:
            async for answer in call:
                slots.release()
                yield answer
            await sender  # re-raises what ended the sending, if anything did
        except grpc.RpcError as error:
            raise client_error(error) from None
        finally:
            sender.cancel()
            call.cancel()

    async def _call(self, attempt: Callable[[float | None], Awaitable[ResponseT]]) -> ResponseT:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        pauses = retry_pauses(self.retry)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                return await attempt(remaining)
            except grpc.RpcError as error:
                failure = client_error(error)
            pause = next(pauses, None)
            if not should_retry(failure, pause, deadline):
                raise failure
            await asyncio.sleep(pause or 0.0)
            self.retries += 1
