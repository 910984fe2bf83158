"""Steady load through the real client, with its retries, counted per phase of a test."""

from __future__ import annotations

import threading

import numpy as np

from axon.client.common import AxonClientError, RetryPolicy
from axon.client.sync_client import AxonClient
from tests.support.repositories import DIGITS

ONE = np.full((1, 784), 0.5, dtype=np.float32)


class Load:
    """Callers through the proxy with the client's retries; counts per phase."""

    def __init__(self, address: str, callers: int = 4) -> None:
        self.phase = "start"
        self.calls: dict[str, int] = {}
        self.failures: dict[str, list[str]] = {}
        self._stop = threading.Event()
        retry = RetryPolicy(attempts=8, initial_backoff=0.02, max_backoff=0.5)
        self._clients = [AxonClient(address, retry=retry, timeout=10) for _ in range(callers)]
        self._threads = [threading.Thread(target=self._call, args=(c,)) for c in self._clients]
        for thread in self._threads:
            thread.start()

    def _call(self, client: AxonClient) -> None:
        while not self._stop.is_set():
            phase = self.phase
            try:
                client.infer(DIGITS, ONE)
                self.calls[phase] = self.calls.get(phase, 0) + 1
            except AxonClientError as error:
                self.failures.setdefault(phase, []).append(str(error))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for client in self._clients:
            client.close()
