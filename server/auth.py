"""Bearer-token authentication and roles, checked in one server interceptor (and, for HTTP,
by the same checks on the ``Authorization`` header: server/http/edge.py).

Each token carries a role. ``infer`` may call everything that reads or infers; ``admin`` may
also change what is served (RepositoryModelLoad/Unload). The health service stays open, so
orchestrators probe without a secret. A call without a token, or with one the server does not
know, ends UNAUTHENTICATED; a known token whose role does not allow the method ends
PERMISSION_DENIED. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import enum
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from axon.errors import AxonError

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
OPEN_SERVICES = ("/grpc.health.v1.Health/",)
"""Reachable without a token: orchestrators' probes."""
ADMIN_METHODS = frozenset({
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
})


class Role(enum.Enum):
    INFER = "infer"
    ADMIN = "admin"

    def allows(self, method: str) -> bool:
        return self is Role.ADMIN or method not in ADMIN_METHODS


class TokenConfigError(AxonError):
    """Tokens that cannot be used: a malformed line, an unknown role, a duplicate."""


@dataclass(frozen=True)
class Token:
    secret: bytes
    role: Role

    def __repr__(self) -> str:
        return f"Token(role={self.role.value}, secret=<hidden>)"


def parse_tokens(lines: Iterable[str], source: str) -> list[Token]:
    """``ROLE:TOKEN`` entries, one per line or comma-separated; ``#`` starts a comment. The
    message of an error names the line, never the token."""
    tokens: list[Token] = []
    seen: set[bytes] = set()
    for number, line in enumerate(lines, start=1):
        for part in line.split("#", 1)[0].split(","):
            entry = part.strip()
            if not entry:
                continue
            role_name, separator, secret = entry.partition(":")
            where = f"{source}, line {number}"
            if not separator or not secret.strip():
                raise TokenConfigError(f"{where}: expected ROLE:TOKEN")
            try:
                role = Role(role_name.strip())
            except ValueError:
                raise TokenConfigError(f"{where}: unknown role {role_name.strip()!r}; use "
                                       f"{', '.join(r.value for r in Role)}") from None
            value = secret.strip()
            if not value.isascii() or not value.isprintable() or " " in value:
                raise TokenConfigError(f"{where}: a token is printable ASCII without spaces")
            if len(value) < 16:
                raise TokenConfigError(f"{where}: a token needs at least 16 characters")
            encoded = value.encode()
            if encoded in seen:
                raise TokenConfigError(f"{where}: the same token is listed twice")
            seen.add(encoded)
            tokens.append(Token(encoded, role))
    return tokens


def load_tokens(inline: str | None, file: Path | None) -> list[Token]:
    """The tokens of the ``tokens`` setting (``ROLE:TOKEN,...``) and of ``tokens_file``."""
    tokens = parse_tokens([inline], "the tokens setting") if inline else []
    if file is not None:
        try:
            text = file.read_text()
        except OSError as error:
            raise TokenConfigError(f"cannot read the tokens file {file}: "
                                   f"{error.strerror or error}") from error
        tokens += parse_tokens(text.splitlines(), str(file))
    secrets = [t.secret for t in tokens]
    if len(set(secrets)) != len(secrets):
        raise TokenConfigError("the same token is given in the setting and in the file")
    return tokens


class TokenAuthenticator(grpc.aio.ServerInterceptor):
    """Lets a call through only with a known token whose role allows its method."""

    def __init__(self, tokens: Iterable[Token],
                 on_refusal: Callable[[str], None] | None = None) -> None:
        """``on_refusal`` is told the status code's name of each refused call."""
        self._tokens = tuple(tokens)
        if not self._tokens:
            raise TokenConfigError("token authentication needs at least one token")
        self._on_refusal = on_refusal

    def role_of(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Role | None:
        """The role of the call's bearer token, or None if it has no known one."""
        presented = None
        for key, value in metadata or ():
            if key == AUTHORIZATION:
                presented = value.encode() if isinstance(value, str) else value
        if presented is None or not presented.startswith(b"Bearer "):
            return None
        secret = presented[len(b"Bearer "):].strip()
        role = None
        # Every token is compared, so the time taken says nothing about which one matched.
        for token in self._tokens:
            if hmac.compare_digest(token.secret, secret):
                role = token.role
        return role

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails],
                                         Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        if method.startswith(OPEN_SERVICES):
            return await continuation(details)
        refused = self.refusal(method, details.invocation_metadata)
        if refused is None:
            return await continuation(details)
        handler = await continuation(details)
        return _refusing(handler, *refused)

    def refusal(self, method: str, metadata: Iterable[tuple[str, str | bytes]] | None,
                ) -> tuple[grpc.StatusCode, str] | None:
        """None when ``metadata`` (gRPC metadata, or HTTP headers: the same ``authorization``
        entry) may call ``method`` (its full gRPC name); else the status code and message it is
        refused with. A refusal is counted and logged."""
        role = self.role_of(metadata)
        if role is None:
            code, message = grpc.StatusCode.UNAUTHENTICATED, \
                "missing or unknown bearer token (send 'authorization: Bearer <token>')"
        elif not role.allows(method):
            code, message = grpc.StatusCode.PERMISSION_DENIED, \
                f"the {role.value} role may not call {method.rsplit('/', 1)[-1]}"
        else:
            return None
        if self._on_refusal is not None:
            self._on_refusal(code.name)
        log.info("refused %s: %s", method, code.name)
        return code, message


def _refusing(handler: grpc.RpcMethodHandler[Any, Any] | None, code: grpc.StatusCode,
              message: str) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that ends the call with ``code``."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    async def refuse_stream(request: Any,
                            context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator, as streams need

    if handler is None:  # an unknown method: refused all the same, before it is looked up
        return grpc.unary_unary_rpc_method_handler(refuse)
    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, deserializer, serializer)
