"""Axon's client library: the front door.

    from axon.client import AxonClient, AsyncAxonClient, AxonClientError, RetryPolicy, \
        ConnectionSecurity

The library imports no server modules and no torch. ``classify_files`` streams files through a
server as ``axon classify`` does. The names are imported when first used, so that importing one
module of the package (``axon.client.server_process``, say) loads no generated stubs: the
interoperability tests run tritonclient, whose own copy of the protocol cannot share a process
with Axon's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from axon.client.async_client import AsyncAxonClient
    from axon.client.common import (
        NO_RETRIES,
        AxonClientError,
        Classification,
        Prediction,
        RetryPolicy,
    )
    from axon.client.file_stream import FileResult, classify_files
    from axon.client.security import ConnectionSecurity
    from axon.client.sync_client import AxonClient

_HOMES = {
    "AsyncAxonClient": "async_client", "AxonClient": "sync_client",
    "AxonClientError": "common", "Classification": "common", "NO_RETRIES": "common",
    "Prediction": "common", "RetryPolicy": "common", "ConnectionSecurity": "security",
    "FileResult": "file_stream", "classify_files": "file_stream",
}
__all__ = ["NO_RETRIES", "AsyncAxonClient", "AxonClient", "AxonClientError", "Classification",
           "ConnectionSecurity", "FileResult", "Prediction", "RetryPolicy", "classify_files"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
