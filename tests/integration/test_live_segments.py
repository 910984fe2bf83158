"""benchmarks/live_segments.py: Axon's and the naive server's ModelInfer timed piece by piece
in real server processes under h2load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from axon.benchmarks.live_segments import (
    CHECKS,
    ONNXRUNTIME,
    OUTSIDE_ONNXRUNTIME,
    PARSE,
    WHOLE,
    main,
)
from tests.support.repositories import DIGITS


def table(output: str) -> dict[str, list[str]]:
    """The printed table: piece -> its other cells."""
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in output.splitlines()
            if line.startswith("| ") and not line.startswith(("| piece", "| ---"))]
    return {row[0]: row[1:] for row in rows}


def test_every_piece_of_a_call_is_timed_in_both_servers(
        serving_repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", DIGITS, "--model-repository", str(serving_repository),
                 "--seconds", "0.5", "--rounds", "1"]) == 0
    output = capsys.readouterr().out
    assert re.search(r"^most host CPU steal in a round: \d+\.\d%", output, re.MULTILINE), output
    pieces = table(output)
    calls = int(pieces[WHOLE][0].replace(",", ""))
    assert calls > 100  # a lone caller answered for 1.5 s
    axon = {piece: float(cells[1]) for piece, cells in pieces.items() if cells[1]}
    naive = {piece: float(cells[2]) for piece, cells in pieces.items() if cells[2]}
    assert set(naive) == {PARSE, WHOLE, ONNXRUNTIME, OUTSIDE_ONNXRUNTIME}
    for piece, cells in pieces.items():
        if piece == OUTSIDE_ONNXRUNTIME:
            continue
        # Each runs once per call (onnxruntime also when the model loads and warms up), but the
        # response only for calls that got one: when h2load's run ends it drops the call in
        # flight, which may be waiting for its batch then. One caller, a warm-up and a timed
        # run in the one round: at most two such calls.
        least = calls - 2 if piece == "response" else calls
        assert int(cells[0].replace(",", "")) >= least, piece
    steps = [CHECKS, "batcher, statistics, model", "response"]
    assert all(axon[step] > 0 for step in steps)
    # The pieces run one after another inside the servicer, which runs inside the whole call
    # (each figure is rounded to 0.1 µs).
    assert sum(axon[step] for step in steps) <= axon["servicer: ModelInfer"] + 0.3
    assert axon["servicer: ModelInfer"] < axon[WHOLE]
    inside_checks = ["model lookup, inside the row above",
                     "finiteness check, inside the row above"]
    assert all(axon[piece] > 0 for piece in inside_checks)
    assert sum(axon[piece] for piece in inside_checks) <= axon[CHECKS] + 0.2
    assert axon[PARSE] > 0 and naive[PARSE] > 0
    for server in (axon, naive):
        assert 0 < server[ONNXRUNTIME] < server[WHOLE]
        assert server[OUTSIDE_ONNXRUNTIME] == pytest.approx(
            server[WHOLE] - server[ONNXRUNTIME], abs=0.16)


def test_an_open_loop_scenario_is_refused(serving_repository: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", DIGITS, "--model-repository", str(serving_repository),
              "--scenario", "100/sx1"])
    assert exit_info.value.code == 2
    assert "closed loop" in capsys.readouterr().err
