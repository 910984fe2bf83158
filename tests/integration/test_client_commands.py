"""``axon classify`` and ``axon bench`` as a user runs them, against real servers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from clients.demo import SAMPLES
from clients.server_process import ServerProcess
from tests.support.repositories import DIGITS


def axon(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "axon.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_classify_prints_each_image_with_its_top_classes(server: ServerProcess) -> None:
    result = axon("classify", SAMPLES, "--address", server.address, "--model", DIGITS,
                  "--top-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == 10
    for answer in answers:
        assert answer["model"] == DIGITS and answer["version"] == "2"
        assert len(answer["classes"]) == 3
        probabilities = [c["probability"] for c in answer["classes"]]
        assert probabilities == sorted(probabilities, reverse=True)
    true_labels = [re.match(r"digit-(\d)", Path(a["image"]).name)[1]  # type: ignore[index]
                   for a in answers]
    correct = sum(a["classes"][0]["label"] == t for a, t in zip(answers, true_labels, strict=True))
    assert correct >= 7


def test_classify_reports_server_errors_in_one_line(server: ServerProcess,
                                                    tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.png"
    bogus.write_bytes(b"not a picture")
    result = axon("classify", bogus, "--address", server.address, "--model", DIGITS)
    assert result.returncode == 1
    assert "INVALID_ARGUMENT: image 0: 13-byte image: not a decodable" in result.stderr
    assert "Traceback" not in result.stderr
    missing = axon("classify", tmp_path / "absent.png", "--address", server.address)
    assert missing.returncode == 1 and "absent.png: no such file or folder" in missing.stderr


def test_bench_measures_both_generators_and_checks_the_server_counters(
        serving_repository: Path, tmp_path: Path) -> None:
    """A short run to prove the benchmark works; its numbers are not asserted (not a timing
    test): only that every scenario ran, answered without errors, and batched."""
    out = tmp_path / "bench.json"
    result = axon("bench", "--model-repository", serving_repository, "--model", DIGITS,
                  "--scenarios", "1x1,8x1,2x16", "--seconds", "0.5",
                  "--generators", "h2load,python", "--json-out", out)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [(r["generator"], r["callers"], r["images_per_request"]) for r in rows] == [
        (g, c, i) for g in ("h2load", "python") for c, i in ((1, 1), (8, 1), (2, 16))]
    for row in rows:
        assert row["errors"] == 0
        assert row["requests_per_second"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
        assert row["server_cpu_us_per_request"] > 0
        assert row["ceiling_images_per_second"] > row["images_per_second"]
    assert max(r["images_per_execution"] for r in rows if r["callers"] == 8) > 1
    assert "| h2load | 8 | 1 |" in result.stdout


def test_bench_a_b_mode_alternates_two_servers_and_prints_ratios(
        serving_repository: Path, tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    result = axon("bench", "--model-repository", serving_repository, "--model", DIGITS,
                  "--scenarios", "2x1", "--seconds", "0.3", "--generators", "python",
                  "--rounds", "3", "--baseline-args=--no-metrics", "--json-out", out)
    assert result.returncode == 0, result.stderr
    (pair,) = json.loads(out.read_text())
    assert (pair["generator"], pair["callers"], pair["images"]) == ("python", 2, 1)
    assert len(pair["variant"]) == len(pair["baseline"]) == 3
    assert all(row["errors"] == 0 for row in pair["variant"] + pair["baseline"])
    assert "with --no-metrics" in result.stderr
    rounds = re.findall(r"round (\d), (variant|baseline):", result.stderr)
    assert rounds == [("1", "variant"), ("1", "baseline"), ("2", "baseline"),
                      ("2", "variant"), ("3", "variant"), ("3", "baseline")]
    assert "baseline: --no-metrics; medians of 3 alternating rounds" in result.stdout
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| python | 2x1 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    baseline, variant, ratio = (float(cell.replace(",", "")) for cell in cells[2:5])
    assert baseline > 0 and variant > 0
    assert abs(ratio - variant / baseline) < 0.01


def test_bench_a_b_mode_refuses_a_running_server(server: ServerProcess) -> None:
    result = axon("bench", "--address", server.address, "--baseline-args=--no-metrics")
    assert result.returncode == 1
    assert "--baseline-args needs bench to start both servers" in result.stderr
