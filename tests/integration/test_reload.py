"""Zero-downtime model reload: versions dropped into the repository while callers keep calling,
found by polling, built and warmed before they take traffic. No call fails, every answer names
the version that produced it, and versions that cannot serve (a corrupt file, a changed
signature) are refused with their reason while the serving version goes on. With several
worker processes, every worker switches before the reload returns, and once any answers with the
new version none answers with the old."""

from __future__ import annotations

import bisect
import itertools
import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from axon.client.common import NO_RETRIES, AxonClientError, infer_request
from axon.client.demo import SAMPLES
from axon.client.server_process import start_server
from axon.client.sync_client import AxonClient
from axon.model_repository import ModelRepository
from axon.protocol import open_inference_pb2_grpc as oip_grpc
from tests.support.repositories import DIGITS, PETS
from tests.support.scrape import scrape

ONE = np.full((1, 784), 0.5, dtype=np.float32)


class Callers:
    """Threads calling ModelInfer and Classify back to back without retries, each over 8
    connections in turn (a server of several workers gets calls in each); every caller keeps
    the versions that answered it, in order; and every call's start, end and version, and
    every error, are kept."""

    CONNECTIONS = 8

    def __init__(self, address: str, image: bytes) -> None:
        self.versions: dict[str, list[str]] = {}
        self.errors: list[str] = []
        self.calls: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call, args=(address, api, image))
                         for api in ("infer-1", "infer-2", "classify")]
        for thread in self._threads:
            thread.start()

    def _call(self, address: str, api: str, image: bytes) -> None:
        seen = self.versions.setdefault(api, [])
        channels = [grpc.insecure_channel(address, options=[("axon.connection", number)])
                    for number in range(self.CONNECTIONS)]
        infers = itertools.cycle(oip_grpc.GRPCInferenceServiceStub(c).ModelInfer
                                 for c in channels)
        with AxonClient(address, retry=NO_RETRIES, timeout=10,
                        connections=self.CONNECTIONS) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    if api == "classify":
                        version = client.classify([image], model=DIGITS).model_version
                    else:
                        version = next(infers)(infer_request(DIGITS, ONE),
                                               timeout=10).model_version
                except (AxonClientError, grpc.RpcError) as error:
                    self.errors.append(f"{api}: {error}")
                    continue
                seen.append(version)
                self.calls.append((started, time.monotonic(), int(version)))
        for channel in channels:
            channel.close()

    def answered_by(self, version: str) -> bool:
        return any(seen and seen[-1] == version for seen in self.versions.values())

    def old_after_new(self) -> list[tuple[float, float, int]]:
        """Calls answered by an older version than some call that had ended before they
        began, over every caller and connection: a group of workers must switch as one."""
        by_end = sorted(self.calls, key=lambda call: call[1])
        ends = [end for _, end, _ in by_end]
        newest = list(itertools.accumulate((v for _, _, v in by_end), max))
        late = []
        for call in self.calls:
            ended_before = bisect.bisect_left(ends, call[0])
            if ended_before and call[2] < newest[ended_before - 1]:
                late.append(call)
        return late

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def publish(repository: ModelRepository, name: str, version: int, source: Path) -> None:
    """As a deployment should: complete in a hidden folder, then renamed into place."""
    staging = repository.root / name / f".incoming-{version}"
    shutil.copytree(source, staging)
    staging.rename(repository.version_dir(name, version))


def wait_for(condition: object, what: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_new_versions_take_over_without_a_failed_call_and_bad_ones_are_refused(
        serving_repository: Path, tmp_path: Path, workers: int) -> None:
    repository = ModelRepository(tmp_path / "models")
    digits_v1 = serving_repository / DIGITS / "1"
    publish(repository, DIGITS, 1, digits_v1)
    server = start_server(repository.root, tmp_path / "server.log", "--models", DIGITS,
                          "--repository-poll-seconds", "0.2", "--workers", str(workers))
    callers = Callers(server.address, next(SAMPLES.glob("*.png")).read_bytes())
    try:
        wait_for(lambda: all(len(v) >= 20 for v in callers.versions.values()), "answers")
        publish(repository, DIGITS, 2, digits_v1)
        wait_for(lambda: callers.answered_by("2"), "v2 to answer")
        time.sleep(0.5)
        with AxonClient(server.address) as admin:  # the same through the repository API
            for _ in range(3):
                admin.load_model(DIGITS)
                time.sleep(0.2)

        corrupt = tmp_path / "corrupt"
        shutil.copytree(digits_v1, corrupt)
        (corrupt / "model.onnx").write_bytes(b"not an ONNX model")
        publish(repository, DIGITS, 3, corrupt)
        with AxonClient(server.address) as admin:
            def index_reason(version: str) -> str:
                return next((m.reason for m in admin.repository_index()
                             if m.name == DIGITS and m.version == version), "")

            wait_for(lambda: "failed to load" in index_reason("3"), "v3 to fail")
            assert "onnxruntime cannot load it" in index_reason("3")
            # A version whose input differs from the serving one's: refused, not swapped in.
            publish(repository, DIGITS, 4, serving_repository / PETS / "1")
            wait_for(lambda: "incompatible signature" in index_reason("4"), "v4 refused")
            assert [m.version for m in admin.repository_index(ready_only=True)
                    if m.name == DIGITS] == ["2"]
        time.sleep(0.5)
        assert server.metrics_port is not None
        page = scrape(server.metrics_port)
        assert page.value("axon_model_load_failures_total", model=DIGITS) == 2
        if workers > 1:  # the callers reached every worker
            answered = page.matching("axon_worker_requests_total")
            assert len(answered) == workers and min(answered.values()) > 0, answered
    finally:
        callers.stop()
        server.stop()
    assert callers.errors == []
    assert callers.old_after_new() == []
    for api, seen in callers.versions.items():
        # Old before the switch, new after, never back: one switch per caller.
        assert seen[0] == "1" and seen[-1] == "2", api
        switch = seen.index("2")
        assert set(seen[:switch]) == {"1"} and set(seen[switch:]) == {"2"}, api
    log = server.log()
    assert "mnist did not load (the loaded versions go on serving)" in log
    assert "Traceback" not in log
