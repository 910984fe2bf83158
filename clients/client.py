"""A small typed client for Axon: classification and Open Inference Protocol calls.

Errors come back as ``AxonClientError`` carrying the server's ``grpc.StatusCode`` (an enum, not
a string) and its message. Unary calls that fail with UNAVAILABLE (server restarting, connection
lost), RESOURCE_EXHAUSTED (queue full) or CANCELLED by the server (a call caught by a shutdown)
are retried with exponential back-off and jitter, a
bounded number of times and never past the call's deadline (``RetryPolicy``); every Axon call is
safe to repeat (inference is stateless; loads and unloads are idempotent).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
from clients.security import NO_SECURITY, ConnectionSecurity

DEFAULT_MESSAGE_BYTES = 64 * 1024 * 1024
RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                       grpc.StatusCode.CANCELLED})
"""Transient codes. CANCELLED is among them because this client never cancels a unary call
itself: on one it comes from the server's side, as for a call that arrives while a server shuts
down (seen in CI during a restart), and every Axon call is safe to repeat."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often a unary call is tried, and how long to wait between tries."""

    attempts: int = 5
    """Tries in all (1: no retries)."""
    initial_backoff: float = 0.1
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("attempts must be at least 1 and back-offs not negative")


DEFAULT_RETRY = RetryPolicy()
NO_RETRIES = RetryPolicy(attempts=1)


def channel_options(max_message_bytes: int) -> list[tuple[str, int | str]]:
    """Options of every client channel: message limits both ways, and reconnecting to a lost
    server (a replica replaced on the same address) at least every 5 s rather than gRPC's
    default of up to 2 minutes."""
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5000)]


def retry_pauses(policy: RetryPolicy) -> Iterator[float]:
    """The waits before each retry of one call, as ``retry_pause`` draws them."""
    for retry in range(1, policy.attempts):
        yield retry_pause(policy, retry)


def retry_pause(policy: RetryPolicy, retry: int) -> float:
    """The wait before retry number ``retry`` (1, 2, ...): doubling up to the cap, drawn from
    its upper half so the callers of a restarted server come back spread out, not all at
    once."""
    backoff = min(policy.initial_backoff * 2 ** (retry - 1), policy.max_backoff)
    return random.uniform(backoff / 2, backoff)


def should_retry(failure: AxonClientError, pause: float | None,
                 deadline: float | None) -> bool:
    """Whether to try again after ``failure``: a transient code, a retry left (``pause``), and
    time for it before the call's deadline."""
    return failure.code in RETRYABLE and pause is not None and \
        (deadline is None or time.monotonic() + pause < deadline)


class AxonClientError(Exception):
    """A call that ended with a status other than OK."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class Classification:
    model_name: str
    model_version: str
    results: list[list[Prediction]]
    """Per image, the top-k classes, most probable first."""


ImageSource = bytes | npt.NDArray[np.uint8]
"""Encoded PNG/JPEG bytes, or uint8 pixels [H, W] or [H, W, C]."""


def image_message(image: ImageSource) -> cls.Image:
    if isinstance(image, bytes):
        return cls.Image(encoded=image)
    pixels = image if image.ndim == 3 else image[..., np.newaxis]
    height, width, channels = pixels.shape
    return cls.Image(pixels=cls.PixelTensor(height=height, width=width, channels=channels,
                                            data=np.ascontiguousarray(pixels).tobytes()))


def infer_request(model: str, batch: npt.NDArray[np.float32], *, version: str = "",
                  input_name: str = "input", outputs: Sequence[str] = (),
                  request_id: str = "") -> oip.ModelInferRequest:
    """A ModelInferRequest with ``batch`` as raw FP32 contents."""
    return oip.ModelInferRequest(
        model_name=model, model_version=version, id=request_id,
        inputs=[oip.ModelInferRequest.InferInputTensor(
            name=input_name, datatype="FP32", shape=batch.shape)],
        outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in outputs],
        raw_input_contents=[np.ascontiguousarray(batch, dtype="<f4").tobytes()])


def classify_request(images: Sequence[ImageSource], model: str, version: str,
                     top_k: int) -> cls.ClassifyRequest:
    return cls.ClassifyRequest(model_name=model, model_version=version, top_k=top_k,
                               images=[image_message(i) for i in images])


def classification_of(response: cls.ClassifyResponse) -> Classification:
    return Classification(response.model_name, response.model_version, [
        [Prediction(c.index, c.label, c.probability) for c in result.classes]
        for result in response.results])


def response_arrays(response: oip.ModelInferResponse) -> dict[str, npt.NDArray[np.float32]]:
    """Output name -> array, from a response's raw contents."""
    return {tensor.name: np.frombuffer(raw, dtype="<f4").reshape(tuple(tensor.shape))
            for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True)}


