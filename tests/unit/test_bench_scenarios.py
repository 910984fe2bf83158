"""``axon bench``'s pure pieces: the scenario syntax, the open-loop schedule and its checks,
h2load's open-loop plan, the python generator's scheduler against a fake call, and what bench
reads in a server's log."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from axon.benchmarks.aio_load import CallFailedError, open_loop
from axon.benchmarks.bench import check_counters
from axon.benchmarks.cli import profile_lines, second_looks
from axon.benchmarks.loadgen import (
    H2LOAD_THREADS_ENV,
    Call,
    LoadError,
    LoadResult,
    closed_loop_flags,
)
from axon.benchmarks.scenarios import (
    H2loadPlan,
    OpenLoopSchedule,
    Scenario,
    ScenarioError,
    lateness,
    parse_scenarios,
)


def test_scenarios_parse_closed_and_open_loops() -> None:
    closed, opened, fractional = parse_scenarios("64x1, 2000/sx1,12.5/sx64")
    assert (closed.mode, closed.callers, closed.rate, closed.images) == ("closed", 64, None, 1)
    assert (opened.mode, opened.callers, opened.rate, opened.images) == ("open", None, 2000, 1)
    assert (fractional.rate, fractional.images) == (12.5, 64)
    assert [s.label for s in (closed, opened, fractional)] == ["64x1", "2000/sx1", "12.5/sx64"]


@pytest.mark.parametrize("text", ["64", "64x", "x1", "64y1", "2000/s", "2000x1/s", "-5x1",
                                  "2000/minx1", "1e3/sx1", ""])
def test_a_bad_scenario_names_both_syntaxes(text: str) -> None:
    with pytest.raises(ScenarioError, match=r"CALLERSxIMAGES.* RATE/sxIMAGES"):
        parse_scenarios(text)


@pytest.mark.parametrize("text", ["0x1", "4x0", "0/sx1", "100/sx0"])
def test_zero_callers_rates_and_images_are_refused(text: str) -> None:
    with pytest.raises(ScenarioError, match="bad scenario"):
        Scenario.parse(text)


def test_a_scenario_is_either_closed_or_open() -> None:
    with pytest.raises(ScenarioError):
        Scenario(1, callers=4, rate=100.0)
    with pytest.raises(ScenarioError):
        Scenario(1)


def test_the_open_loop_schedule_spaces_requests_evenly() -> None:
    schedule = OpenLoopSchedule(rate=200, seconds=1.5)
    assert schedule.count == 300
    assert [schedule.due(i) for i in range(3)] == [0.0, 0.005, 0.01]
    assert schedule.span == pytest.approx(299 / 200)
    assert OpenLoopSchedule(rate=0.5, seconds=1).count == 1, "at least one request"


def test_lateness_is_measured_against_constant_spacing_from_the_first_send() -> None:
    sends = [10.0, 10.01, 10.02, 10.08, 10.04]  # the fourth in time order went out 50 ms late
    assert lateness(sends, rate=100) == pytest.approx([0.0, 0.0, 0.0, 0.01, 0.04])
    assert lateness([5.0, 5.0, 5.0], rate=10) == [0.0, 0.0, 0.0], "early counts as on time"


@pytest.mark.parametrize(("rate", "connections", "started", "period_ms"), [
    (50, 1, 1, 20), (500, 5, 1, 2), (2000, 20, 2, 1), (20_000, 64, 7, 1)])
def test_h2load_spreads_the_rate_over_staggered_connections(
        rate: float, connections: int, started: int, period_ms: int) -> None:
    plan = H2loadPlan.for_rate(rate, requests=100_000, max_outstanding=10_000)
    assert (plan.connections, plan.connections_per_period, plan.period_ms) == \
        (connections, started, period_ms)
    assert plan.rate_per_connection * plan.connections == pytest.approx(rate)
    assert plan.streams_per_connection * plan.connections >= 10_000
    # Every connection has started within one timer tick, so their ticks interleave.
    tick_ms = 1000 * max(0.01, 1 / plan.rate_per_connection)
    assert math.ceil(connections / started) * period_ms <= tick_ms + period_ms
    assert "-r" in plan.flags() and f"--rate-period={period_ms}ms" in plan.flags()


def test_h2load_takes_its_threads_from_the_environment_one_per_connection_at_most(
        monkeypatch: pytest.MonkeyPatch) -> None:
    call = Call("127.0.0.1:1", "/inference.GRPCInferenceService/ModelInfer", b"")
    many, few = Scenario.parse("64x1@64"), Scenario.parse("2x8")
    monkeypatch.delenv(H2LOAD_THREADS_ENV, raising=False)
    assert closed_loop_flags(call, many, 5) == ["-D", "5000ms", "-c", "64", "-m", "1", "-t", "1"]
    monkeypatch.setenv(H2LOAD_THREADS_ENV, "4")
    assert closed_loop_flags(call, many, 5)[-2:] == ["-t", "4"]
    assert closed_loop_flags(call, few, 0.3) == ["-D", "300ms", "-c", "2", "-m", "1", "-t", "2"]
    monkeypatch.setenv(H2LOAD_THREADS_ENV, "0")
    with pytest.raises(LoadError, match="AXON_BENCH_H2LOAD_THREADS must be a whole number"):
        closed_loop_flags(call, many, 5)


def test_h2load_never_opens_more_connections_than_requests() -> None:
    assert H2loadPlan.for_rate(10_000, requests=3, max_outstanding=10).connections == 3


def result(sent: int, succeeded: int, errors: dict[str, int]) -> LoadResult:
    return LoadResult(sent, succeeded, 1.0, np.ones(succeeded), 0.1, errors)


def test_a_closed_loop_or_h2load_tolerates_no_failure() -> None:
    check_counters(result(100, 100, {}), Scenario(1, callers=4), "python", succeeded=101,
                   failed=0)
    with pytest.raises(LoadError, match=r"the load is not what it seems$"):
        check_counters(result(100, 100, {}), Scenario(1, callers=4), "h2load", succeeded=100,
                       failed=1)
    with pytest.raises(LoadError, match="h2load sees HTTP status only"):
        check_counters(result(100, 100, {}), Scenario(1, rate=100), "h2load", succeeded=90,
                       failed=0)


def test_a_python_open_loop_reports_failures_the_server_also_counted() -> None:
    overloaded = result(100, 60, {"RESOURCE_EXHAUSTED": 30, "CANCELLED": 10})
    check_counters(overloaded, Scenario(1, rate=1000), "python", succeeded=60, failed=30)
    with pytest.raises(LoadError, match="counted 59 successes"):
        check_counters(overloaded, Scenario(1, rate=1000), "python", succeeded=59, failed=30)
    with pytest.raises(LoadError, match="41 failures"):
        check_counters(overloaded, Scenario(1, rate=1000), "python", succeeded=60, failed=41)


def test_the_open_loop_drops_requests_past_the_outstanding_cap_and_counts_codes() -> None:
    calls = 0

    async def slow_then_full(body: bytes, timeout: float | None = None) -> bytes:
        nonlocal calls
        calls += 1
        if calls % 2:
            await asyncio.sleep(0.3)
            return b""
        raise CallFailedError("RESOURCE_EXHAUSTED")

    # 50 requests due within 49 ms; the slow half holds its slots for 300 ms.
    outcome: dict[str, Any] = asyncio.run(
        open_loop([slow_then_full], b"", OpenLoopSchedule(rate=1000, seconds=0.05), 10))
    assert outcome["sent"] + outcome["not_sent"] == 50
    assert outcome["sent"] == calls
    assert outcome["not_sent"] >= 30, "at most 10 in flight: the slow ones keep theirs"
    assert outcome["errors_by_code"] == {"RESOURCE_EXHAUSTED": calls // 2}
    assert outcome["succeeded"] == len(outcome["latencies_ms"]) == calls - calls // 2
    # Latency runs from when each request was due, so it includes the 300 ms it was held.
    assert min(outcome["latencies_ms"]) >= 299
    assert outcome["seconds"] >= 0.3


LOADED = ("18:21:41 INFO    digits v1: no batch size gains enough on 2 onnxruntime threads; every "
          "execution runs on one; to be profiled again when the server is idle\n")
LOOKED = ("18:21:42 INFO    digits v1: profiled again while the server was idle: a batch of 256 "
          "images or more with no other execution in flight runs on 2 onnxruntime threads "
          "(256 images: 503 µs on one thread; 316 µs on 2, 571 µs of CPU)\n")


def test_bench_waits_for_a_second_look_the_server_announced_and_tells_its_choice(
        tmp_path: Path) -> None:
    """The server writes the second look's outcome later; bench, reading the same file,
    waits for it before measuring. A start that announced none is not waited for."""
    log = tmp_path / "server.log"
    log.write_text(LOADED)

    def look_later() -> None:
        time.sleep(0.3)
        with log.open("a") as out:
            out.write(LOOKED)

    writer = threading.Thread(target=look_later)
    writer.start()
    try:
        started = time.monotonic()
        assert second_looks(log) == [LOOKED.strip()[len("18:21:42 INFO    "):]]
        assert time.monotonic() - started >= 0.3
    finally:
        writer.join()
    assert profile_lines(log) == [LOADED.strip()[len("18:21:41 INFO    "):],
                                       LOOKED.strip()[len("18:21:42 INFO    "):]]
    log.write_text(LOADED.replace("; to be profiled again when the server is idle", ""))
    started = time.monotonic()
    assert second_looks(log) == [] and time.monotonic() - started < 0.1
