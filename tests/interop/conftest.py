"""Fixtures for the interop tests, which must run in a pytest process of their own.

These tests talk to Axon through ``tritonclient.grpc``, which ships its own generated copy of the
``inference`` protobuf package. Axon's stubs (``axon.protocol.open_inference_pb2``, imported by
``clients.client`` and the other test folders) define the same symbols, and one process's
protobuf descriptor pool refuses the second copy ("duplicate symbol inference.*"). So
``make test`` runs ``pytest tests/interop`` separately, and nothing here imports Axon's stubs:
Axon's descriptors are read in a subprocess (see descriptors.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from axon.client.server_process import ServerProcess

try:
    import tritonclient.grpc as triton
except TypeError as error:  # protobuf's bare "duplicate symbol 'inference.…'"
    raise RuntimeError("tests/interop cannot share a process with Axon's generated stubs: "
                       "run `pytest tests/interop` on its own") from error


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    """tritonclient's stock gRPC client, with its default channel options, on the test server."""
    with triton.InferenceServerClient(server.address) as client:
        yield client
