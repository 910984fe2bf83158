"""``AxonClient``: the blocking client, over one channel (the calls: clients/common.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
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


class _ClientTimeout:
    """The default of a per-call ``timeout``: the client's own."""


CLIENT_TIMEOUT = _ClientTimeout()


class AxonClient(ClientBase):
    """Blocking client over one channel; use as a context manager. The same methods as
    ``AsyncAxonClient``, returning what it awaits."""

    channel: grpc.Channel

    def _open_channel(self, security: ConnectionSecurity,
                      options: list[tuple[str, int | str]], warn: bool) -> grpc.Channel:
        return security.channel(self.address, options, warn=warn)

    def __enter__(self) -> AxonClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for channel in self.channels:
            channel.close()

    def ready(self) -> bool:
        """Whether the server reports ready (ServerReady)."""
        return self._run(SERVER_READY)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every connection is up and the server reports ready."""
        deadline = time.monotonic() + timeout
        for channel in self.channels:
            grpc.channel_ready_future(channel).result(max(0.0, deadline - time.monotonic()))
        if not self.ready():
            raise AxonClientError(grpc.StatusCode.UNAVAILABLE, "the server is not ready")

    def classify(self, images: Sequence[ImageSource], *, model: str = "", version: str = "",
                 top_k: int = 1) -> Classification:
        """The ``top_k`` classes of each image (PNG/JPEG bytes or uint8 pixels)."""
        return self._run(CLASSIFY, images, model, version, top_k)

    def classify_stream(self, requests: Iterator[tuple[str, cls.ClassifyRequest]], *,
                        timeout: float | _ClientTimeout | None = CLIENT_TIMEOUT,
                        ) -> Iterator[cls.ClassifyStreamResponse]:
        """Answers (in completion order) to ``(id, request)`` pairs sent on one stream.

        ``timeout`` bounds the whole stream (default: the client's timeout; None: no deadline,
        for streams as long as their input).
        """
        messages = (cls.ClassifyStreamRequest(id=i, request=r) for i, r in requests)
        deadline = self.timeout if isinstance(timeout, _ClientTimeout) else timeout
        try:
            yield from self._stub("classifier").ClassifyStream(messages, timeout=deadline,
                                                      metadata=self.metadata)
        except grpc.RpcError as error:
            raise client_error(error) from None

    def infer(self, model: str, batch: npt.NDArray[np.float32], *, version: str = "",
              outputs: Sequence[str] = ()) -> dict[str, npt.NDArray[np.float32]]:
        """Every requested output (default: all) for ``batch``, by name."""
        return self._run(INFER, model, batch, version, outputs)

    def health(self, service: str = "") -> str:
        """grpc.health.v1 status of the server (``""``) or of a model by name: ``SERVING``,
        ``NOT_SERVING``; NOT_FOUND (raised) for a name the server does not know."""
        return self._run(HEALTH, service)

    def model_metadata(self, model: str, version: str = "") -> oip.ModelMetadataResponse:
        return self._run(MODEL_METADATA, model, version)

    def models(self) -> list[cls.ModelDescription]:
        """Every loaded model version: labels, image size, provider, batching."""
        return self._run(MODELS)

    def repository_index(self, ready_only: bool = False,
                         ) -> list[oip.RepositoryIndexResponse.ModelIndex]:
        """Every version in the server's repository, with its state and the reason."""
        return self._run(REPOSITORY_INDEX, ready_only)

    def load_model(self, model: str) -> None:
        """(Re)load ``model`` from the repository (needs the admin role where tokens are on)."""
        self._run(LOAD_MODEL, model)

    def unload_model(self, model: str) -> None:
        """Stop serving ``model``; queued requests finish (admin role where tokens are on)."""
        self._run(UNLOAD_MODEL, model)

    def statistics(self, model: str = "", version: str = "") -> list[oip.ModelStatistics]:
        """The statistics extension's counts and times, per model version."""
        return self._run(STATISTICS, model, version)

    def _run(self, call: Call[ResultT], *args: object) -> ResultT:
        request = call.request(*args)
        deadline = self._deadline()
        pauses = retry_pauses(self.retry)
        while True:
            # A retry takes the next connection's turn: another worker, if its worker died.
            method = self._method(call)
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                return call.result(method(request, timeout=remaining, metadata=self.metadata))
            except grpc.RpcError as error:
                failure = client_error(error)
            pause = next(pauses, None)
            if not should_retry(failure, pause, deadline):
                raise failure
            time.sleep(pause or 0.0)
            self.retries += 1

