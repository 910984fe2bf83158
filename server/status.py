"""The transport edge: the one place where errors become gRPC statuses.

``guard`` wraps every RPC method of a servicer when the server is built, so servicers raise
``ServingError`` and never catch. A ``ServingError`` ends the call with its own code and message;
anything else is a bug, logged with its traceback under an incident id, and the caller gets
INTERNAL with that id and nothing of the internals. Being where every call ends, it is also
where calls are counted and timed (``Metrics.begin``/``end``); the messages of a stream are
answered one by one through ``outcome_of``, which does the same for each.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from axon.server.drain import STOPPING, Drain
from axon.server.errors import InvalidInputError, ServingError, ShuttingDownError
from axon.server.parsing import Undecodable

if TYPE_CHECKING:
    from axon.server.metrics import Metrics

log = logging.getLogger(__name__)

ServicerT = TypeVar("ServicerT")
ResultT = TypeVar("ResultT")
Context = grpc.aio.ServicerContext[Any, Any]
_OK = grpc.StatusCode.OK


def status_of(error: Exception, method: str = "") -> tuple[grpc.StatusCode, str]:
    """The status code and message a caller gets for ``error``."""
    if isinstance(error, ServingError):
        return error.code, str(error)
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s in %s", incident, method or "a request", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal server error (incident {incident}); " \
                                     "the server log has the details"


@dataclass(frozen=True)
class Outcome(Generic[ResultT]):
    """A result, or the status code and message the caller gets instead."""

    result: ResultT | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""


async def outcome_of(work: Callable[[], Awaitable[ResultT]], method: str,
                     metrics: Metrics | None, context: Context) -> Outcome[ResultT]:
    """Run one request of a stream: its errors become an outcome, never end the stream."""
    call = None if metrics is None else metrics.begin(method)
    code = grpc.StatusCode.OK
    try:
        result = await work()
    except asyncio.CancelledError:
        code = _cancelled_code(context)
        raise
    except Exception as error:  # one failed request must not end the stream
        code, message = status_of(error, method)
        return Outcome(code=code, message=message)
    finally:
        if call is not None and metrics is not None:
            metrics.end(call, code.name)
    return Outcome(result)


def guard(servicer: ServicerT, service: ServiceDescriptor,
          metrics: Metrics | None = None, drain: Drain | None = None) -> ServicerT:
    """Wrap each of ``service``'s methods on ``servicer`` with the error mapping, in place.

    With ``metrics``, unary calls are also counted and timed; streams count their messages
    themselves (see ``outcome_of``). With ``drain``, calls are admitted through it: refused
    once the server stops, and streams stop reading then.
    """
    for method in service.methods:
        behaviour = getattr(servicer, method.name)
        full_name = f"/{service.full_name}/{method.name}"
        if inspect.isasyncgenfunction(behaviour):
            setattr(servicer, method.name, _guard_stream(behaviour, full_name, drain))
        else:
            setattr(servicer, method.name,
                    _guard_unary(behaviour, full_name, method.name, metrics, drain))
    return servicer


def _guard_unary(behaviour: Callable[[Any, Context], Awaitable[Any]], full_name: str,
                 method: str, metrics: Metrics | None,
                 drain: Drain | None) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(behaviour)
    async def guarded(request: Any, context: Context) -> Any:
        call = None if metrics is None else metrics.begin(method)
        code = grpc.StatusCode.OK
        admitted = False
        try:
            if isinstance(request, Undecodable):
                raise InvalidInputError(request.message)
            if drain is not None:
                drain.enter()
                admitted = True
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:
            code = _cancelled_code(context)
            raise
        except Exception as error:  # the edge: every error becomes a status here
            code, message = status_of(error, full_name)
            # Counted before the caller hears of it (abort sends the status at once): a
            # scrape made after the caller's error sees it.
            if call is not None and metrics is not None:
                metrics.end(call, code.name)
                call = None
            await context.abort(code, message)
        finally:
            if admitted and drain is not None:
                drain.exit()
            if call is not None and metrics is not None:
                metrics.end(call, "OK" if code is _OK else code.name)
    return guarded


def _cancelled_code(context: Context) -> grpc.StatusCode:
    """Why a call was cancelled under us: its deadline passed, or its caller gave up."""
    remaining = context.time_remaining()
    return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 \
        else grpc.StatusCode.CANCELLED


def _guard_stream(behaviour: Callable[[Any, Context], AsyncIterator[Any]],
                  method: str, drain: Drain | None) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(behaviour)
    async def guarded(requests: Any, context: Context) -> AsyncIterator[Any]:
        admitted = False
        try:
            if drain is not None:
                drain.enter()
                admitted = True
                requests = drain.messages(requests)
            async for response in behaviour(requests, context):
                yield response
            if admitted and requests.cut:
                # Every message read was answered; the caller sends the rest again.
                raise ShuttingDownError(STOPPING)
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # the edge: every error becomes a status here
            code, message = status_of(error, method)
            await context.abort(code, message)
        finally:
            if admitted and drain is not None:
                drain.exit()
    return guarded
