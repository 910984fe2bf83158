"""benchmarks/thread_times.py: every thread of Axon and of the naive server read around real
h2load runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from axon.benchmarks.thread_times import LOOP_THREAD, main
from tests.support.repositories import DIGITS


def rows(output: str) -> dict[tuple[str, str], list[str]]:
    """The printed table: (server, thread) -> its other cells."""
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in output.splitlines()
             if line.startswith("| ") and not line.startswith(("| server", "| ---"))]
    return {(row[0], row[1]): row[2:] for row in cells}


def number(cell: str) -> float:
    return float(cell.strip("*").replace(",", ""))


def test_both_servers_threads_are_read_under_load(
        serving_repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", DIGITS, "--model-repository", str(serving_repository),
                 "--scenario", "4x8", "--seconds", "0.5", "--rounds", "1"]) == 0
    output = capsys.readouterr().out
    assert re.search(r"^axon: [\d,]+ requests/s", output, re.MULTILINE), output
    assert re.search(r"^most host CPU steal in a round: \d+\.\d%", output, re.MULTILINE), output
    table = rows(output)
    for server in ("axon", "naive"):
        loop = table[(server, LOOP_THREAD)]
        total = number(table[(server, "**all threads**")][0])
        # Each server's event loop parses and answers every call: it takes CPU for each.
        assert number(loop[0]) > 0
        assert number(loop[0]) <= total
        threads = [key[1] for key in table if key[0] == server]
        assert threads[0] == LOOP_THREAD  # listed first, the rest by CPU
        assert "event_engine" in threads  # gRPC core's own threads do part of every call


def test_an_open_loop_scenario_is_refused(serving_repository: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", DIGITS, "--model-repository", str(serving_repository),
              "--scenario", "100/sx1"])
    assert exit_info.value.code == 2
    assert "closed loop" in capsys.readouterr().err
