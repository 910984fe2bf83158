"""What Axon's two clients share: errors, retries, requests and results, and the calls
themselves -- each defined once, as a ``Call`` (the stub method, how to build its request,
what to return from its response), which ``AxonClient`` runs blocking and
``AsyncAxonClient`` awaits.

Errors come back as ``AxonClientError`` carrying the server's ``grpc.StatusCode`` (an enum, not
a string) and its message. Unary calls that fail with UNAVAILABLE (server restarting, connection
lost), RESOURCE_EXHAUSTED (queue full) or CANCELLED by the server (a call caught by a shutdown)
are retried with exponential back-off and jitter, a bounded number of times and never past the
call's deadline (``RetryPolicy``); every Axon call is safe to repeat (inference is stateless;
loads and unloads are idempotent).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from axon.client.security import NO_SECURITY, ConnectionSecurity
from axon.protocol import open_inference_pb2 as oip
from axon.protocol import open_inference_pb2_grpc as oip_grpc
from axon.protocol.v1 import classification_pb2 as cls
from axon.protocol.v1 import classification_pb2_grpc as cls_grpc

if TYPE_CHECKING:
    # numpy is imported where arrays are made: `axon classify` sends files and never needs it.
    import numpy as np
    import numpy.typing as npt

DEFAULT_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_CONNECTIONS = 4
"""Connections a client opens by default (``connections``; measured in docs/performance.md)."""
RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
ResultT = TypeVar("ResultT")


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
    return failure.code in RETRYABLE and not too_large(failure) and pause is not None and \
        (deadline is None or time.monotonic() + pause < deadline)


def too_large(failure: AxonClientError) -> bool:
    """A message over a size limit (gRPC's RESOURCE_EXHAUSTED, "Sent message larger than max"
    on this side, "Received ..." on the server's): the same message would fail again."""
    return failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED and \
        "message larger than max" in failure.message


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


ImageSource: TypeAlias = "bytes | npt.NDArray[np.uint8]"
"""Encoded PNG/JPEG bytes, or uint8 pixels [H, W] or [H, W, C]."""


def image_message(image: ImageSource) -> cls.Image:
    import numpy as np

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
    import numpy as np

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
    import numpy as np

    return {tensor.name: np.frombuffer(raw, dtype="<f4").reshape(tuple(tensor.shape))
            for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True)}


def client_error(error: grpc.RpcError) -> AxonClientError:
    """The client exception for a failed call, keeping its status code (from a blocking call's
    ``grpc.Call`` or an asyncio call's ``AioRpcError``)."""
    if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        return AxonClientError(error.code(), error.details() or "")
    return AxonClientError(grpc.StatusCode.UNKNOWN, str(error))


@dataclass(frozen=True)
class Call(Generic[ResultT]):
    """One unary call of the API: which stub method, its request from the caller's arguments,
    and the result from its response."""

    service: str
    """``inference``, ``classifier`` or ``health``: the client's stub attribute."""
    method: str
    request: Callable[..., Any]
    result: Callable[[Any], ResultT]


def _same(response: Any) -> Any:
    return response


SERVER_READY: Call[bool] = Call("inference", "ServerReady", oip.ServerReadyRequest,
                                lambda response: bool(response.ready))
CLASSIFY: Call[Classification] = Call(
    "classifier", "Classify",
    lambda images, model="", version="", top_k=1: classify_request(images, model, version,
                                                                   top_k),
    classification_of)
INFER: Call[dict[str, npt.NDArray[np.float32]]] = Call(
    "inference", "ModelInfer",
    lambda model, batch, version="", outputs=(): infer_request(model, batch, version=version,
                                                               outputs=outputs),
    response_arrays)
HEALTH: Call[str] = Call(
    "health", "Check", lambda service="": health_pb2.HealthCheckRequest(service=service),
    lambda response: str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)))
MODEL_METADATA: Call[oip.ModelMetadataResponse] = Call(
    "inference", "ModelMetadata",
    lambda model, version="": oip.ModelMetadataRequest(name=model, version=version), _same)
MODELS: Call[list[cls.ModelDescription]] = Call(
    "classifier", "ListModels", cls.ListModelsRequest,
    lambda response: list(response.models))
REPOSITORY_INDEX: Call[list[oip.RepositoryIndexResponse.ModelIndex]] = Call(
    "inference", "RepositoryIndex",
    lambda ready_only=False: oip.RepositoryIndexRequest(ready=ready_only),
    lambda response: list(response.models))
LOAD_MODEL: Call[None] = Call(
    "inference", "RepositoryModelLoad",
    lambda model: oip.RepositoryModelLoadRequest(model_name=model), lambda response: None)
UNLOAD_MODEL: Call[None] = Call(
    "inference", "RepositoryModelUnload",
    lambda model: oip.RepositoryModelUnloadRequest(model_name=model), lambda response: None)
STATISTICS: Call[list[oip.ModelStatistics]] = Call(
    "inference", "ModelStatistics",
    lambda model="", version="": oip.ModelStatisticsRequest(name=model, version=version),
    lambda response: list(response.model_stats))


class ClientBase:
    """What both clients are constructed with and keep: the address, deadline, retries,
    security, the channel (each opens its own kind) and the stubs on it."""

    def __init__(self, address: str, *, timeout: float | None = 30.0,
                 max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
                 retry: RetryPolicy = DEFAULT_RETRY,
                 security: ConnectionSecurity = NO_SECURITY,
                 connections: int = DEFAULT_CONNECTIONS) -> None:
        """``timeout``: each call's deadline in seconds, retries included (None: none);
        ``security``: TLS, client certificate and token (default: plain text, no token);
        ``connections``: HTTP/2 connections to open, calls taking turns over them (a server of
        several worker processes gets each connection's calls in one worker)."""
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.address = address
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self.retry = retry
        self.retries = 0
        """Calls repeated so far (for logs and tests)."""
        self.metadata = security.metadata
        options = channel_options(max_message_bytes)
        # gRPC shares one connection among channels with the same options: each gets its own.
        self.channels = [self._open_channel(security, [*options, ("axon.connection", number)],
                                            warn=number == 0)
                         for number in range(connections)]
        self.channel = self.channels[0]
        self._stubs = [{"inference": oip_grpc.GRPCInferenceServiceStub(channel),
                        "classifier": cls_grpc.ClassifierStub(channel),
                        "health": health_pb2_grpc.HealthStub(channel)}
                       for channel in self.channels]
        self._turns = itertools.cycle(self._stubs)
        self.inference = self._stubs[0]["inference"]
        self.classifier = self._stubs[0]["classifier"]
        self.health_stub = self._stubs[0]["health"]

    def _open_channel(self, security: ConnectionSecurity,
                      options: list[tuple[str, int | str]], warn: bool) -> Any:
        raise NotImplementedError

    def _method(self, call: Call[Any]) -> Any:
        """``call``'s stub method on the connection whose turn it is."""
        return getattr(self._stub(call.service), call.method)

    def _stub(self, service: str) -> Any:
        """The stub of ``service`` on the connection whose turn it is."""
        return next(self._turns)[service]

    def _deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout
