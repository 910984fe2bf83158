"""Graceful drain under load: on SIGTERM the server turns NOT_SERVING, refuses new calls with
UNAVAILABLE, answers every call (and stream message) it had accepted, and exits 0."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from axon.client.common import infer_request
from axon.client.demo import SAMPLES
from axon.client.server_process import start_server
from axon.model_repository import CONFIG_FILENAME, ModelRepository
from axon.protocol import open_inference_pb2_grpc as oip_grpc
from axon.protocol.v1 import classification_pb2 as cls
from axon.protocol.v1 import classification_pb2_grpc as cls_grpc
from tests.support.repositories import DIGITS
from tests.support.stall_model import STALL_CONFIG, save_stall_model, stall_request

SLOW = "slow-batches"

ONE = np.full((1, 784), 0.5, dtype=np.float32)


class SteadyLoad:
    """Callers sending single-image requests back to back, without retries, counting the
    outcome of each by status code."""

    def __init__(self, infer: grpc.UnaryUnaryMultiCallable, callers: int) -> None:  # type: ignore[type-arg]
        self.outcomes: Counter[str] = Counter()
        self.details: set[str] = set()
        self._infer = infer
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call) for _ in range(callers)]
        for thread in self._threads:
            thread.start()

    def _call(self) -> None:
        while not self._stop.is_set():
            try:
                self._infer(infer_request(DIGITS, ONE), timeout=10)
                self.outcomes["OK"] += 1
            except grpc.RpcError as error:
                self.outcomes[error.code().name] += 1
                self.details.add(error.details() or "")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def open_stream_messages(image: bytes, more: threading.Event,
                         ) -> Iterator[cls.ClassifyStreamRequest]:
    """Two messages, then (once ``more`` is set) a third: the stream stays open meanwhile."""
    for number in ("0", "1"):
        yield cls.ClassifyStreamRequest(id=number, request=cls.ClassifyRequest(
            model_name=DIGITS, images=[cls.Image(encoded=image)]))
    more.wait(30)
    yield cls.ClassifyStreamRequest(id="late", request=cls.ClassifyRequest(
        model_name=DIGITS, images=[cls.Image(encoded=image)]))


def slow_repository(serving_repository: Path, root: Path) -> ModelRepository:
    """The digit model, and a stall model (tests/support/stall_model.py) whose requests can
    keep it busy: requests sent just before a signal are still running or queued when it
    comes."""
    repository = ModelRepository(root)
    shutil.copytree(serving_repository / DIGITS, repository.root / DIGITS)
    save_stall_model(repository.root / SLOW / "1", SLOW)
    (repository.root / SLOW / CONFIG_FILENAME).write_text(json.dumps(STALL_CONFIG))
    return repository


def test_sigterm_answers_every_accepted_request_and_refuses_new_ones(
        serving_repository: Path, tmp_path: Path) -> None:
    repository = slow_repository(serving_repository, tmp_path / "models")
    server = start_server(repository.root, tmp_path / "server.log", "--models",
                          f"{DIGITS},{SLOW}", "--grace-seconds", "15")
    channel = grpc.insecure_channel(server.address)
    infer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    more = threading.Event()
    try:
        stream = cls_grpc.ClassifierStub(channel).ClassifyStream(
            open_stream_messages(next(SAMPLES.glob("*.png")).read_bytes(), more), timeout=30)
        load = SteadyLoad(infer, callers=4)
        time.sleep(1.0)
        # Three requests of about a second each on a model with one instance: running or
        # queued when the signal comes, a few seconds before the last is answered.
        held = [infer.future(stall_request(SLOW, 1.0), timeout=30) for _ in range(3)]
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as refused:
            infer(infer_request(DIGITS, ONE), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "the server is stopping" in (refused.value.details() or "")
        more.set()
        answers: list[cls.ClassifyStreamResponse] = []
        with pytest.raises(grpc.RpcError) as stream_end:
            answers.extend(stream)
        load.stop()
        for future in held:  # accepted before the signal: answered
            assert future.result().outputs[1].shape == [1, 10]
        assert server.process.wait(timeout=30) == 0
    finally:
        more.set()
        channel.close()
        server.stop()
    # The stream's accepted messages were answered, then it ended UNAVAILABLE: the late
    # message was never read, so the client knows to send it again.
    assert sorted(a.id for a in answers) == ["0", "1"]
    assert all(a.HasField("response") for a in answers)
    assert stream_end.value.code() == grpc.StatusCode.UNAVAILABLE
    # Under load, every call either succeeded or was refused as new with UNAVAILABLE.
    assert set(load.outcomes) <= {"OK", "UNAVAILABLE"}, (load.outcomes, load.details)
    assert load.outcomes["OK"] > 0
    log = server.log()
    assert "Traceback" not in log and "still running after" not in log
