"""``axon serve --workers N``: worker processes sharing the gRPC and HTTP/REST ports, seen from
outside as one server. Real processes on loopback ports, real gRPC and HTTP, the real /metrics
page.

Connections, not calls, are spread over the workers (by the kernel, at random), so the tests
open many: 32 connections leave a worker of 3 without one with a chance of about 1 in 100,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from axon.benchmarks.bench import child_pids
from axon.client.async_client import AsyncAxonClient
from axon.client.common import NO_RETRIES, AxonClientError, RetryPolicy, infer_request
from axon.client.server_process import ServerProcess, free_port, start_server
from axon.client.sync_client import AxonClient
from axon.cpus import usable_cpus
from axon.model_repository import CONFIG_FILENAME
from axon.protocol import open_inference_pb2 as oip
from axon.protocol import open_inference_pb2_grpc as oip_grpc
from tests.support.http import get, json_infer, post_json
from tests.support.repositories import BROKEN, DIGITS
from tests.support.scrape import scrape
from tests.support.stall_model import STALL_CONFIG, save_stall_model, stall_request, trips_for

ONE = np.full((1, 784), 0.5, dtype=np.float32)
CONNECTIONS = 32
SLOW = "slow"
SLOW_TO_LOAD = "slow-to-load"
_PIDS = re.compile(r"(\d+) workers serve \S+ \(pids ([\d, ]+)\)")
_BACK = re.compile(r"worker (\d+) \(pid (\d+)\) serves again")


def group_repository(serving_repository: Path, root: Path) -> Path:
    """The digit model (two versions, policy all), a stall model to hold calls in flight, and
    a model file that is not ONNX (not loaded at start)."""
    for name in (DIGITS, BROKEN):
        shutil.copytree(serving_repository / name, root / name)
    save_stall_model(root / SLOW / "1", SLOW)
    (root / SLOW / CONFIG_FILENAME).write_text(json.dumps(STALL_CONFIG))
    return root


def infer_on_new_connections(address: str, calls: int, connections: int = CONNECTIONS) -> None:
    """``calls`` single-image calls over ``connections`` new connections: the kernel deals
    connections, not calls, to the workers (a restarted one too)."""
    with AxonClient(address, connections=connections) as client:
        for _ in range(calls):
            client.infer(DIGITS, ONE)


def two_workers(serving_repository: Path, tmp_path: Path, *flags: str) -> ServerProcess:
    """``axon serve --workers 2`` on ``group_repository``, serving the digit model."""
    root = group_repository(serving_repository, tmp_path / "models")
    return start_server(root, tmp_path / "server.log", "--workers", "2", "--models", DIGITS,
                        *flags)


def worker_pids(server: ServerProcess) -> dict[int, int]:
    """Each worker's process id, from the supervisor's log (restarts included)."""
    log = server.log()
    found = _PIDS.search(log)
    assert found, log
    pids = dict(enumerate(int(pid) for pid in found[2].split(", ")))
    for worker, pid in _BACK.findall(log):
        pids[int(worker)] = int(pid)
    return pids


def channels(address: str, count: int = CONNECTIONS, first: int = 0) -> list[grpc.Channel]:
    """``count`` channels, each its own connection (distinct options: ``first`` and on)."""
    return [grpc.insecure_channel(address, options=[("axon.connection", number)])
            for number in range(first, first + count)]


def outcomes(opened: list[grpc.Channel], model: str = DIGITS,
             images: np.ndarray = ONE) -> Counter[str]:
    """One ModelInfer call on each of ``opened``: how many ended with each status code."""
    seen: Counter[str] = Counter()
    for channel in opened:
        try:
            oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request(model, images),
                                                                  timeout=10)
            seen["OK"] += 1
        except grpc.RpcError as error:
            seen[error.code().name] += 1
    return seen


def kept_thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPU sets that the event loop's thread (the main one) and gRPC's threads of process
    ``pid`` may run on (``--pin-workers`` keeps them; executions and decoding run anywhere)."""
    found = {frozenset(os.sched_getaffinity(pid))}
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            name = Path(f"/proc/{pid}/task/{thread}/comm").read_text().strip()
            if name.startswith(("event_engine", "grpc")):
                found.add(frozenset(os.sched_getaffinity(int(thread))))
    return found


def halves(cpus: set[int]) -> list[set[frozenset[int]]] | None:
    """What the threads of worker 0 and worker 1 of two keep to (None: not evenly shared)."""
    ordered = sorted(cpus)
    if len(ordered) % 2:
        return None
    half = len(ordered) // 2
    return [{frozenset(ordered[:half])}, {frozenset(ordered[half:])}]


