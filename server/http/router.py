"""The HTTP routes' table and how a request's method and path find one: plain data, no server.

Each route names the gRPC method it corresponds to: the same name labels its metrics, and token
roles allow or refuse it exactly as they do the gRPC call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from axon.server.errors import InvalidInputError, shown
from axon.server.http.status import MethodNotAllowedError, RouteNotFoundError

Body = Literal["none", "json", "tensor", "image"]
"""What a route reads: nothing, a small JSON document, an inference request (JSON, perhaps
with binary tensor data), or an encoded image."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What a handler gets: the path's parameters, the query, the headers and the body."""

    params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    started: float
    """``time.monotonic()`` when the request arrived."""


@dataclass(slots=True)
class HttpResponse:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False
    """Close the connection after this answer (a body was left unread: the client may read
    the answer while the server discards the rest, for a while)."""
    abort: bool = False
    """Close the connection as soon as this answer is written, reading nothing more (a client
    too slow to send its body)."""


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: tuple[str, ...]
    """Literal segments, and ``{name}`` for a parameter."""
    rpc: str
    """The gRPC method it corresponds to, e.g. ``/inference.GRPCInferenceService/ModelInfer``."""
    handler: Handler
    body: Body = "none"
    open: bool = False
    """Health: no token, not counted against --max-concurrent-rpcs, answered while stopping."""

    @property
    def name(self) -> str:
        """The gRPC method's short name (``ModelInfer``): the metrics' ``method`` label."""
        return self.rpc.rsplit("/", 1)[-1]

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        params = {}
        for pattern, segment in zip(self.path, segments, strict=True):
            if pattern.startswith("{"):
                params[pattern[1:-1]] = segment
            elif pattern != segment:
                return None
        return params


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        self._by_length: dict[int, list[Route]] = {}
        for route in routes:
            self._by_length.setdefault(len(route.path), []).append(route)

    def match(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method`` on ``raw_path`` (percent-encoded, without the query) and
        its parameters, decoded segment by segment: an encoded ``/`` stays in its segment."""
        segments = _segments(raw_path)
        allowed = []
        for route in self._by_length.get(len(segments), ()):
            params = route.match(segments)
            if params is None:
                continue
            if route.method == method:
                return route, params
            allowed.append(route.method)
        if allowed:
            raise MethodNotAllowedError(f"{shown(method)} is not allowed on {shown(raw_path)}; "
                                        f"use {' or '.join(sorted(set(allowed)))}",
                                        tuple(sorted(set(allowed))))
        raise RouteNotFoundError(f"no route {shown(raw_path)}: the Open Inference Protocol's "
                                 "routes start with /v2 (e.g. GET /v2/health/ready, "
                                 "POST /v2/models/NAME/infer)")


def _segments(raw_path: str) -> list[str]:
    if not raw_path.startswith("/"):
        raise RouteNotFoundError(f"no route {shown(raw_path)}: a path starts with /")
    try:
        return [unquote(segment, errors="strict") for segment in raw_path[1:].split("/")]
    except UnicodeDecodeError:
        raise InvalidInputError(f"the path {shown(raw_path)} is not percent-encoded "
                                "UTF-8") from None
