"""``axon classify`` and ``axon bench`` as a user runs them, against real servers."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
from PIL import Image

from axon.client import file_stream
from axon.client.demo import SAMPLES
from axon.client.file_stream import classify_files
from axon.client.server_process import ServerProcess
from axon.client.sync_client import AxonClient
from axon.cpus import usable_cpus
from axon.training.datasets import ImageDataset
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
    true_labels = [re.match(r"digit-(\d)", Path(a["path"]).name)[1]  # type: ignore[index]
                   for a in answers]
    correct = sum(a["classes"][0]["label"] == t for a, t in zip(answers, true_labels, strict=True))
    assert correct >= 7


def test_classify_reports_server_errors_in_one_line(server: ServerProcess,
                                                    tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.png"
    bogus.write_bytes(b"not a picture")
    result = axon("classify", bogus, "--address", server.address, "--model", DIGITS)
    assert result.returncode == 1
    assert "INVALID_ARGUMENT: 13-byte image: not a decodable" in result.stderr
    assert "Traceback" not in result.stderr
    missing = axon("classify", tmp_path / "absent.png", "--address", server.address)
    assert missing.returncode == 1
    assert "absent.png: cannot read: no such file or folder" in missing.stderr
    # Two tries, not the default ten: the message is the same, the wait 13 s shorter.
    down = axon("classify", bogus, "--address", "127.0.0.1:1", "--retries", "2")
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert down.stderr.splitlines()[-1].startswith("axon: error: 127.0.0.1:1: UNAVAILABLE")
    # The file it had taken is named, not lost without a word; then the summary.
    assert f"{bogus}: not classified: UNAVAILABLE" in down.stderr
    assert down.stderr.splitlines()[-2].startswith("1 image(s) in ")


def make_tree(root: Path) -> list[Path]:
    """Sample digits in nested folders, a corrupt PNG among them and a non-image file."""
    files = sorted(SAMPLES.glob("*.png"))
    (root / "a" / "b").mkdir(parents=True)
    placed = []
    for index, sample in enumerate(files):
        target = root / ("a" if index < 5 else "a/b") / sample.name
        target.write_bytes(sample.read_bytes())
        placed.append(target)
    (root / "a" / "b" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "a" / "notes.txt").write_text("not an image")
    return placed


def test_classify_walks_folders_keeps_input_order_and_skips_bad_files(
        server: ServerProcess, tmp_path: Path) -> None:
    placed = make_tree(tmp_path)
    result = axon("classify", tmp_path, tmp_path / "absent.png", "--address", server.address,
                  "--model", DIGITS, "--format", "jsonl", "--window", "3")
    assert result.returncode == 1, "errors were reported, so the status says so"
    records = [json.loads(line) for line in result.stdout.splitlines()]
    expected_order = [*placed[:5], *placed[5:], tmp_path / "a/b/corrupt.png"]
    expected_order.sort(key=lambda p: (p.parent != tmp_path / "a", str(p)))
    assert [r["path"] for r in records] == [str(p) for p in expected_order] + \
        [str(tmp_path / "absent.png")]
    errors = {Path(r["path"]).name: r["error"] for r in records if "error" in r}
    # Packed with other files in one message, the bad file fails alone, named by its path
    # (not by its place in the message).
    assert errors["corrupt.png"].startswith("INVALID_ARGUMENT: 19-byte image: not a decodable")
    assert "unrecognised format" in errors["corrupt.png"]
    assert errors["absent.png"] == "cannot read: no such file or folder"
    good = [r for r in records if "error" not in r]
    assert len(good) == 10
    assert sum(r["classes"][0]["label"] == Path(r["path"]).name.split("-")[1]
               for r in good) >= 7
    assert "corrupt.png: INVALID_ARGUMENT" in result.stderr
    assert "12 image(s) in" in result.stderr and "2 error(s)" in result.stderr


def test_classify_reads_globs_and_stdin_and_writes_csv_and_tables(
        server: ServerProcess, tmp_path: Path) -> None:
    placed = make_tree(tmp_path)
    globbed = axon("classify", str(tmp_path / "**" / "digit-[0-4]*.png"), "--address",
                   server.address, "--model", DIGITS, "--format", "csv", "--top-k", "2")
    assert globbed.returncode == 0, globbed.stderr
    rows = list(csv.reader(io.StringIO(globbed.stdout)))
    assert rows[0] == ["path", "label", "probability", "error", "label_2", "probability_2"]
    assert [Path(r[0]).name for r in rows[1:]] == [p.name for p in placed[:5]]
    for row in rows[1:]:
        assert float(row[2]) >= float(row[5]) and row[3] == ""

    listed = subprocess.run(
        [sys.executable, "-m", "axon.cli", "classify", "-", "--address", server.address,
         "--model", DIGITS], input="\n".join(str(p) for p in placed[5:]) + "\n",
        capture_output=True, text=True, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(p) for p in placed[5:]]
    assert all(re.search(r": \d \d+\.\d%$", line) for line in lines)
    assert "5 image(s) in" in listed.stderr


class FilesOpened:
    """Counts the files ``file_stream`` opens: each one's bytes are read and held."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        monkeypatch.setattr(file_stream, "open", self._open, raising=False)

    def _open(self, path: Path, *args: Any, **kwargs: Any) -> IO[Any]:
        self.count += 1
        handle: IO[Any] = open(path, *args, **kwargs)  # noqa: SIM115 -- the caller closes it
        return handle


