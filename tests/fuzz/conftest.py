"""A real server for each fuzz module, and a client for it.

Each module gets a server of its own (not the session's ``server``): what one module provokes
cannot disturb the others or the rest of the suite, and when a server dies or logs a traceback,
the module that did it is the one that fails. ``running_server`` fails the module afterwards if
its server died, did not stop cleanly or logged a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from axon.client.server_process import ServerProcess, running_server
from axon.client.sync_client import AxonClient
from tests.fuzz.properties import MAX_MESSAGE_BYTES, SERVED_MODELS


@pytest.fixture(scope="module")
def fuzz_server(serving_repository: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("fuzz-server") / "server.log"
    with running_server(serving_repository, log, "--models", ",".join(SERVED_MODELS),
                        "--max-message-bytes", str(MAX_MESSAGE_BYTES)) as process:
        yield process


@pytest.fixture(scope="module")
def fuzz_client(fuzz_server: ServerProcess) -> Iterator[AxonClient]:
    """Raw stubs on one channel (``client.inference``, ``client.classifier``): no retries."""
    with AxonClient(fuzz_server.address) as client:
        client.wait_ready()
        yield client
