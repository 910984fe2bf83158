"""Requests whose bytes are not the message they claim to be get INVALID_ARGUMENT, not UNKNOWN.

grpcio parses a unary request before any servicer code runs, and a parse error there ends the
call UNKNOWN with a traceback in the log. ``register_tolerantly`` registers a service's
handlers with a parser that turns such bytes into an ``Undecodable`` marker instead; the
transport edge (``server/status.py``) refuses the marker as invalid input. The parser is
swapped once, at registration, so a call pays nothing for it. Streams parse as they are read
and are handled where they are read (``server/servicers/streams.py``).

The same registration lets a handler answer with its response already serialized (bytes), as
the inference methods do (``server/wire.py``); messages are serialized as before.

It also decides which methods gRPC's core knows by name (registered methods): only the unary
inference methods. grpcio's asyncio server keeps one pending request per registered method (and
one for all the others) and, for every call it accepts, waits on all of them with
``asyncio.wait``: a cost per call that grows with the number registered, about 0.3 µs each here.
The generated code registers every method, which made 19 pending requests in Axon (the
inference, classifier, health and reflection services) against 13 in the naive server; with two
registered, a lone caller's call cost about 7 µs less CPU (docs/performance.md, "Methods
registered with gRPC's core"). Every other method is served through the generic handlers, which
costs only its own, rare, calls.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from axon.server.wire import passing_bytes


class Undecodable:
    """Stands in for a request that did not parse."""

    def __init__(self, method: str) -> None:
        self.method = method

    @property
    def message(self) -> str:
        return f"the request is not a valid message for {self.method}"


class _Registrations:
    """Stands in for the server while a generated ``add_*_to_server`` function registers a
    service, keeping its handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """The same handlers come again through ``add_registered_method_handlers``."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers[service] = handlers


def register_tolerantly(add_to_server: Callable[[Any, Any], None], servicer: Any,
                        server: grpc.aio.Server,
                        parsers: Mapping[str, Callable[[bytes], Any]] | None = None, *,
                        registered: Collection[str] = ()) -> None:
    """``add_to_server(servicer, server)``, with the unary methods' request parsers made
    tolerant of bytes that do not parse, and every method free to answer with its response
    already serialized (server/wire.py). ``parsers``: a unary method's own parser (by method
    name) in place of its message's, raising DecodeError as protobuf does. ``registered``: the
    methods gRPC's core is to know by name (the module's docstring); the others are served
    through a generic handler."""
    registrations = _Registrations()
    add_to_server(servicer, registrations)
    for service, handlers in registrations.handlers.items():
        tolerant = {method: _tolerant_handler(handler, method, (parsers or {}).get(method))
                    for method, handler in handlers.items()}
        _register(server, service, tolerant, registered)


def register_unregistered(add_to_server: Callable[[Any, Any], None], servicer: Any,
                          server: grpc.aio.Server) -> None:
    """``add_to_server(servicer, server)`` (generated code, or a library's that calls it, such
    as the health and reflection services'), every method served through a generic handler."""
    registrations = _Registrations()
    add_to_server(servicer, registrations)
    for service, handlers in registrations.handlers.items():
        _register(server, service, handlers, ())


def _register(server: grpc.aio.Server, service: str, handlers: dict[str, Any],
              registered: Collection[str]) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    named = {method: handler for method, handler in handlers.items() if method in registered}
    if named:
        server.add_registered_method_handlers(service, named)


def _tolerant_handler(handler: Any, method: str,
                      parser: Callable[[bytes], Any] | None = None) -> Any:
    handler = handler._replace(response_serializer=passing_bytes(handler.response_serializer))
    if handler.request_streaming:
        return handler
    return handler._replace(request_deserializer=_tolerant(
        parser or handler.request_deserializer, method))


def _tolerant(parse: Callable[[bytes], Any] | None,
              method: str) -> Callable[[bytes], Any]:
    def parse_or_mark(data: bytes) -> Any:
        try:
            return parse(data) if parse is not None else data
        except DecodeError:
            return Undecodable(method)
    return parse_or_mark