class _ClientTimeout:
    """The default of a per-call ``timeout``: the client's own."""


CLIENT_TIMEOUT = _ClientTimeout()


class AxonClient:
    """Blocking client over one channel; use as a context manager."""

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
        """Calls repeated so far (for logs and tests)."""
        self.metadata = security.metadata
        self.channel = security.channel(address, channel_options(max_message_bytes))
        self.inference = oip_grpc.GRPCInferenceServiceStub(self.channel)
        self.classifier = cls_grpc.ClassifierStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> AxonClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the channel connects and the server reports ready."""
        grpc.channel_ready_future(self.channel).result(timeout)
        if not self._call(self.inference.ServerReady, oip.ServerReadyRequest()).ready:
            raise AxonClientError(grpc.StatusCode.UNAVAILABLE, "the server is not ready")

    def classify(self, images: Sequence[ImageSource], *, model: str = "", version: str = "",
                 top_k: int = 1) -> Classification:
        response = self._call(self.classifier.Classify,
                              classify_request(images, model, version, top_k))
        return classification_of(response)

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
            yield from self.classifier.ClassifyStream(messages, timeout=deadline,
                                                      metadata=self.metadata)
        except grpc.RpcError as error:
            raise client_error(error) from None

    def infer(self, model: str, batch: npt.NDArray[np.float32], *, version: str = "",
              outputs: Sequence[str] = ()) -> dict[str, npt.NDArray[np.float32]]:
        response = self._call(
            self.inference.ModelInfer,
            infer_request(model, batch, version=version, outputs=outputs))
        return response_arrays(response)

    def health(self, service: str = "") -> str:
        """grpc.health.v1 status of the server (``""``) or of a model by name: ``SERVING``,
        ``NOT_SERVING``; NOT_FOUND (raised) for a name the server does not know."""
        response = self._call(self.health_stub.Check,
                              health_pb2.HealthCheckRequest(service=service))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def model_metadata(self, model: str, version: str = "") -> oip.ModelMetadataResponse:
        return self._call(self.inference.ModelMetadata,
                          oip.ModelMetadataRequest(name=model, version=version))

    def models(self) -> list[cls.ModelDescription]:
        response = self._call(self.classifier.ListModels, cls.ListModelsRequest())
        return list(response.models)

    def repository_index(self, ready_only: bool = False,
                         ) -> list[oip.RepositoryIndexResponse.ModelIndex]:
        """Every version in the server's repository, with its state and the reason."""
        response = self._call(self.inference.RepositoryIndex,
                              oip.RepositoryIndexRequest(ready=ready_only))
        return list(response.models)

    def load_model(self, model: str) -> None:
        """(Re)load ``model`` from the repository (needs the admin role where tokens are on)."""
        self._call(self.inference.RepositoryModelLoad,
                   oip.RepositoryModelLoadRequest(model_name=model))

    def unload_model(self, model: str) -> None:
        """Stop serving ``model``; queued requests finish (admin role where tokens are on)."""
        self._call(self.inference.RepositoryModelUnload,
                   oip.RepositoryModelUnloadRequest(model_name=model))

    def statistics(self, model: str = "", version: str = "") -> list[oip.ModelStatistics]:
        response = self._call(
            self.inference.ModelStatistics,
            oip.ModelStatisticsRequest(name=model, version=version))
        return list(response.model_stats)

    def _call(self, method: grpc.UnaryUnaryMultiCallable[RequestT, ResponseT],
              request: RequestT) -> ResponseT:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        pauses = retry_pauses(self.retry)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                return method(request, timeout=remaining, metadata=self.metadata)
            except grpc.RpcError as error:
                failure = client_error(error)
            pause = next(pauses, None)
            if not should_retry(failure, pause, deadline):
                raise failure
            time.sleep(pause or 0.0)
            self.retries += 1


def client_error(error: grpc.RpcError) -> AxonClientError:
    """The client exception for a failed call, keeping its status code (from a blocking call's
    ``grpc.Call`` or an asyncio call's ``AioRpcError``)."""
    if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        return AxonClientError(error.code(), error.details() or "")
    return AxonClientError(grpc.StatusCode.UNKNOWN, str(error))