def wait_for(condition: object, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [2, 3])
def test_every_worker_takes_traffic_and_the_group_answers_as_one_server(
        serving_repository: Path, tmp_path: Path, workers: int) -> None:
    root = group_repository(serving_repository, tmp_path / "models")
    server = start_server(root, tmp_path / "server.log", "--workers", str(workers),
                          "--models", f"{DIGITS},{SLOW}")
    try:
        assert len(worker_pids(server)) == workers
        with AxonClient(server.address, connections=CONNECTIONS) as client:
            client.wait_ready()
            assert client.health() == "SERVING" and client.health(DIGITS) == "SERVING"
            for _ in range(10 * CONNECTIONS):
                client.infer(DIGITS, ONE, version="1")
            for _ in range(CONNECTIONS):
                client.classify([np.zeros((28, 28), dtype=np.uint8)] * 3, model=DIGITS,
                                version="2")
            (one,) = client.statistics(DIGITS, "1")
            (two,) = client.statistics(DIGITS, "2")
            index = {(m.name, m.version): m.state for m in client.repository_index()}
            described = {(m.name, m.version) for m in client.models()}
        # Statistics count every worker's calls once: summed, not one worker's share.
        assert one.inference_count == 10 * CONNECTIONS
        assert one.inference_stats.success.count == 10 * CONNECTIONS
        assert two.inference_count == 3 * CONNECTIONS
        assert one.execution_count <= 10 * CONNECTIONS
        assert index == {(DIGITS, "1"): "READY", (DIGITS, "2"): "READY",
                         (SLOW, "1"): "READY", (BROKEN, "1"): "UNAVAILABLE"}
        assert described == {(DIGITS, "1"), (DIGITS, "2"), (SLOW, "1")}

        assert server.metrics_port is not None
        page = scrape(server.metrics_port)
        assert page.value("axon_requests_total", model=DIGITS, version="1",
                          method="ModelInfer", code="OK", protocol="grpc") == 10 * CONNECTIONS
        assert page.value("axon_inference_items_total", model=DIGITS,
                          version="2") == 3 * CONNECTIONS
        answered = page.matching("axon_worker_requests_total")
        assert len(answered) == workers and min(answered.values()) > 0, answered
        # The asyncio client spreads its calls over every worker as the blocking one does.
        asyncio.run(infer_concurrently(server.address, 10 * CONNECTIONS))
        again = scrape(server.metrics_port).matching("axon_worker_requests_total")
        taken = {worker: again[worker] - answered[worker] for worker in answered}
        # More than the one readiness call it may have sent to a worker: inferences, on each.
        assert min(taken.values()) > 1 and sum(taken.values()) >= 10 * CONNECTIONS, taken
        assert page.value("axon_workers") == workers
        memory = page.matching("process_resident_memory_bytes")
        assert {dict(labels)["worker"] for labels in memory} == {str(w) for w in range(workers)}
        assert page.value("axon_model_ready", model=DIGITS) == 1
        assert page.value("axon_model_state", model=DIGITS, version="1", state="READY") == 1
        assert page.value("axon_worker_restarts_total", worker="0") == 0
        # Prometheus's own checker reads the merged page as valid exposition text.
        checked = subprocess.run(["promtool", "check", "metrics"], input=page.text,
                                 capture_output=True, text=True, check=False)
        assert "error" not in checked.stdout.lower() + checked.stderr.lower(), checked
    finally:
        assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log
    assert log.count("axon: serving 3 model version(s) on") == 1


async def infer_concurrently(address: str, calls: int) -> None:
    """``calls`` inferences at once from one AsyncAxonClient of CONNECTIONS connections."""
    async with AsyncAxonClient(address, connections=CONNECTIONS) as client:
        await client.wait_ready()
        await asyncio.gather(*(client.infer(DIGITS, ONE, version="1") for _ in range(calls)))


def test_one_connection_reaches_one_worker(serving_repository: Path, tmp_path: Path) -> None:
    """Why the clients open several: the kernel spreads connections, not calls."""
    server = two_workers(serving_repository, tmp_path)
    try:
        infer_on_new_connections(server.address, 100, connections=1)
        assert server.metrics_port is not None
        answered = scrape(server.metrics_port).matching("axon_worker_requests_total")
    finally:
        assert server.stop() == 0
    assert sorted(answered.values()) == [0, 100], answered