def test_the_stream_window_bounds_how_far_reading_runs_ahead(
        server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are read (their bytes held) at most ``window`` ahead of the results handed back:
    a folder of any size costs the memory of a window of files. (Paths, which cost nothing,
    are pulled up to a message ahead.)"""
    files = sorted(SAMPLES.glob("*.png")) * 5
    opened = FilesOpened(monkeypatch)
    answered = 0
    with AxonClient(server.address) as client:
        for result in classify_files(client, iter(files), model=DIGITS, window=4):
            assert not result.error
            answered += 1
            assert opened.count - answered <= 4
    assert answered == len(files) == opened.count


def test_several_streams_answer_every_file_once_in_input_order(
        server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files dealt to 3 streams two at a time come back in input order, one result each, with
    an unreadable and an undecodable file failing only themselves; reading stays within the
    window of files not yet taken by the caller."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    digits = sorted(SAMPLES.glob("*.png"))
    files = [*digits[:5], tmp_path / "missing.png", *digits[5:9], broken, *digits] * 2
    opened = FilesOpened(monkeypatch)
    taken = []
    with AxonClient(server.address, connections=3) as client:
        for result in classify_files(client, iter(files), model=DIGITS, window=6, batch=2,
                                     streams=3):
            taken.append(result)
            assert opened.count - len(taken) <= 6
    assert [result.path for result in taken] == files
    for result in taken:
        if result.path.name == "missing.png":
            assert not result.sent and "no such file" in result.error
        elif result.path == broken:
            assert result.sent and "INVALID_ARGUMENT" in result.error
        else:
            assert not result.error and result.classes


def test_bench_measures_both_generators_and_checks_the_server_counters(
        serving_repository: Path, tmp_path: Path) -> None:
    """A short run to prove the benchmark works; its numbers are not asserted (not a timing
    test): only that every scenario ran, answered without errors, and batched."""
    out = tmp_path / "bench.json"
    result = axon("bench", "--model-repository", serving_repository, "--model", DIGITS,
                  "--scenarios", "1x1,8x1,2x16", "--seconds", "0.5",
                  "--generators", "h2load,python", "--json-out", out,
                  "--plot", tmp_path / "latency.png")
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [(r["generator"], r["callers"], r["images_per_request"]) for r in rows] == [
        (g, c, i) for g in ("h2load", "python") for c, i in ((1, 1), (8, 1), (2, 16))]
    for row in rows:
        assert row["errors"] == 0
        assert row["requests_per_second"] > 0
        assert row["max_ms"] >= row["p99_ms"] >= row["p90_ms"] >= row["p50_ms"] > 0
        percentiles = row["latency_percentiles_ms"]
        assert list(percentiles) == ["50", "75", "90", "95", "99", "99.9", "100"]
        assert percentiles["100"] == row["max_ms"] and percentiles["90"] == row["p90_ms"]
        assert row["server_cpu_us_per_request"] > 0
        assert row["ceiling_images_per_second"] > row["images_per_second"]
    assert max(r["images_per_execution"] for r in rows if r["callers"] == 8) > 1
    assert "| h2load | grpc | 8 | 1 |" in result.stdout
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_compares_protocols_in_alternating_rounds(serving_repository: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "protocols.json"
    result = axon("bench", "--model-repository", serving_repository, "--model", DIGITS,
                  "--scenarios", "2x8", "--seconds", "0.3", "--generators", "h2load,python",
                  "--protocol", "grpc,http-json,http-binary", "--rounds", "2",
                  "--json-out", out)
    assert result.returncode == 0, result.stderr
    runs = json.loads(out.read_text())
    assert [(r["generator"], r["scenario"]) for r in runs] == [("h2load", "2x8"),
                                                               ("python", "2x8")]
    for run in runs:
        assert list(run["runs"]) == ["grpc", "http-json", "http-binary"]
        for protocol, rounds in run["runs"].items():
            assert len(rounds) == 2
            for row in rounds:
                # The server's statistics counted every request the generator sent.
                assert row["protocol"] == protocol and row["errors"] == 0
                assert row["requests_per_second"] > 0 and row["server_successes"] > 0
    orders = re.findall(r"round (\d):  h2load infer(?: over (\S+))? 2x8", result.stderr)
    assert [(r, p or "grpc") for r, p in orders] == [
        ("1", "grpc"), ("1", "http-json"), ("1", "http-binary"),
        ("2", "http-binary"), ("2", "http-json"), ("2", "grpc")]
    assert "ratios to grpc" in result.stdout
    (row,) = [line for line in result.stdout.splitlines()
              if line.startswith("| python | 2x8 | http-binary |")]
    assert float(row.split("|")[9]) > 0  # its requests/s ratio to gRPC
    refused = axon("bench", "--model-repository", serving_repository, "--model", DIGITS,
                   "--protocol", "http-xml")
    assert refused.returncode != 0 and "protocols are some of" in refused.stderr


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
    started = re.findall(r"\(pid (\d+)\)( with --no-metrics)?", result.stderr)
    variants = {pid for pid, flags in started if not flags}
    baselines = {pid for pid, flags in started if flags}
    assert len(variants) == len(baselines) == 3  # both servers started afresh each round
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
    for baseline in ("--baseline-args=--no-metrics", "--baseline=naive"):
        result = axon("bench", "--address", server.address, baseline)
        assert result.returncode == 1
        assert "an A/B run needs bench to start both servers" in result.stderr


def test_bench_against_the_naive_baseline(serving_repository: Path, tmp_path: Path) -> None:
    """The naive server starts beside Axon on the same model, both answer every request (their
    own counters agree with the load generator: bench checks), and the ratios are Axon's over
    the baseline's. Each Axon start says what its load-time profile chose for the solo
    session. The test model has no serving targets: bench says so rather than judge."""
    out = tmp_path / "naive.json"
    result = axon("bench", "--model-repository", serving_repository, "--model", DIGITS,
                  "--scenarios", "4x1@2", "--seconds", "0.3", "--generators", "h2load",
                  "--rounds", "2", "--baseline", "naive", "--serve-args=--workers 1",
                  "--json-out", out)
    assert result.returncode == 0, result.stderr
    starts = re.split(rf"^{DIGITS} v\d+ on \S+, \d+ (?:of \d+ )?CPUs?; server ", result.stderr,
                      flags=re.MULTILINE)[1:]
    assert len(starts) == 2, result.stderr
    for start in starts:
        # A line per version loaded, where the model has a solo session (2 usable CPUs or more).
        choices = re.findall(rf"^  {DIGITS} v\d+: (?:a batch of \d+ images or more|no batch "
                             r"size gains enough)", start, re.MULTILINE)
        assert len(choices) >= 1 if usable_cpus() >= 2 else not choices, result.stderr
    assert re.search(r"baseline: the naive server on 127\.0\.0\.1:\d+ \(pid \d+\)",
                     result.stderr)
    (pair,) = json.loads(out.read_text())
    assert (pair["callers"], pair["images"]) == (4, 1)
    for side in ("variant", "baseline"):
        assert len(pair[side]) == 2
        for row in pair[side]:
            assert row["errors"] == 0 and row["server_successes"] >= row["requests_sent"]
            assert row["server_cpu_us_per_request"] > 0 and 0 <= row["steal"] < 1
    assert all(row["images_per_execution"] == 1 for row in pair["baseline"])
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| h2load | 4x1@2 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    baseline, variant, ratio = (float(cell.replace(",", "")) for cell in cells[2:5])
    assert abs(ratio - variant / baseline) < 0.01
    assert "no serving targets for preset 'primer'" in result.stdout


def test_bench_open_loop_offers_its_rate_whatever_the_generator(
        serving_repository: Path, tmp_path: Path) -> None:
    """200 requests/s is far below capacity: both generators keep the schedule, every request
    is answered, and the server counted each. Rate bounds are loose (a busy 2-core box)."""
    out = tmp_path / "open.json"
    result = axon("bench", "--model-repository", serving_repository, "--model", DIGITS,
                  "--scenarios", "200/sx1", "--seconds", "1", "--generators", "h2load,python",
                  "--json-out", out)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [(r["generator"], r["mode"], r["api"]) for r in rows] == [
        ("h2load", "open", "infer"), ("python", "open", "infer")]
    for row in rows:
        assert row["callers"] is None and row["offered_requests_per_second"] == 200
        assert row["requests_sent"] == 200 and row["not_sent"] == 0
        assert row["errors"] == 0 and row["errors_by_code"] == {}
        assert row["server_successes"] == 200 and row["server_failures"] == 0
        assert 0.7 * 200 <= row["requests_per_second"] <= 1.1 * 200
        assert row["max_ms"] >= row["p99_ms"] >= row["p50_ms"] > 0
        assert row["send_lag_p99_ms"] >= 0
    assert "| h2load | grpc | — | 1 | infer | open | 200 |" in result.stdout


OVERLOADABLE = "--max-batch-size 1 --max-queue-size 1 --instances 1 --max-inline-ms 0"
"""A server that refuses what it cannot take at once: one image queued, one running."""


def test_bench_open_loop_past_capacity_reports_queue_full_instead_of_failing(
        serving_repository: Path, tmp_path: Path) -> None:
    """A server that queues at most one image and runs one execution at a time, on a worker
    thread (so that a queue forms behind it), offered far more than it can answer: the python
    generator counts the refusals by status code, and bench reports them."""
    out = tmp_path / "overload.json"
    result = axon("bench", "--model-repository", serving_repository, "--model", DIGITS,
                  "--serve-args", OVERLOADABLE,
                  "--scenarios", "3000/sx1", "--seconds", "0.5", "--generators", "python",
                  "--json-out", out)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(out.read_text())
    assert row["errors_by_code"].get("RESOURCE_EXHAUSTED", 0) > 0
    assert row["errors"] == sum(row["errors_by_code"].values())
    assert row["requests_sent"] + row["not_sent"] == 1500
    # Each call the server failed, the generator saw fail; each it saw answered, the server
    # counted (calls shed before reaching the model, e.g. CANCELLED, only the generator sees).
    assert row["server_failures"] <= row["errors"]
    assert row["server_successes"] >= row["requests_sent"] - row["errors"] > 0
    assert "RESOURCE_EXHAUSTED" in result.stdout and "Traceback" not in result.stderr


def test_bench_refuses_an_h2load_open_loop_past_capacity(serving_repository: Path) -> None:
    """h2load cannot see gRPC status: past capacity its numbers would mix failed calls with
    answered ones, so bench stops and says what to use instead."""
    result = axon("bench", "--model-repository", serving_repository, "--model", DIGITS,
                  "--serve-args", OVERLOADABLE,
                  "--scenarios", "3000/sx1", "--seconds", "0.5", "--generators", "h2load")
    assert result.returncode == 1
    # Refused for the failures it cannot see, or (on a starved machine) for sending late.
    assert "h2load sees HTTP status only" in result.stderr or \
        "h2load fell behind the offered 3000 requests/s" in result.stderr
    assert "use --generators python" in result.stderr and "Traceback" not in result.stderr


def test_bench_loads_the_classify_api_with_both_generators(
        serving_repository: Path, tmp_path: Path) -> None:
    """PNG images through Classify: both generators, closed and open loop; the server's
    statistics count every request bench sent (h2load's closed loop stops mid-flight, so the
    server may have answered a few more than h2load logged)."""
    out = tmp_path / "classify.json"
    result = axon("bench", "--model-repository", serving_repository, "--model", DIGITS,
                  "--api", "classify", "--scenarios", "2x1,100/sx4", "--seconds", "0.5",
                  "--generators", "h2load,python", "--json-out", out)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [(r["generator"], r["api"], r["mode"], r["images_per_request"]) for r in rows] == [
        (g, "classify", m, i) for g in ("h2load", "python") for m, i in (("closed", 1),
                                                                         ("open", 4))]
    for row in rows:
        assert row["errors"] == 0 and row["server_failures"] == 0
        assert row["requests_sent"] > 0 and row["p50_ms"] > 0
        if row["generator"] == "h2load" and row["mode"] == "closed":
            assert row["server_successes"] >= row["requests_sent"]
        else:
            assert row["server_successes"] == row["requests_sent"]
    assert "| python | grpc | 2 | 1 | classify | closed |" in result.stdout


def test_classify_requests_count_in_the_statistics_as_infer_requests_do(
        server: ServerProcess) -> None:
    """bench checks its load against ModelStatistics: a Classify request must count there as
    one request of as many items as it has images, as ModelInfer does."""
    from axon.benchmarks.target import png_image

    with AxonClient(server.address) as client:
        (before,) = client.statistics(DIGITS, "2")
        for _ in range(3):
            client.classify([png_image(28, 28, 1)] * 5, model=DIGITS, version="2")
        client.infer(DIGITS, np.zeros((2, 784), dtype=np.float32), version="2")
        (after,) = client.statistics(DIGITS, "2")
    assert after.inference_stats.success.count - before.inference_stats.success.count == 4
    assert after.inference_count - before.inference_count == 3 * 5 + 2
    assert after.inference_stats.fail.count == before.inference_stats.fail.count


def test_bench_refuses_a_bad_scenario_with_a_usage_error() -> None:
    result = axon("bench", "--scenarios", "64x1,2000/minx1")
    assert result.returncode == 2
    assert "argument --scenarios: bad scenario '2000/minx1': use CALLERSxIMAGES" in \
        result.stderr
    assert "RATE/sxIMAGES (open loop, e.g. 2000/sx1)" in result.stderr
    assert "Traceback" not in result.stderr


def test_export_samples_writes_test_digits_that_classify(
        server: ServerProcess, mnist_dir: Path, mnist: ImageDataset, tmp_path: Path) -> None:
    out = tmp_path / "samples"
    exported = axon("export-samples", "--data-dir", mnist_dir, "--count", "20", "--out", out)
    assert exported.returncode == 0, exported.stderr
    files = sorted(out.glob("*.png"))
    assert len(files) == 20
    for index in range(20):
        label = mnist.class_names[int(mnist.test.labels[index])]
        path = out / f"{label}-test{index:05d}.png"
        assert np.array_equal(np.asarray(Image.open(path)), mnist.test.images[index][..., 0])
    classified = axon("classify", out, "--address", server.address, "--model", DIGITS,
                      "--format", "jsonl")
    assert classified.returncode == 0, classified.stderr
    records = [json.loads(line) for line in classified.stdout.splitlines()]
    correct = sum(r["classes"][0]["label"] == Path(r["path"]).name.split("-")[0]
                  for r in records)
    assert len(records) == 20 and correct >= 16


def test_a_last_message_cut_short_by_the_end_of_the_paths_is_answered(
        server: ServerProcess) -> None:
    """Paths that end in the middle of a message, after a pause in the middle of another: both
    go out part-full and every file is answered (the end is remembered, not waited on)."""
    files = sorted(SAMPLES.glob("*.png"))

    def slow_paths() -> Iterator[Path]:
        yield from files[:3]
        time.sleep(0.2)  # longer than a message waits for its next path
        yield from files[3:7]

    with AxonClient(server.address) as client:
        results = list(classify_files(client, slow_paths(), model=DIGITS, batch=5, window=10,
                                      timeout=30))
    assert [r.path for r in results] == files[:7]
    assert not any(r.error for r in results)


def test_large_files_go_fewer_to_a_message_and_one_too_large_to_send_fails_alone(
        server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message closes before its files' bytes pass what the client may send, so a folder of
    large photos goes in more, smaller messages instead of failing the stream; a file larger
    than any message can carry is an error result, never sent, and the others are answered."""
    digits = sorted(SAMPLES.glob("*.png"))[:5]
    padded = []
    for digit in digits:  # the same picture, 50 KB long (decoders ignore bytes past the end)
        data = digit.read_bytes()
        padded.append(tmp_path / digit.name)
        padded[-1].write_bytes(data + bytes(50_000 - len(data)))
    huge = tmp_path / "huge.png"
    huge.write_bytes(digits[0].read_bytes() + bytes(150_000))
    sizes: list[int] = []
    make_requests = file_stream._request_maker

    def counting(*args: Any) -> Any:
        request_for = make_requests(*args)

        def counted(images: list[bytes]) -> Any:
            sizes.append(len(images))
            return request_for(images)

        return counted

    monkeypatch.setattr(file_stream, "_request_maker", counting)
    files = [*padded[:2], huge, *padded[2:], *digits]
    with AxonClient(server.address, max_message_bytes=200_000) as client:
        results = list(classify_files(client, iter(files), model=DIGITS, streams=1))
    assert [result.path for result in results] == files
    by_path = {result.path: result for result in results}
    assert not by_path[huge].sent
    assert by_path[huge].error.startswith("too large to send: 150,")
    for original, copy in zip(digits, padded, strict=True):
        assert not by_path[copy].error and not by_path[original].error
        assert by_path[copy].classes == by_path[original].classes
    assert max(sizes) >= 3  # the small originals still share messages
    assert sum(sizes) == len(files) - 1
    assert sizes[:2] == [2, 2]  # 2 x 50 KB fits under 200 KB less the overhead; 3 do not
