"""Serving errors: each kind carries the gRPC status code it is answered with.

The transport edge (``server.status``) is the only place that turns these into gRPC statuses, so
the batcher, the model manager and the servicers raise them and never touch a ``context``.
Anything that is not a ``ServingError`` is a bug: it is logged with its traceback and the caller
gets INTERNAL with a message that leaks nothing.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import ClassVar

import grpc

from axon.errors import AxonError

_SHORT = reprlib.Repr()
_SHORT.maxstring = 80


def shown(text: str) -> str:
    """``text`` quoted for an error message, cut to a readable length: names come from callers,
    and a status message longer than gRPC's metadata limit would replace the real error."""
    return _SHORT.repr(text)


def shown_all(texts: Sequence[str], limit: int = 4) -> str:
    """The first ``limit`` of ``texts``, each ``shown``, then how many more: a request can hold
    thousands of names, and listing them all would make the message too long to deliver."""
    listed = ", ".join(map(shown, texts[:limit]))
    return listed if len(texts) <= limit else f"{listed} and {len(texts) - limit:,} more"


class ServingError(AxonError):
    """An error the caller should hear about, with a message that says what to fix."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL


class InvalidInputError(ServingError):
    """The request is malformed or does not fit the model's signature."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFoundError(ServingError):
    """No such model, or no such version of it, is loaded."""

    code = grpc.StatusCode.NOT_FOUND


class ModelNotReadyError(ServingError):
    """The model exists in the repository but is not loaded (unloaded, or failed to load)."""

    code = grpc.StatusCode.UNAVAILABLE


class QueueFullError(ServingError):
    """The model's batching queue is at its bound; retry later or slow down."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class TooManyCallsError(ServingError):
    """The server is answering as many calls as ``--max-concurrent-rpcs`` allows."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExpiredError(ServingError):
    """The request's deadline passed before the model could run it."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ShuttingDownError(ServingError):
    """The model is being unloaded or the server is stopping."""

    code = grpc.StatusCode.UNAVAILABLE


class ModelLoadError(ServingError):
    """A model version on disk cannot be loaded (corrupt file, no model card, bad config)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ModelExecutionError(ServingError):
    """The model raised while running a batch: a bug or a broken model, not the caller's."""


class ModelControlDisabledError(ServingError):
    """Loading and unloading models at run time is switched off on this server."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class WorkerGroupError(ServingError):
    """An error another process of a worker group answered with, keeping its status code."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INTERNAL) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]  # this one error's code, not the class's

    @staticmethod
    def to_wire(error: ServingError) -> tuple[str, str]:
        """``error`` as plain data for a pipe: its status code's name and its message."""
        return error.code.name, str(error)

    @classmethod
    def from_wire(cls, wire: tuple[str, str]) -> WorkerGroupError:
        code, message = wire
        return cls(message, grpc.StatusCode[code])