class Callers:
    """Threads calling ModelInfer back to back over their own connections, without retries
    (``raw``) or through the client's retries; outcomes counted by status code."""

    def __init__(self, address: str, *, raw: int, retrying: int,
                 wait_for_ready: bool = True) -> None:
        self.raw: Counter[str] = Counter()
        self.retried: Counter[str] = Counter()
        self.details: Counter[str] = Counter()
        self.timeline: list[tuple[float, float, str]] = []
        """Each raw call: when it was sent and when it ended (``time.monotonic()``), and
        how."""
        self._stop = threading.Event()
        self._wait_for_ready = wait_for_ready
        self._channels = channels(address, raw)
        retry = RetryPolicy(attempts=8, initial_backoff=0.05, max_backoff=0.5)
        self._clients = [AxonClient(address, retry=retry, timeout=20, connections=4)
                         for _ in range(retrying)]
        self._threads = [threading.Thread(target=self._call_raw, args=(c,))
                         for c in self._channels]
        self._threads += [threading.Thread(target=self._call, args=(c,)) for c in self._clients]
        for thread in self._threads:
            thread.start()

    def _call_raw(self, channel: grpc.Channel) -> None:
        infer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                # Waiting for a connection, as a caller without retries should: a reconnection
                # can fail while the kernel is still resetting the dead worker's connections.
                infer(infer_request(DIGITS, ONE), timeout=20,
                      wait_for_ready=self._wait_for_ready)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
                self.details[error.details() or ""] += 1
            self.raw[code] += 1
            self.timeline.append((sent, time.monotonic(), code))

    def _call(self, client: AxonClient) -> None:
        while not self._stop.is_set():
            try:
                client.infer(DIGITS, ONE)
                self.retried["OK"] += 1
            except AxonClientError as error:
                self.retried[error.code.name] += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        for channel in self._channels:
            channel.close()
        for client in self._clients:
            client.close()


def test_a_killed_worker_fails_only_its_calls_in_flight_and_comes_back(
        serving_repository: Path, tmp_path: Path) -> None:
    server = two_workers(serving_repository, tmp_path, "--pin-workers")
    callers = Callers(server.address, raw=16, retrying=4)
    try:
        wait_for(lambda: callers.raw["OK"] > 500, "calls before the kill")
        victim = worker_pids(server)[1]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: worker_pids(server)[1] != victim, "worker 1 to serve again")
        shares = halves(os.sched_getaffinity(0))
        if shares is not None:  # started again on the CPUs it had
            assert kept_thread_cpus(worker_pids(server)[1]) == shares[1]
        time.sleep(1.0)
        callers.stop()
        # The restarted worker takes new connections (those open went to the other one).
        infer_on_new_connections(server.address, 2 * CONNECTIONS)
        assert server.metrics_port is not None
        page = scrape(server.metrics_port)
    finally:
        callers.stop()
        assert server.stop() == 0
    # Each raw caller had at most one call in flight on the killed worker; it failed with a
    # code the clients retry. Calls made after it are answered by the living worker.
    failed = {code: count for code, count in callers.raw.items() if code != "OK"}
    assert set(failed) <= {"UNAVAILABLE"}, callers.raw
    assert sum(failed.values()) <= 16, callers.details
    # Through the client's retries, nothing fails.
    assert set(callers.retried) == {"OK"}, callers.retried
    assert page.value("axon_worker_restarts_total", worker="1") == 1
    assert page.value("axon_worker_restarts_total", worker="0") == 0
    assert page.value("axon_workers") == 2
    # The restarted worker answered calls; the group's counter never went down (the dead
    # worker's last scrape is kept, so it can only under-count what died with it).
    answered = page.matching("axon_worker_requests_total")
    assert answered[frozenset({("worker", "1")})] > 0, answered
    log = server.log()
    assert re.search(r"worker 1 \(pid \d+\) died \(signal SIGKILL\)", log), log
    assert "Traceback" not in log


def test_load_and_unload_take_effect_in_every_worker_before_they_return(
        serving_repository: Path, tmp_path: Path) -> None:
    server = two_workers(serving_repository, tmp_path)
    opened = channels(server.address)
    try:
        with AxonClient(server.address, retry=NO_RETRIES) as admin:
            assert outcomes(opened) == {"OK": CONNECTIONS}
            admin.unload_model(DIGITS)
            # Every connection, on whichever worker: unloaded the moment the call returned.
            assert outcomes(opened) == {"UNAVAILABLE": CONNECTIONS}
            assert admin.health(DIGITS) == "NOT_SERVING"
            admin.load_model(DIGITS)
            assert outcomes(opened) == {"OK": CONNECTIONS}
            # A model no worker can load: the caller gets the error once, the index its
            # reason, and what serves goes on serving.
            with pytest.raises(AxonClientError) as refused:
                admin.load_model(BROKEN)
            assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "worker" not in str(refused.value)  # every worker said the same
            reason = {m.name: m.reason for m in admin.repository_index()}[BROKEN]
            assert "failed to load" in reason
            assert outcomes(opened) == {"OK": CONNECTIONS}
            with pytest.raises(AxonClientError) as unknown:
                admin.unload_model("no-such-model")
            assert unknown.value.code == grpc.StatusCode.NOT_FOUND
    finally:
        for channel in opened:
            channel.close()
        assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_unload_and_load_under_load_take_effect_in_every_worker_when_they_return(
        serving_repository: Path, tmp_path: Path) -> None:
    server = two_workers(serving_repository, tmp_path)
    callers = Callers(server.address, raw=16, retrying=0)

    def more(code: str, than: int = 200) -> None:
        start = callers.raw[code]
        wait_for(lambda: callers.raw[code] > start + than, f"{than} more calls ending {code}")

    try:
        with AxonClient(server.address, retry=NO_RETRIES) as admin:
            for _ in range(3):
                more("OK")
                admin.unload_model(DIGITS)
                unloaded = time.monotonic()
                more("UNAVAILABLE")
                loading = time.monotonic()
                admin.load_model(DIGITS)
                loaded = time.monotonic()
                more("OK")
                # On any of 16 connections to either worker, a call sent after the unload
                # returned and answered before the load began was refused; one sent after
                # the load returned was answered. (One sent just before the load began may
                # reach the server after it: on 2 busy cores, milliseconds later.)
                between = [code for sent, done, code in callers.timeline
                           if sent > unloaded and done < loading]
                after = [code for sent, _, code in callers.timeline if sent > loaded]
                assert between and set(between) == {"UNAVAILABLE"}, Counter(between)
                assert after and set(after) == {"OK"}, Counter(after)
        callers.stop()
        assert server.metrics_port is not None
        answered = scrape(server.metrics_port).matching("axon_worker_requests_total")
    finally:
        callers.stop()
        assert server.stop() == 0
    # Calls in flight as the unload came got their answers or were refused, nothing else;
    # both workers took the load throughout.
    assert set(callers.raw) == {"OK", "UNAVAILABLE"}, callers.raw
    assert set(callers.details) == {f"model {DIGITS!r} is not loaded ({why})"
                                    for why in ("unloaded", "loading")}, callers.details
    assert len(answered) == 2 and min(answered.values()) > 100, answered
    assert "Traceback" not in server.log()


