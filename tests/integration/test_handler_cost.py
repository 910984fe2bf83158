"""benchmarks/handler_cost.py: Axon's ModelInfer handler against the naive server's, in one
process, on a real trained model."""

from __future__ import annotations

from pathlib import Path

import pytest

from axon.benchmarks.handler_cost import main
from tests.support.repositories import DIGITS


def table_rows(output: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in output.splitlines()
            if line.startswith("| ") and line[2].isdigit()]


def test_each_request_size_gets_both_handlers_costs(serving_repository: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", DIGITS, "--model-repository", str(serving_repository),
                 "--images", "1,3", "--calls", "20", "--rounds", "2"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["1", "3"]
    for row in rows:
        onnxruntime, naive, axon, extra = (float(cell) for cell in row[1:5])
        assert min(onnxruntime, naive, axon) > 0
        # Each figure is printed rounded (0.1 µs, the ratio to 0.01): compared within that.
        assert extra == pytest.approx(axon - naive, abs=0.16)
        assert float(row[5].rstrip("x")) == pytest.approx(axon / naive, rel=0.02, abs=0.006)


def test_a_request_axon_refuses_fails_the_run_with_its_status(
        serving_repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # More images than the model's max_batch_size: Axon answers INVALID_ARGUMENT, and a cost
    # measured on refusals would mean nothing.
    assert main(["--model", DIGITS, "--model-repository", str(serving_repository),
                 "--images", "257", "--calls", "1", "--rounds", "1"]) == 1
    error = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in error
    assert "257" in error


def test_an_unknown_model_is_refused_before_anything_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "nope", "--model-repository", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no model 'nope'" in capsys.readouterr().err
