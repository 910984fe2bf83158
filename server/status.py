"""The transport edge: the one place where errors become gRPC statuses.

``guard`` wraps every RPC method of a servicer when the server is built, so servicers raise
``ServingError`` and never catch. A ``ServingError`` ends the call with its own code and message;
anything else is a bug, logged with its traceback under an incident id, and the caller gets
INTERNAL with that id and nothing of the internals.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from server.errors import ServingError

log = logging.getLogger(__name__)

ServicerT = TypeVar("ServicerT")


def status_of(error: Exception, method: str = "") -> tuple[grpc.StatusCode, str]:
    """The status code and message a caller gets for ``error``."""
    if isinstance(error, ServingError):
        return error.code, str(error)
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s in %s", incident, method or "a request", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal server error (incident {incident}); " \
                                     "the server log has the details"


def guard(servicer: ServicerT, service: ServiceDescriptor) -> ServicerT:
    """Wrap each of ``service``'s methods on ``servicer`` with the error mapping, in place."""
    for method in service.methods:
        behaviour = getattr(servicer, method.name)
        full_name = f"/{service.full_name}/{method.name}"
        if inspect.isasyncgenfunction(behaviour):
            setattr(servicer, method.name, _guard_stream(behaviour, full_name))
        else:
            setattr(servicer, method.name, _guard_unary(behaviour, full_name))
    return servicer


def _guard_unary(behaviour: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
                 method: str) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(behaviour)
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # the edge: every error becomes a status here
            code, message = status_of(error, method)
            await context.abort(code, message)
    return guarded


def _guard_stream(behaviour: Callable[[Any, grpc.aio.ServicerContext[Any, Any]],
                                      AsyncIterator[Any]],
                  method: str) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(behaviour)
    async def guarded(requests: Any, context: grpc.aio.ServicerContext[Any, Any],
                      ) -> AsyncIterator[Any]:
        try:
            async for response in behaviour(requests, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # the edge: every error becomes a status here
            code, message = status_of(error, method)
            await context.abort(code, message)
    return guarded
