"""The HTTP transport edge: the one place where an HTTP request is routed, authorised,
admitted, counted, given its body and answered -- with an error mapped through the same table
as gRPC's when anything fails (server/status.py, server/http/status.py).

It knows no HTTP server: the server adapter (server/http/server.py) hands it the request line,
the headers and a ``BodyReader``, and writes back the ``HttpResponse``. Order matters and is
gRPC's: a route that does not exist or a caller without a valid token is refused before the body
is read or the call counted against --max-concurrent-rpcs; the size a body declares is checked
before a byte of it is read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc
import orjson

from axon.server.auth import TokenAuthenticator
from axon.server.drain import Drain
from axon.server.errors import ServingError
from axon.server.http.router import Body, HttpRequest, HttpResponse, Route, Router
from axon.server.http.status import (
    BodyTooLargeError,
    HttpError,
    MethodNotAllowedError,
    UnsupportedMediaTypeError,
    http_status,
    status_for,
)
from axon.server.metrics import Metrics
from axon.server.status import status_of

log = logging.getLogger(__name__)

JSON_BODY_BYTES = 64 * 1024
"""The most a control request (repository index, load, unload) may send."""
_FORM = "application/x-www-form-urlencoded"  # curl -d's default: a JSON body, mislabelled
ACCEPTED_TYPES: dict[Body, frozenset[str]] = {
    "none": frozenset(),
    # (aiohttp's client labels any bytes it sends octet-stream: tritonclient's asyncio client)
    "json": frozenset({"", "application/json", "application/octet-stream", _FORM}),
    "tensor": frozenset({"", "application/json", "application/octet-stream", _FORM}),
    "image": frozenset({"", "image/png", "image/jpeg", "application/octet-stream"}),
}
ACCEPTED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})
"""Request bodies may come compressed (tritonclient's request_compression_algorithm); the
size limits apply to the decompressed bytes."""
_HINTS: dict[Body, str] = {
    "tensor": "; send images to /v2/models/NAME/classify",
    "image": "; send tensors to /v2/models/NAME/infer",
}


class BodyReader(Protocol):
    """The request's body, as the server adapter reads it."""

    @property
    def declared(self) -> int | None:
        """The length the request declares (Content-Length); None if it declares none."""

    @property
    def present(self) -> bool:
        """Whether the request carries a body at all."""

    async def read(self, limit: int) -> bytes:
        """The whole body; BodyTooLargeError past ``limit`` bytes (decompressed),
        BodyTimeoutError if it does not arrive in time."""


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int
    max_image_bytes: int

    def of(self, body: Body) -> int:
        if body == "json":
            return min(JSON_BODY_BYTES, self.max_message_bytes)
        if body == "image":
            return min(self.max_image_bytes, self.max_message_bytes)
        return self.max_message_bytes


class HttpEdge:
    def __init__(self, router: Router, drain: Drain, limits: Limits, *,
                 metrics: Metrics | None = None,
                 authenticator: TokenAuthenticator | None = None) -> None:
        self._router = router
        self._drain = drain
        self._limits = limits
        self._metrics = metrics
        self._authenticator = authenticator

    async def answer(self, method: str, raw_path: str, query: Mapping[str, str],
                     headers: Mapping[str, str], body: BodyReader) -> HttpResponse:
        started = time.monotonic()
        try:
            route, params = self._router.match(method, raw_path)
        except ServingError as error:
            return error_response(error, close=body.present)
        if not route.open and self._authenticator is not None:
            refused = self._authenticator.refusal(
                route.rpc, [("authorization", headers.get("Authorization", ""))])
            if refused is not None:
                response = error_json(status_for(refused[0]), refused[1], close=body.present)
                if refused[0] is grpc.StatusCode.UNAUTHENTICATED:
                    response.headers["WWW-Authenticate"] = "Bearer"
                return response
        metrics = self._metrics
        call = None if metrics is None else metrics.begin(route.name, "http")
        code = grpc.StatusCode.OK
        admitted = False
        read = False
        try:
            if not route.open:
                self._drain.enter()
                admitted = True
            data = b""
            if route.body != "none":
                self._check_body(route, headers, body)
                data = await body.read(self._limits.of(route.body))
                read = True
            return await route.handler(HttpRequest(params, query, headers, data, started))
        except asyncio.CancelledError:  # the client went away
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as error:  # the edge: every error becomes a status here
            code, message = status_of(error, route.rpc)
            status = http_status(error) if isinstance(error, ServingError) else 500
            response = error_json(status, message, close=body.present and not read)
            response.abort = isinstance(error, HttpError) and error.abort
            return response
        finally:
            if admitted:
                self._drain.exit()
            if call is not None and metrics is not None:
                metrics.end(call, code.name)

    def _check_body(self, route: Route, headers: Mapping[str, str], body: BodyReader) -> None:
        limit = self._limits.of(route.body)
        if body.declared is not None and body.declared > limit:
            raise BodyTooLargeError(f"the body is {body.declared:,} bytes; {route.name} takes "
                                    f"at most {limit:,}" + _limit_hint(route.body))
        kind = headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if kind not in ACCEPTED_TYPES[route.body]:
            accepted = ", ".join(sorted(t for t in ACCEPTED_TYPES[route.body] if t))
            raise UnsupportedMediaTypeError(f"content type {kind!r} is not accepted here; "
                                            f"use {accepted}" + _HINTS.get(route.body, ""))
        encoding = headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ACCEPTED_ENCODINGS:
            raise UnsupportedMediaTypeError(f"content encoding {encoding!r} is not accepted; "
                                            "use gzip, deflate or none")


def _limit_hint(body: Body) -> str:
    return {"tensor": " (--max-message-bytes)", "image": " (--max-image-bytes)"}.get(body, "")


def error_json(status: int, message: str, *, close: bool = False) -> HttpResponse:
    """The error body every HTTP error has: ``{"error": message}``."""
    return HttpResponse(orjson.dumps({"error": message}), status, close=close)


def error_response(error: ServingError, *, close: bool = False) -> HttpResponse:
    response = error_json(http_status(error), str(error), close=close)
    if isinstance(error, MethodNotAllowedError):
        response.headers["Allow"] = ", ".join(error.allowed)
    return response