def test_a_model_one_worker_cannot_load_is_refused_by_the_group_and_reported(
        serving_repository: Path, tmp_path: Path) -> None:
    server = two_workers(serving_repository, tmp_path)
    opened = channels(server.address)
    try:
        with AxonClient(server.address, retry=NO_RETRIES, connections=1) as admin:
            assert outcomes(opened) == {"OK": CONNECTIONS}  # every connection open
            admin.repository_index()
            # Worker 1 runs out of file descriptors: it cannot read the repository, so it
            # cannot load a model that worker 0 can.
            victim = worker_pids(server)[1]
            usual = resource.prlimit(victim, resource.RLIMIT_NOFILE)
            open_now = len(os.listdir(f"/proc/{victim}/fd"))
            resource.prlimit(victim, resource.RLIMIT_NOFILE, (open_now, usual[1]))
            try:
                with pytest.raises(AxonClientError) as refused:
                    admin.load_model(SLOW)
                # A worker's unexpected error is answered (it once went unanswered, and the
                # group's model control waited for it for ever): INTERNAL, details logged.
                with pytest.raises(AxonClientError) as unreadable:
                    admin.repository_index()
            finally:
                resource.prlimit(victim, resource.RLIMIT_NOFILE, usual)
            assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
            said = refused.value.message
            assert said.startswith("worker 1: cannot read the model repository: Too many "
                                   "open files") and said.endswith("(no worker changed)"), said
            assert unreadable.value.code == grpc.StatusCode.INTERNAL
            assert "the server log has the details" in unreadable.value.message
            # Neither worker serves it, and the index says why.
            assert outcomes(opened, SLOW) == {"UNAVAILABLE": CONNECTIONS}
            index = {m.name: m for m in admin.repository_index()}
            assert index[SLOW].state == "UNAVAILABLE"
            assert index[SLOW].reason == f"failed to load: {said}"
            assert outcomes(opened) == {"OK": CONNECTIONS}  # what served goes on serving
            # Once the worker can, the same call loads it in both.
            admin.load_model(SLOW)
            assert outcomes(opened, SLOW) == {"OK": CONNECTIONS}
            assert {m.name: m.state for m in admin.repository_index()}[SLOW] == "READY"
        assert server.metrics_port is not None
        page = scrape(server.metrics_port)
    finally:
        for channel in opened:
            channel.close()
        assert server.stop() == 0
    assert page.value("axon_model_load_failures_total", model=SLOW) == 1  # once, not per worker
    log = server.log()
    assert log.count("Traceback") == 1, log
    assert re.search(r"internal error \w+ in worker 1: index", log), log


