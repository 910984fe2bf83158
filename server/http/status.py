"""HTTP statuses from the one error table (server/errors.py, server/status.py): every
``grpc.StatusCode`` maps to one HTTP status, so an error means the same whichever protocol
carried the request. The few errors that only HTTP has (a route that does not exist, a body too
large or too slow) carry their own HTTP status next to the gRPC code they are counted under.

FAILED_PRECONDITION maps to 400, as google.rpc.Code documents and gRPC-HTTP gateways (grpc-
gateway, Envoy's transcoder) do, not to 412: RFC 9110 defines 412 for conditional request
headers (If-Match, If-Unmodified-Since), which Axon does not implement, and a cache or client
reading 412 as "your copy is stale" would be misled. The body's message says what failed (a
model that cannot load, model control switched off).
"""

from __future__ import annotations

from typing import ClassVar

import grpc

from axon.server.errors import ServingError

CODE = grpc.StatusCode
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    CODE.OK: 200,
    CODE.CANCELLED: 499,  # the caller went away: nginx's "client closed request"
    CODE.UNKNOWN: 500,
    CODE.INVALID_ARGUMENT: 400,
    CODE.DEADLINE_EXCEEDED: 504,
    CODE.NOT_FOUND: 404,
    CODE.ALREADY_EXISTS: 409,
    CODE.PERMISSION_DENIED: 403,
    CODE.RESOURCE_EXHAUSTED: 429,
    CODE.FAILED_PRECONDITION: 400,
    CODE.ABORTED: 409,
    CODE.OUT_OF_RANGE: 400,
    CODE.UNIMPLEMENTED: 501,
    CODE.INTERNAL: 500,
    CODE.UNAVAILABLE: 503,
    CODE.DATA_LOSS: 500,
    CODE.UNAUTHENTICATED: 401,
}


class HttpError(ServingError):
    """An error of the HTTP transport itself; ``http_status`` refines the table's status."""

    http_status: ClassVar[int] = 400
    abort: bool = False
    """Close the connection as soon as the answer is written: what is left of the body is not
    worth reading (too slow, broken, or past the limit while it was being read)."""


class RouteNotFoundError(HttpError):
    code = CODE.NOT_FOUND
    http_status = 404


class MethodNotAllowedError(HttpError):
    """The path exists but not with this method; the response lists the allowed ones."""

    code = CODE.UNIMPLEMENTED
    http_status = 405

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class BodyTooLargeError(HttpError):
    """The body is (or declares itself) larger than --max-message-bytes: RESOURCE_EXHAUSTED, as
    gRPC answers an oversized message, but 413, which tells the caller not to retry it as is."""

    code = CODE.RESOURCE_EXHAUSTED
    http_status = 413

    def __init__(self, message: str, *, while_reading: bool = False) -> None:
        super().__init__(message)
        self.abort = while_reading


class BodyTimeoutError(HttpError):
    """The client did not send its whole body in time."""

    code = CODE.DEADLINE_EXCEEDED
    http_status = 408
    abort = True


class BodyMalformedError(HttpError):
    """The body's framing or encoding is broken (a bad chunk, gzip that is not gzip)."""

    code = CODE.INVALID_ARGUMENT
    http_status = 400
    abort = True


class ClientGoneError(HttpError):
    """The connection broke before the request arrived whole: nobody hears the answer."""

    code = CODE.CANCELLED
    http_status = 499
    abort = True


class UnsupportedMediaTypeError(HttpError):
    code = CODE.INVALID_ARGUMENT
    http_status = 415


def http_status(error: ServingError) -> int:
    """The HTTP status of ``error``: its own, for errors only HTTP has, else the table's."""
    if isinstance(error, HttpError):
        return error.http_status
    return HTTP_STATUS[error.code]


def status_for(code: grpc.StatusCode) -> int:
    return HTTP_STATUS[code]
