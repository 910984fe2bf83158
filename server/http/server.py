"""The HTTP server: aiohttp's low-level server on the event loop gRPC runs on, so that both
protocols share the model manager and its batchers (a batcher serves one loop). No aiohttp
router or middleware: routing and everything per request is the edge's (server/http/edge.py);
this module reads bodies with their limits and deadline, and turns what the HTTP parser refuses
(malformed requests, oversized headers) into the same ``{"error": ...}`` answers, logged in one
line without a traceback. aiohttp against uvicorn + Starlette: docs/performance.md, "HTTP/REST".
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from axon.server.drain import Drain
from axon.server.http.edge import HttpEdge, error_json
from axon.server.http.status import (
    BodyMalformedError,
    BodyTimeoutError,
    BodyTooLargeError,
    ClientGoneError,
)

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 75.0
"""An idle keep-alive connection is closed after this long (nginx's default)."""
MAX_HEADER_BYTES = 8190
"""Longest request line, and longest header (name and value), aiohttp's defaults; longer ones
are answered 414 and 431."""
MAX_HEADERS = 128
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class AiohttpBody:
    """The body of one aiohttp request, read as the edge asks (a ``BodyReader``)."""

    __slots__ = ("_request", "_timeout")

    def __init__(self, request: web.BaseRequest, timeout: float) -> None:
        self._request = request
        self._timeout = timeout

    @property
    def declared(self) -> int | None:
        return self._request.content_length

    @property
    def present(self) -> bool:
        return self._request.body_exists

    async def read(self, limit: int) -> bytes:
        request = self._request
        if not request.body_exists:
            return b""
        if request.headers.get("Expect", "").lower() == "100-continue":
            # curl asks before sending a large body; the checks it waited for have passed.
            await request.writer.write(_CONTINUE)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._timeout):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLargeError(f"the body is more than {limit:,} bytes, the "
                                                "limit here", while_reading=True)
                    chunks.append(chunk)
        except TimeoutError:
            raise BodyTimeoutError(f"the body did not arrive within {self._timeout:g} s "
                                   f"({size:,} bytes came)") from None
        except RequestPayloadError as error:
            cause = error.__cause__
            if isinstance(cause, http_exceptions.ContentEncodingError):
                raise BodyMalformedError("the body is not valid data of its "
                                         "Content-Encoding") from None
            if isinstance(cause, http_exceptions.ContentLengthError):
                raise ClientGoneError("the body ended before its Content-Length") from None
            raise BodyMalformedError(f"the body is malformed: {_first_line(cause or error)}") \
                from None
        except ConnectionError as error:
            raise ClientGoneError(f"the body did not arrive whole: {error}") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Aborting(web.Response):
    """An answer after which the connection closes at once, without aiohttp's lingering read of
    the rest of the body (up to 10 s): for a client too slow to send it."""


class _ProtocolHandler(RequestHandler):
    """aiohttp's connection handler, answering what its HTTP parser refuses as Axon answers
    everything: a JSON error with the right status, one log line, no traceback."""

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        finished = await super().finish_response(request, resp, start_time)
        if isinstance(resp, _Aborting):
            self.force_close()  # the answer is written; the transport flushes it, then closes
        return finished

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's own failures on a connection (a body that breaks while it discards what
        an early answer left unread, say): one line, no traceback."""
        error = kw.get("exc_info")
        reason = _first_line(error) if isinstance(error, BaseException) else "unknown"
        log.info("HTTP connection: %s: %s", args[0] % args[1:] if args else "", reason)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        status, text = _parser_refusal(status, exc)
        log.info("refused a malformed HTTP request: %s", text)
        answer = error_json(status, text)
        response = web.Response(body=answer.body, status=status,
                                content_type=answer.content_type)
        response.force_close()
        return response


def _first_line(error: BaseException) -> str:
    text = error.message if isinstance(error, http_exceptions.HttpProcessingError) \
        else str(error)
    return (str(text).strip().splitlines() or [type(error).__name__])[0][:200]


def _parser_refusal(status: int, exc: BaseException | None) -> tuple[int, str]:
    if isinstance(exc, http_exceptions.LineTooLong):
        line = exc.args[0] if exc.args else b""
        if isinstance(line, bytes | bytearray) and line[:1] == b"/":
            return 414, f"the request line is longer than {MAX_HEADER_BYTES} bytes"
        return 431, f"a header is longer than {MAX_HEADER_BYTES} bytes"
    if isinstance(exc, http_exceptions.BadHttpMessage) and "Too many headers" in str(exc):
        return 431, f"more than {MAX_HEADERS} headers"
    if isinstance(exc, http_exceptions.ContentEncodingError):
        return 415, "the body's Content-Encoding cannot be decoded; use gzip, deflate or none"
    if isinstance(exc, http_exceptions.HttpProcessingError):
        return status if 400 <= status < 500 else 400, \
            f"malformed HTTP request: {_first_line(exc)}"
    return status, "the request could not be handled"


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _ProtocolHandler(self, loop=self._loop, **self._kwargs)


@dataclass
class HttpServer:
    """A listening HTTP server; ``close`` stops it."""

    host: str
    port: int
    tls: bool
    _server: asyncio.Server
    _web: web.Server

    async def close(self, timeout: float) -> None:
        """Stop listening, then close every connection once its request is answered (the drain
        has already let the admitted requests finish)."""
        self._server.close()
        self._web.pre_shutdown()
        await self._web.shutdown(timeout)
        await self._server.wait_closed()


async def start_http(edge: HttpEdge, drain: Drain, address: str, *, body_timeout: float,
                     ssl_context: ssl.SSLContext | None = None,
                     reuse_port: bool = False) -> HttpServer:
    """Listen on ``address`` (host:port; port 0 picks one) and answer through ``edge``;
    ``reuse_port``: share the port with the other workers of a group (SO_REUSEPORT: the kernel
    spreads connections over them).

    Raises OSError when the address cannot be bound.
    """

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        answer = await edge.answer(request.method, request.raw_path.partition("?")[0],
                                   request.query, request.headers,
                                   AiohttpBody(request, body_timeout))
        kind = _Aborting if answer.abort else web.Response
        response = kind(body=answer.body, status=answer.status,
                        content_type=answer.content_type, headers=answer.headers)
        if answer.close or answer.abort or drain.closing:
            response.force_close()  # stopping: the client reconnects elsewhere
        return response

    server = _server(handle)
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    listener = await asyncio.get_running_loop().create_server(
        server, host or None, int(port), ssl=ssl_context, reuse_address=True,
        reuse_port=reuse_port or None, backlog=1024)
    bound = listener.sockets[0].getsockname()
    return HttpServer(host, int(bound[1]), ssl_context is not None, listener, server)


def _server(handle: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]) -> _Server:
    return _Server(handle, handler_cancellation=True, keepalive_timeout=KEEPALIVE_SECONDS,
                   max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES,
                   max_headers=MAX_HEADERS, access_log=None)

