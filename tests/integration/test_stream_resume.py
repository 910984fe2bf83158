"""Streams of files lose nothing to transient failures: a server killed and restarted in the
middle of ``axon classify``, and files refused by a full queue, each still get exactly one
answer, in input order."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from axon.client.common import RetryPolicy
from axon.client.demo import SAMPLES
from axon.client.file_stream import classify_files
from axon.client.server_process import ServerProcess, free_port, start_server
from axon.client.sync_client import AxonClient
from axon.model_repository import CONFIG_FILENAME
from tests.support.repositories import DIGITS
from tests.support.stall_model import STALL_CONFIG, save_stall_model, stall_request

STALLED = "stalled"


def sample_copies(folder: Path, count: int) -> list[Path]:
    """``count`` PNG files, copies of the shipped samples under distinct names."""
    folder.mkdir()
    samples = sorted(SAMPLES.glob("*.png"))
    copies = []
    for index in range(count):
        copy = folder / f"{index:04d}-{samples[index % len(samples)].name}"
        shutil.copyfile(samples[index % len(samples)], copy)
        copies.append(copy)
    return copies


class LineReader:
    """Collects a child's stdout lines on a thread, so the test can wait for a count."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while len(self.lines) < count:
            assert time.monotonic() < end, f"{len(self.lines)} lines after {timeout} s"
            time.sleep(0.02)

    def join(self) -> None:
        self._thread.join(timeout=60)


def test_classify_resumes_the_stream_across_a_killed_server(serving_repository: Path,
                                                             tmp_path: Path) -> None:
    """The paths go in on stdin in three parts: before the kill, while no server runs, after
    the restart. The stream breaks, is opened again, and what it left unanswered is sent
    again: each file gets one line, in input order, none an error."""
    files = sample_copies(tmp_path / "images", 150)
    port = free_port()
    address = f"127.0.0.1:{port}"

    def serve(log: str) -> ServerProcess:
        return start_server(serving_repository, tmp_path / log, "--models", DIGITS,
                            "--address", address)

    first = serve("first.log")
    second: ServerProcess | None = None
    classify = subprocess.Popen(
        [sys.executable, "-m", "axon.cli", "classify", "-", "--address", address,
         "--model", DIGITS, "--json", "--window", "8"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert classify.stdin is not None and classify.stdout is not None
    output = LineReader(classify.stdout)
    try:
        classify.stdin.write("".join(f"{f}\n" for f in files[:50]))
        classify.stdin.flush()
        output.wait_for(50)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=30)
        classify.stdin.write("".join(f"{f}\n" for f in files[50:100]))
        classify.stdin.flush()
        time.sleep(0.5)  # the client finds the server gone and backs off
        second = serve("second.log")
        output.wait_for(100)
        classify.stdin.write("".join(f"{f}\n" for f in files[100:]))
        classify.stdin.close()
        status = classify.wait(timeout=120)
        output.join()
        assert classify.stderr is not None
        errors = classify.stderr.read()
        assert status == 0, errors
    finally:
        classify.kill()
        for server in (first, second):
            if server is not None:
                server.stop()
    assert "classification stream interrupted" in errors, "the kill broke nothing: untested"
    assert "150 image(s) in" in errors and "0 error(s)" in errors
    answers = [json.loads(line) for line in output.lines]
    assert [a["path"] for a in answers] == [str(f) for f in files]
    assert [a for a in answers if "error" in a] == []
    assert all(a["classes"] and a["model"] == DIGITS for a in answers)


def test_files_refused_by_a_full_queue_are_sent_again(tmp_path: Path) -> None:
    """A model with a queue of one image, kept busy by another caller's long request: most
    stream messages (one file each: the model takes one image per request) are refused with
    RESOURCE_EXHAUSTED at first. With retries each file is answered in the end; without, the
    refusals are what comes back (so the first half is not passing by luck)."""
    files = sample_copies(tmp_path / "images", 60)
    repository = tmp_path / "models"
    save_stall_model(repository / STALLED / "1", STALLED)
    (repository / STALLED / CONFIG_FILENAME).write_text(json.dumps(
        {**STALL_CONFIG, "max_batch_size": 1, "max_queue_size": 1}))
    server = start_server(repository, tmp_path / "server.log")
    try:
        patient = RetryPolicy(attempts=200, initial_backoff=0.005, max_backoff=0.05)
        with AxonClient(server.address, retry=patient) as client:
            stalled = client.inference.ModelInfer.future(stall_request(STALLED, 1.0),
                                                         timeout=30)
            time.sleep(0.2)
            results = list(classify_files(client, files, model=STALLED, window=16))
            stalled.result()
            assert [r.path for r in results] == files
            assert [r.error for r in results if r.error] == []
            assert client.retries > 0
        with AxonClient(server.address, retry=RetryPolicy(attempts=1)) as client:
            stalled = client.inference.ModelInfer.future(stall_request(STALLED, 3.0),
                                                         timeout=30)
            time.sleep(0.2)
            results = list(classify_files(client, files, model=STALLED, window=16))
            stalled.result()
            assert [r.path for r in results] == files
            refused = [r.error for r in results if r.error]
            assert refused and all(e.startswith("RESOURCE_EXHAUSTED: ") for e in refused)
    finally:
        server.stop()