def test_no_worker_is_ready_until_every_worker_has_loaded_every_model(
        serving_repository: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(serving_repository / DIGITS, root / DIGITS)
    # About 2 s to load: a warm-up and three timed runs, all on images of zeros.
    save_stall_model(root / SLOW / "1", SLOW, idle_trips=trips_for(0.5))
    port = free_port()
    log = tmp_path / "server.log"
    opened = channels(f"127.0.0.1:{port}")
    held: int | None = None
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(start_server, root, log, "--workers", "2",
                               "--address", f"127.0.0.1:{port}")
        try:
            # One worker is held before it has loaded anything (as a rule, before it even
            # listens); the other loads alone.
            wait_for(lambda: len(group_workers(root)) == 2, "two worker processes")
            held = group_workers(root)[0]
            os.kill(held, signal.SIGSTOP)
            wait_for(lambda: re.search(rf"worker \d: loaded {SLOW} ", log.read_text()),
                     "the other worker to load every model")
            while_held = ready_answers(opened)
            unloads_while_held = unload_answers(opened, DIGITS)
            os.kill(held, signal.SIGCONT)
            held = None
            starting.result(timeout=120)
            # New connections, spread over both workers now.
            once_started = ready_answers(fresh := channels(f"127.0.0.1:{port}", first=100),
                                         wait_for_ready=True)
            digits_ready = oip_grpc.GRPCInferenceServiceStub(fresh[0]).ModelReady(
                oip.ModelReadyRequest(name=DIGITS), timeout=10).ready
            for channel in fresh:
                channel.close()
        finally:
            if held is not None:
                os.kill(held, signal.SIGCONT)
            for channel in opened:
                channel.close()
            server = starting.result(timeout=120)
            assert server.stop() == 0
    # The worker with every model in says it is not ready while the other one loads.
    assert while_held["False"] > 0 and "True" not in while_held, while_held
    assert once_started == {"True": CONNECTIONS}
    # A model change while the group starts is refused, not answered OK and applied to no
    # worker (the workers started later would then disagree with the ones serving).
    assert unloads_while_held["UNAVAILABLE"] > 0 and "OK" not in unloads_while_held, \
        unloads_while_held
    assert digits_ready
    assert "Traceback" not in server.log()


def unload_answers(opened: list[grpc.Channel], model: str) -> Counter[str]:
    """RepositoryModelUnload of ``model`` on every connection at once: how each ended."""
    calls = [oip_grpc.GRPCInferenceServiceStub(channel).RepositoryModelUnload.future(
        oip.RepositoryModelUnloadRequest(model_name=model), timeout=2) for channel in opened]
    said: Counter[str] = Counter()
    for call in calls:
        try:
            call.result()
            said["OK"] += 1
        except grpc.RpcError as error:
            said[error.code().name] += 1
    return said


def group_workers(root: Path) -> list[int]:
    """The worker processes, by process id, of the server serving ``root``: the children of
    the process whose command line names it, that multiprocessing started as workers."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(root) in (entry / "cmdline").read_text():
                return sorted(child for child in child_pids(int(entry.name))
                              if "spawn_main" in Path(f"/proc/{child}/cmdline").read_text())
        except OSError:  # a process that ended meanwhile
            continue
    return []


def ready_answers(opened: list[grpc.Channel], *, wait_for_ready: bool = False,
                  ) -> Counter[str]:
    """ServerReady on every connection at once: how many said True, False, or failed how."""
    calls = [oip_grpc.GRPCInferenceServiceStub(channel).ServerReady.future(
        oip.ServerReadyRequest(), timeout=10 if wait_for_ready else 1,
        wait_for_ready=wait_for_ready) for channel in opened]
    said: Counter[str] = Counter()
    for call in calls:
        try:
            said[str(call.result().ready)] += 1
        except grpc.RpcError as error:
            said[error.code().name] += 1
    return said


def test_a_worker_killed_while_a_load_is_prepared_leaves_the_model_in_no_worker(
        serving_repository: Path, tmp_path: Path) -> None:
    root = group_repository(serving_repository, tmp_path / "models")
    # About 2 s to load: time to kill a worker while it prepares.
    save_stall_model(root / SLOW_TO_LOAD / "1", SLOW_TO_LOAD, idle_trips=trips_for(0.5))
    server = start_server(root, tmp_path / "server.log", "--workers", "2", "--models", DIGITS)
    first_pixel_one = np.ones((1, 784), np.float32)  # answered at once by that model
    try:
        with AxonClient(server.address, retry=NO_RETRIES, connections=1) as admin, \
                ThreadPoolExecutor(1) as pool:
            admin.repository_index()
            # The worker the admin's call does not reach: its death fails the change, not the
            # admin's connection.
            victim = next(pid for pid in worker_pids(server).values()
                          if pid != connected_worker(server))
            loading = pool.submit(admin.load_model, SLOW_TO_LOAD)
            wait_for(lambda: {m.name: m.state for m in admin.repository_index()}.get(
                SLOW_TO_LOAD) == "LOADING", "the load to be prepared")
            os.kill(victim, signal.SIGKILL)
            with pytest.raises(AxonClientError) as failed:
                loading.result(timeout=60)
            assert failed.value.code == grpc.StatusCode.UNAVAILABLE  # retried by the clients
            assert re.fullmatch(r"worker \d: exited \(signal SIGKILL\) \(no worker changed\)",
                                failed.value.message), failed.value.message
            wait_for(lambda: "serves again" in server.log(), "the worker to serve again")
            # New connections, over both workers: none serves the model, and each says why
            # in the same words (the restarted one too); both serve it once it is loaded.
            fresh = channels(server.address, first=100)
            said: Counter[tuple[grpc.StatusCode, str | None]] = Counter()
            for channel in fresh:
                with pytest.raises(grpc.RpcError) as refused:
                    oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                        infer_request(SLOW_TO_LOAD, first_pixel_one), timeout=10)
                said[refused.value.code(), refused.value.details()] += 1
            assert said == {(grpc.StatusCode.UNAVAILABLE, f"model {SLOW_TO_LOAD!r} is not "
                             f"loaded (failed to load: {failed.value.message})"): CONNECTIONS}
            assert outcomes(fresh) == {"OK": CONNECTIONS}
            admin.load_model(SLOW_TO_LOAD)
            assert outcomes(fresh, SLOW_TO_LOAD, first_pixel_one) == {"OK": CONNECTIONS}
            for channel in fresh:
                channel.close()
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_a_stuck_worker_shows_as_unresponsive_and_holds_up_no_one(
        serving_repository: Path, tmp_path: Path) -> None:
    # Never killed for it here (the next test has the watchdog).
    server = two_workers(serving_repository, tmp_path, "--worker-timeout-seconds", "0")
    assert server.metrics_port is not None
    stuck: int | None = None
    try:
        infer_on_new_connections(server.address, 4 * CONNECTIONS)
        with AxonClient(server.address, retry=NO_RETRIES, connections=1, timeout=60) as admin:
            admin.repository_index()
            before = scrape(server.metrics_port)
            # The worker the admin's calls do not reach stops answering anything (SIGSTOP: as
            # a stuck event loop would).
            stuck = next(pid for pid in worker_pids(server).values()
                         if pid != connected_worker(server))
            number = next(n for n, pid in worker_pids(server).items() if pid == stuck)
            os.kill(stuck, signal.SIGSTOP)
            during = [scrape(server.metrics_port) for _ in range(3)]
            with pytest.raises(AxonClientError) as waited:
                admin.statistics(DIGITS)
            os.kill(stuck, signal.SIGCONT)
            stuck = None
            after = scrape(server.metrics_port)
            assert [s.name for s in admin.statistics(DIGITS)] == [DIGITS, DIGITS]
    finally:
        if stuck is not None:
            os.kill(stuck, signal.SIGCONT)
        assert server.stop() == 0
    other = str(1 - number)
    assert before.value("axon_worker_unresponsive", worker=str(number)) == 0
    answered = before.value("axon_worker_requests_total", worker=str(number))
    served = {"model": DIGITS, "version": "2", "method": "ModelInfer", "code": "OK",
              "protocol": "grpc"}
    assert answered > 0 and before.value("axon_requests_total", **served) >= 4 * CONNECTIONS
    for page in during:
        # The page still answers, the stuck worker flagged and its counters kept at their last
        # values (a counter that went down would read as a reset).
        assert page.value("axon_worker_unresponsive", worker=str(number)) == 1
        assert page.value("axon_worker_unresponsive", worker=other) == 0
        assert page.value("axon_worker_requests_total", worker=str(number)) == answered
        assert page.value("axon_requests_total", **served) == \
            before.value("axon_requests_total", **served)
    assert after.value("axon_worker_unresponsive", worker=str(number)) == 0
    # A caller of something every worker must answer gets a clear error, not its deadline.
    assert waited.value.code == grpc.StatusCode.UNAVAILABLE
    assert waited.value.message == f"worker {number} did not answer in 10 s"
    log = server.log()
    assert f"worker {number} did not report its metrics in 3 s" in log
    assert "Traceback" not in log


def test_a_worker_stuck_past_the_worker_timeout_is_killed_and_started_again(
        serving_repository: Path, tmp_path: Path) -> None:
    server = two_workers(serving_repository, tmp_path, "--worker-timeout-seconds", "2")
    try:
        stuck = worker_pids(server)[1]
        os.kill(stuck, signal.SIGSTOP)  # alive, answering nothing
        wait_for(lambda: worker_pids(server)[1] != stuck, "worker 1 to be started again")
        # New connections reach the new worker too.
        infer_on_new_connections(server.address, 4 * CONNECTIONS)
        assert server.metrics_port is not None
        page = scrape(server.metrics_port)
    finally:
        assert server.stop() == 0
    assert page.value("axon_worker_restarts_total", worker="1") == 1
    assert page.value("axon_worker_restarts_total", worker="0") == 0
    assert page.value("axon_worker_unresponsive", worker="1") == 0
    assert page.value("axon_worker_requests_total", worker="1") > 0
    log = server.log()
    assert f"worker 1 (pid {stuck}) has not answered for 2 s; killing it" in log, log
    assert re.search(rf"worker 1 \(pid {stuck}\) died \(signal SIGKILL\)", log), log
    assert "Traceback" not in log


def connected_worker(server: ServerProcess) -> int:
    """The process id of the one worker holding an established connection on the server's
    gRPC port (call it with one connection open)."""
    port = f"{server.port:04X}"
    sockets = set()
    # gRPC's sockets are IPv6 ones with mapped IPv4 addresses, where the kernel has IPv6.
    tables = "".join(table.read_text() for table in (Path("/proc/net/tcp"),
                                                     Path("/proc/net/tcp6")) if table.exists())
    for line in tables.splitlines():
        fields = line.split()
        if fields[1].endswith(f":{port}") and fields[3] == "01":  # local port, ESTABLISHED
            sockets.add(f"socket:[{fields[9]}]")
    holders = {pid for pid in worker_pids(server).values()
               for fd in Path(f"/proc/{pid}/fd").iterdir()
               if os.readlink(fd) in sockets}
    assert len(holders) == 1, holders
    return holders.pop()


def test_sigterm_drains_every_worker_under_load(serving_repository: Path,
                                                tmp_path: Path) -> None:
    root = group_repository(serving_repository, tmp_path / "models")
    server = start_server(root, tmp_path / "server.log", "--workers", "2",
                          "--models", f"{DIGITS},{SLOW}", "--grace-seconds", "15")
    opened = channels(server.address, 8)
    # Not waiting for a connection: once the workers have closed the port, a call fails at
    # once (UNAVAILABLE) instead of waiting out its deadline.
    callers = Callers(server.address, raw=8, retrying=0, wait_for_ready=False)
    try:
        wait_for(lambda: callers.raw["OK"] > 200, "calls before the signal")
        # Calls of about a second each on every connection: in flight on both workers when
        # the signal comes.
        held = [oip_grpc.GRPCInferenceServiceStub(c).ModelInfer.future(
            stall_request(SLOW, 1.0), timeout=60) for c in opened]
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        for future in held:  # admitted before the signal: answered
            assert future.result().outputs[1].shape == [1, 10]
        assert server.process.wait(timeout=60) == 0
    finally:
        callers.stop()
        for channel in opened:
            channel.close()
        server.stop()
    # Under load, every call either succeeded or was refused as new: UNAVAILABLE from a
    # draining worker, or CANCELLED by gRPC for a call that reached a worker as it closed its
    # port, before the worker saw it (both retried by Axon's clients). A worker closes its port
    # only once its admitted calls are answered.
    assert set(callers.raw) <= {"OK", "UNAVAILABLE", "CANCELLED"}, callers.raw
    assert callers.raw["CANCELLED"] <= 2 * 8, callers.raw  # at most one per caller and worker
    log = server.log()
    assert log.count("stopping: in-flight requests get up to 15.0 s") == 2  # each worker
    assert "Traceback" not in log and "still running after" not in log


def test_a_model_a_worker_cannot_load_fails_the_start_with_one_line(
        serving_repository: Path, tmp_path: Path) -> None:
    root = group_repository(serving_repository, tmp_path / "models")
    completed = subprocess.run(
        [sys.executable, "-m", "axon.cli", "serve", "--workers", "2", "--model-repository",
         str(root), "--models", f"{DIGITS},{BROKEN}", "--address", "127.0.0.1:0",
         "--http-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 1
    errors = [line for line in completed.stderr.splitlines() if line.startswith("axon: error")]
    assert len(errors) == 1, completed.stderr
    assert BROKEN in errors[0] and "onnxruntime cannot load it" in errors[0]
    assert "Traceback" not in completed.stderr
    assert "axon: serving" not in completed.stdout


@pytest.mark.parametrize("held", ["grpc", "http"])
def test_a_port_another_program_holds_fails_with_one_line(serving_repository: Path,
                                                         tmp_path: Path, held: str) -> None:
    root = group_repository(serving_repository, tmp_path / "models")
    # Even a program that shares its port (SO_REUSEPORT, as gRPC servers do by default).
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"} | {held: f"127.0.0.1:{port}"}
        completed = subprocess.run(
            [sys.executable, "-m", "axon.cli", "serve", "--workers", "2", "--model-repository",
             str(root), "--models", DIGITS, "--address", ports["grpc"],
             "--http-address", ports["http"], "--metrics-address", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 1
    what = " (HTTP)" if held == "http" else ""
    # The words of a one-process server (tests/integration/test_server_lifecycle.py).
    assert completed.stderr.strip().splitlines() == [
        f"axon: error: cannot listen on 127.0.0.1:{port}{what}: Address already in use"]


def test_http_requests_reach_every_worker_and_model_control_acts_on_all(
        serving_repository: Path, tmp_path: Path) -> None:
    """Every worker serves the HTTP/REST port too; over HTTP, statistics and metrics describe
    the whole group and loads and unloads change every worker before they return."""
    server = two_workers(serving_repository, tmp_path)
    address, infer = server.http_address, f"/v2/models/{DIGITS}/versions/1/infer"
    request = json_infer(ONE)

    def statuses() -> Counter[int]:
        """One inference on each of CONNECTIONS fresh connections (the kernel spreads them)."""
        return Counter(post_json(address, infer, request).status for _ in range(CONNECTIONS))

    try:
        assert get(address, "/v2/health/ready").status == 200
        assert statuses() == {200: CONNECTIONS}
        (stats,) = get(address, f"/v2/models/{DIGITS}/versions/1/stats").json()["model_stats"]
        # Summed over the workers, whichever one answered the statistics call.
        assert stats["inference_count"] == CONNECTIONS
        assert server.metrics_port is not None
        page = scrape(server.metrics_port)
        assert page.value("axon_requests_total", model=DIGITS, version="1", method="ModelInfer",
                          code="OK", protocol="http") == CONNECTIONS
        # Only HTTP has been called: each worker answered some of it.
        answered = page.matching("axon_worker_requests_total")
        assert len(answered) == 2 and min(answered.values()) > 0, answered

        assert post_json(address, f"/v2/repository/models/{DIGITS}/unload", {}).status == 200
        # On every connection, whichever worker: unloaded the moment the call returned.
        assert statuses() == {503: CONNECTIONS}
        index = post_json(address, "/v2/repository/index", {}).json()
        assert {(m["name"], m["version"], m["state"]) for m in index if m["name"] == DIGITS} \
            == {(DIGITS, "1", "UNAVAILABLE"), (DIGITS, "2", "UNAVAILABLE")}
        assert post_json(address, f"/v2/repository/models/{DIGITS}/load", {}).status == 200
        assert statuses() == {200: CONNECTIONS}
        assert post_json(address, "/v2/repository/models/no-such-model/unload",
                         {}).status == 404
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("pinned", [True, False])
def test_pinned_workers_keep_their_loop_and_grpc_threads_to_their_own_share_of_the_cpus(
        serving_repository: Path, tmp_path: Path, pinned: bool) -> None:
    cpus = os.sched_getaffinity(0)  # the server's too: it inherits this process's
    server = two_workers(serving_repository, tmp_path, *(("--pin-workers",) if pinned else ()))
    try:
        pids = worker_pids(server)
        seen = [kept_thread_cpus(pids[index]) for index in range(2)]
        with AxonClient(server.address) as client:
            assert client.ready()
    finally:
        assert server.stop() == 0
    shares = halves(cpus) if pinned else None
    assert seen == (shares or [{frozenset(cpus)}] * 2)
    assert ("; worker 0 on CPU" in server.log()) == (shares is not None)


def test_auto_starts_one_worker_per_usable_cpu(serving_repository: Path,
                                               tmp_path: Path) -> None:
    root = group_repository(serving_repository, tmp_path / "models")
    cpus = usable_cpus()
    # "auto" is the default (tests/unit/test_server_config.py); the tests' own default is 1.
    server = start_server(root, tmp_path / "server.log", "--models", DIGITS,
                          env={"AXON_WORKERS": "auto"})
    try:
        if cpus > 1:
            assert len(worker_pids(server)) == cpus
            assert f"starting {cpus} worker processes" in server.log()
        else:
            assert "worker processes" not in server.log()
        with AxonClient(server.address) as client:
            assert client.ready()
    finally:
        assert server.stop() == 0


def test_a_worker_that_dies_after_loading_while_another_still_loads_is_started_again(
        serving_repository: Path, tmp_path: Path) -> None:
    """Loaded and ready, then killed (out of memory, say) while the other worker still loads:
    the server starts anyway and starts that worker's slot again, as for any dead worker,
    instead of failing to start or serving one worker short for good."""
    root = tmp_path / "models"
    shutil.copytree(serving_repository / DIGITS, root / DIGITS)
    save_stall_model(root / SLOW / "1", SLOW, idle_trips=trips_for(0.5))
    port = free_port()
    log = tmp_path / "server.log"
    held: int | None = None
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(start_server, root, log, "--workers", "2",
                               "--address", f"127.0.0.1:{port}")
        try:
            wait_for(lambda: len(group_workers(root)) == 2, "two worker processes")
            held, loaded = group_workers(root)
            os.kill(held, signal.SIGSTOP)
            wait_for(lambda: re.search(rf"worker \d: loaded {SLOW} ", log.read_text()),
                     "the other worker to load every model")
            time.sleep(1.0)  # its READY on its way to the supervisor
            os.kill(loaded, signal.SIGKILL)
            os.kill(held, signal.SIGCONT)
            held = None
            server = starting.result(timeout=120)
            wait_for(lambda: "serves again" in log.read_text(), "the slot to serve again")
            fresh = channels(f"127.0.0.1:{port}", first=200)
            answers = ready_answers(fresh, wait_for_ready=True)
            for channel in fresh:
                channel.close()
        finally:
            if held is not None:
                os.kill(held, signal.SIGCONT)
            server = starting.result(timeout=120)
            workers_now = group_workers(root)
            assert server.stop() == 0
    assert answers == {"True": CONNECTIONS}
    assert "died after loading its models" in server.log()
    assert loaded not in workers_now and len(workers_now) == 2
    assert "Traceback" not in server.log()
