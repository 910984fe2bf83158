"""What every fuzz test asserts, and how many examples it tries.

The properties (issue 7): every answer is OK or a status the server gives on purpose -- never
UNKNOWN, and never INTERNAL, which from this server means an unexpected error (none of the
models served here fails on purpose); no message carries a traceback or names the server's
files; the server process stays up, logs no traceback, and a good request right after each
example succeeds.

Examples per property: ``DEFAULT_EXAMPLES``, derandomized and without an example database, so
CI runs the same inputs every time. ``AXON_FUZZ_EXAMPLES=5000`` runs that many, with fresh
random inputs each run (a failure prints the ``@reproduce_failure`` line that replays it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
from hypothesis import HealthCheck, event, settings

from axon.client.common import infer_request
from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from tests.support.repositories import DIGITS, PETS

ResponseT = TypeVar("ResponseT")
EXAMPLES_VARIABLE = "AXON_FUZZ_EXAMPLES"
DEFAULT_EXAMPLES = 150
SERVED_MODELS = (DIGITS, PETS)
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""The fuzz servers' message limit: small enough that an example can cross it cheaply."""
MAX_MESSAGE_CHARS = 1000
"""Status messages stay readable (and under gRPC's metadata limits) whatever the input."""

CODE = grpc.StatusCode
DELIBERATE = frozenset({CODE.OK, CODE.INVALID_ARGUMENT, CODE.NOT_FOUND,
                        CODE.RESOURCE_EXHAUSTED, CODE.UNAVAILABLE, CODE.FAILED_PRECONDITION,
                        CODE.DEADLINE_EXCEEDED})
"""Every code server/errors.py maps an error to, but INTERNAL (ModelExecutionError: a model
that fails, which these do not; anything unexpected lands there too); RESOURCE_EXHAUSTED is also
gRPC's answer to an oversized message. No authentication here: no UNAUTHENTICATED."""

SOURCE_ROOT = Path(__file__).resolve().parents[2]
LEAK_MARKERS = ("Traceback", 'File "', str(SOURCE_ROOT), "site-packages")
GOOD_DIGITS = np.full((1, 784), 0.5, dtype=np.float32)


def fuzz_settings(share: float = 1.0) -> settings:
    """Settings for one property; ``share`` scales the example count, for properties whose
    examples cost more than a call or two."""
    explicit = os.environ.get(EXAMPLES_VARIABLE)
    examples = int(explicit) if explicit else DEFAULT_EXAMPLES
    return settings(max_examples=max(1, round(examples * share)), deadline=None,
                    derandomize=explicit is None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


def check_status(code: grpc.StatusCode, message: str) -> grpc.StatusCode:
    """Assert that ``code`` is deliberate and ``message`` short and free of internals."""
    event(code.name)  # pytest --hypothesis-show-statistics shows how the answers spread
    shown = message[:MAX_MESSAGE_CHARS]
    assert code in DELIBERATE, f"{code.name}: {shown}"
    leaked = [marker for marker in LEAK_MARKERS if marker in message]
    assert not leaked, f"the message shows {leaked}: {shown}"
    assert len(message) <= MAX_MESSAGE_CHARS, f"a {len(message):,}-character message: {shown}"
    return code


def check_call(call: Callable[[], ResponseT]) -> ResponseT | None:
    """Make ``call`` (a unary RPC); its status must pass ``check_status``. Returns the response,
    or None when the call ended with a (deliberate) error."""
    try:
        response = call()
    except grpc.RpcError as error:
        check_rpc_error(error)
        return None
    check_status(CODE.OK, "")
    return response


def check_rpc_error(error: grpc.RpcError) -> grpc.StatusCode:
    assert isinstance(error, grpc.Call)
    return check_status(error.code(), error.details() or "")


def check_stream_error(text: str) -> grpc.StatusCode:
    """A ModelStreamInfer ``error_message`` (``CODE_NAME: message``; empty: success)."""
    if not text:
        return check_status(CODE.OK, "")
    name, _, message = text.partition(": ")
    assert name in CODE.__members__, f"not a status: {text[:MAX_MESSAGE_CHARS]}"
    return check_status(CODE.__members__[name], message)


def assert_still_serving(server: ServerProcess, client: AxonClient) -> None:
    """The process is up, its log holds no traceback, and a good request succeeds."""
    assert server.process.poll() is None, f"the server died:\n{server.log()}"
    response = client.inference.ModelInfer(infer_request(DIGITS, GOOD_DIGITS), timeout=10)
    assert list(response.outputs[1].shape) == [1, 10]
    log = server.log()
    assert "Traceback" not in log, log


HTTP_DELIBERATE = frozenset({200, 400, 404, 405, 408, 413, 414, 415, 429, 431, 503, 504})
"""Every HTTP status the server answers on purpose: the error table's (server/http/status.py)
for the codes above, and HTTP's own refusals (no route, method, body too large or too slow,
header or request line too long, content type). Never 500 or 501; no tokens here, so no 401."""


def check_http_status(status: int, body: bytes) -> int:
    """Assert that an HTTP answer is deliberate: a known status, and for an error a JSON body
    ``{"error": message}`` with a short message free of internals."""
    event(f"HTTP {status}")
    assert status in HTTP_DELIBERATE, f"HTTP {status}: {body[:MAX_MESSAGE_CHARS]!r}"
    if status != 200:
        document = json.loads(body)
        assert isinstance(document, dict) and list(document) == ["error"], body[:500]
        message = document["error"]
        assert isinstance(message, str)
        leaked = [marker for marker in LEAK_MARKERS if marker in message]
        assert not leaked, f"the message shows {leaked}: {message[:MAX_MESSAGE_CHARS]}"
        assert len(message) <= MAX_MESSAGE_CHARS, f"a {len(message):,}-character message"
    return status


def assert_http_still_serving(server: ServerProcess) -> None:
    """The process is up, its log holds no traceback, and a good HTTP request succeeds."""
    from tests.support.http import json_infer, post_json

    assert server.process.poll() is None, f"the server died:\n{server.log()}"
    answer = post_json(server.http_address, f"/v2/models/{DIGITS}/infer",
                       json_infer(GOOD_DIGITS))
    assert answer.status == 200, answer.body[:500]
    log = server.log()
    assert "Traceback" not in log, log
