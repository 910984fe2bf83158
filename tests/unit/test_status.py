"""The error table: serving errors keep their code and message; anything else leaks nothing."""

from __future__ import annotations

import logging
import re

import grpc
import pytest

from axon.server import errors
from axon.server.errors import ModelExecutionError, ServingError
from axon.server.status import status_of

CODES: dict[type[ServingError], grpc.StatusCode] = {
    errors.ServingError: grpc.StatusCode.INTERNAL,
    errors.InvalidInputError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.ModelNotReadyError: grpc.StatusCode.UNAVAILABLE,
    errors.QueueFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.TooManyCallsError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExpiredError: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ShuttingDownError: grpc.StatusCode.UNAVAILABLE,
    errors.ModelLoadError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelControlDisabledError: grpc.StatusCode.FAILED_PRECONDITION,
    ModelExecutionError: grpc.StatusCode.INTERNAL,
    errors.WorkerGroupError: grpc.StatusCode.INTERNAL,  # by default; see the next test
}
INCIDENT = re.compile(r"^internal server error \(incident ([0-9a-f]{12})\); "
                      r"the server log has the details$")


def test_the_table_covers_every_serving_error_of_the_errors_module() -> None:
    declared = {value for value in vars(errors).values()
                if isinstance(value, type) and issubclass(value, ServingError)}
    assert declared <= set(CODES)


@pytest.mark.parametrize(("kind", "code"), list(CODES.items()),
                         ids=[kind.__name__ for kind in CODES])
def test_a_serving_error_keeps_its_code_and_message(kind: type[ServingError],
                                                    code: grpc.StatusCode,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    message = f"{kind.__name__}: say what to fix"
    assert status_of(kind(message), "/axon.v1/Method") == (code, message)
    assert caplog.records == []  # the caller's mistakes are not the server's incidents


def raised(error: Exception) -> Exception:
    """``error`` with a traceback, as a servicer's ``except`` would see it."""
    try:
        raise error
    except Exception as caught:
        return caught


def test_an_unexpected_error_is_internal_with_an_incident_id_and_no_internals(
        caplog: pytest.LogCaptureFixture) -> None:
    error = raised(KeyError("/srv/secret/weights.bin"))
    with caplog.at_level(logging.ERROR, logger="axon.server.status"):
        code, message = status_of(error, "/inference.GRPCInferenceService/ModelInfer")
    assert code == grpc.StatusCode.INTERNAL
    match = INCIDENT.match(message)
    assert match is not None, message
    assert "secret" not in message and "KeyError" not in message
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert match.group(1) in record.getMessage()
    assert "/inference.GRPCInferenceService/ModelInfer" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is error
    assert "Traceback" in caplog.text and "/srv/secret/weights.bin" in caplog.text


def test_each_incident_gets_its_own_id(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="axon.server.status"):
        messages = [status_of(raised(RuntimeError("bug")))[1] for _ in range(3)]
    incidents = {match.group(1) for match in map(INCIDENT.match, messages) if match}
    assert len(incidents) == 3
    assert all("a request" in r.getMessage() for r in caplog.records)


def test_an_error_from_another_worker_keeps_its_code_and_message() -> None:
    wire = errors.WorkerGroupError.to_wire(errors.ModelNotFoundError("model 'x' is not loaded"))
    error = errors.WorkerGroupError.from_wire(wire)
    assert status_of(error) == (grpc.StatusCode.NOT_FOUND, "model 'x' is not loaded")
