"""Requests whose bytes are not the message they claim to be get INVALID_ARGUMENT, not UNKNOWN.

grpcio parses a unary request before any servicer code runs, and a parse error there ends the
call UNKNOWN with a traceback in the log. This interceptor gives Axon's unary methods a parser
that turns such bytes into an ``Undecodable`` marker instead; the transport edge
(``server/status.py``) refuses the marker as invalid input. Streams parse as they are read and
are handled where they are read (``server/servicers/streams.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

if TYPE_CHECKING:
    from typing import TypeAlias

    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]


class Undecodable:
    """Stands in for a request that did not parse."""

    def __init__(self, method: str) -> None:
        self.method = method

    @property
    def message(self) -> str:
        return f"the request is not a valid message for {self.method.rsplit('/', 1)[-1]}"


class TolerantParsing(grpc.aio.ServerInterceptor):
    """Swaps the request parser of the unary methods of ``services`` (full names)."""

    def __init__(self, services: Collection[str]) -> None:
        self._prefixes = tuple(f"/{name}/" for name in services)
        self._handlers: dict[str, Handler] = {}

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
            details: grpc.HandlerCallDetails) -> Handler | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or handler.request_streaming or \
                not method.startswith(self._prefixes):
            return handler
        tolerant = self._handlers.get(method)
        if tolerant is None or tolerant.unary_unary is not handler.unary_unary:
            tolerant = self._handlers[method] = handler._replace(  # type: ignore[attr-defined]
                request_deserializer=_tolerant(handler.request_deserializer, method))
        return tolerant


def _tolerant(parse: Callable[[bytes], Any] | None,
              method: str) -> Callable[[bytes], Any]:
    def parse_or_mark(data: bytes) -> Any:
        try:
            return parse(data) if parse is not None else data
        except DecodeError:
            return Undecodable(method)
    return parse_or_mark
