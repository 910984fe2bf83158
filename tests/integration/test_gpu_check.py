"""``python -m axon.benchmarks.gpu_check``, the GPU path's check (docs/serving.md, "On a GPU").

Its GPU half ran on an H200 lent by the device tool; here, on a CPU build of onnxruntime, it
must say what is missing, and its checks must run end to end on the CPU provider against a real
server."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from axon.benchmarks import gpu_check


def test_on_a_cpu_build_it_names_what_is_missing(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("an onnxruntime-gpu build: the check would run for real")
    assert gpu_check.main(["--model-repository", str(tmp_path)]) == 1
    printed = capsys.readouterr().out
    assert "CUDAExecutionProvider is not in this onnxruntime build: install onnxruntime-gpu" \
        in printed
    assert "NVML: absent" in printed


def test_its_checks_run_on_the_cpu_provider(serving_repository: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--providers", "cpu", "--model-repository", str(serving_repository),
                           "--model", "mnist", "--seconds", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "Axon's session asked for CPUExecutionProvider: runs on CPUExecutionProvider" in printed
    for size in gpu_check.BATCH_SIZES:  # the CPU provider keeps a row's bits in any batch
        assert f"batches of {size}: 0 of 256 rows differ" in printed
    assert "axon serve --providers cpu: {'mnist': 'CPUExecutionProvider'}" in printed
    assert "256 requests, 64 at a time: 0 answers differ" in printed
    assert sum(line.startswith("  --providers cpu") for line in printed.splitlines()) == 3
    assert printed.rstrip().endswith("every check held")
