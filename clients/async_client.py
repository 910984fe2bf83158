"""``AsyncAxonClient``: the asyncio twin of ``AxonClient`` -- the same methods, results, errors
and retries, awaited (the calls: clients/common.py).

For callers that already run an event loop (web services, pipelines fanning out many images):
calls from many tasks share one channel, and ``classify_stream`` keeps at most ``window``
requests of a stream unanswered, so a fast producer waits instead of filling memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import grpc

from axon.client.common import (
    CLASSIFY,
    HEALTH,
    INFER,
    LOAD_MODEL,
    MODEL_METADATA,
    MODELS,
    REPOSITORY_INDEX,
    SERVER_READY,
    STATISTICS,
    UNLOAD_MODEL,
    AxonClientError,
    Call,
    Classification,
    ClientBase,
    ImageSource,
    ResultT,
    client_error,
    retry_pauses,
    should_retry,
)
from axon.client.security import ConnectionSecurity
from axon.protocol import open_inference_pb2 as oip
from axon.protocol.v1 import classification_pb2 as cls

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class AsyncAxonClient(ClientBase):
    """Asyncio client over one channel; use as an async context manager."""

    channel: grpc.aio.Channel

    def _open_channel(self, security: ConnectionSecurity,
                      options: list[tuple[str, int | str]], warn: bool) -> grpc.aio.Channel:
        return security.aio_channel(self.address, options, warn=warn)

    async def __aenter__(self) -> AsyncAxonClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels))

    async def ready(self) -> bool:
        """Whether the server reports ready (ServerReady)."""
        return await self._run(SERVER_READY)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every connection is up and the server reports ready."""
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in self.channels)),
                               timeout)
        if not await self.ready():
            raise AxonClientError(grpc.StatusCode.UNAVAILABLE, "the server is not ready")

    async def classify(self, images: Sequence[ImageSource], *, model: str = "",
                       version: str = "", top_k: int = 1) -> Classification:
        """The ``top_k`` classes of each image (PNG/JPEG bytes or uint8 pixels)."""
        return await self._run(CLASSIFY, images, model, version, top_k)

    async def classify_stream(self, requests: AsyncIterable[tuple[str, cls.ClassifyRequest]], *,
                              window: int = 64, timeout: float | None = None,
                              ) -> AsyncIterator[cls.ClassifyStreamResponse]:
        """Answers (in completion order) to ``(id, request)`` pairs sent on one stream, with
        at most ``window`` sent and not yet answered. ``timeout`` bounds the whole stream
        (default: none, for streams as long as their input)."""
        if window < 1:
            raise ValueError("window must be at least 1")
        slots = asyncio.Semaphore(window)
        call = self._stub("classifier").ClassifyStream(timeout=timeout,
                                                         metadata=self.metadata)

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

    async def infer(self, model: str, batch: npt.NDArray[np.float32], *, version: str = "",
                    outputs: Sequence[str] = ()) -> dict[str, npt.NDArray[np.float32]]:
        """Every requested output (default: all) for ``batch``, by name."""
        return await self._run(INFER, model, batch, version, outputs)

    async def health(self, service: str = "") -> str:
        """grpc.health.v1 status of the server (``""``) or of a model by name: ``SERVING``,
        ``NOT_SERVING``; NOT_FOUND (raised) for a name the server does not know."""
        return await self._run(HEALTH, service)

    async def model_metadata(self, model: str, version: str = "") -> oip.ModelMetadataResponse:
        return await self._run(MODEL_METADATA, model, version)

    async def models(self) -> list[cls.ModelDescription]:
        """Every loaded model version: labels, image size, provider, batching."""
        return await self._run(MODELS)

    async def repository_index(self, ready_only: bool = False,
                               ) -> list[oip.RepositoryIndexResponse.ModelIndex]:
        """Every version in the server's repository, with its state and the reason."""
        return await self._run(REPOSITORY_INDEX, ready_only)

    async def load_model(self, model: str) -> None:
        """(Re)load ``model`` from the repository (needs the admin role where tokens are on)."""
        await self._run(LOAD_MODEL, model)

    async def unload_model(self, model: str) -> None:
        """Stop serving ``model``; queued requests finish (admin role where tokens are on)."""
        await self._run(UNLOAD_MODEL, model)

    async def statistics(self, model: str = "", version: str = "",
                         ) -> list[oip.ModelStatistics]:
        """The statistics extension's counts and times, per model version."""
        return await self._run(STATISTICS, model, version)

    async def _run(self, call: Call[ResultT], *args: object) -> ResultT:
        request = call.request(*args)
        deadline = self._deadline()
        pauses = retry_pauses(self.retry)
        while True:
            # A retry takes the next connection's turn: another worker, if its worker died.
            method = self._method(call)
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                return call.result(await method(request, timeout=remaining,
                                                metadata=self.metadata))
            except grpc.RpcError as error:
                failure = client_error(error)
            pause = next(pauses, None)
            if not should_retry(failure, pause, deadline):
                raise failure
            await asyncio.sleep(pause or 0.0)
            self.retries += 1
