"""The ``axon`` command line, run as a user runs it: a subprocess per command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from axon.cli import NEEDS_ONNXRUNTIME
from axon.extras import ONNXRUNTIME_MISSING
from axon.model_repository import ModelRepository
from tests.conftest import make_image_folder


def axon(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "axon.cli", *map(str, args)], cwd=cwd,
                          check=False, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


QUICK = ("--preset", "primer", "--epochs", "1", "--train-limit", "6000", "--threads", "2")


def test_train_publishes_versions_and_export_adds_one(tmp_path: Path, mnist_dir: Path) -> None:
    first = axon("train", *QUICK, "--data-dir", mnist_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "mnist-primer v1:" in first.stdout
    accuracy = float(re.search(r"test accuracy ([\d.]+)% on 10,000", first.stdout)[1])  # type: ignore[index]
    assert accuracy > 80.0
    second = axon("train", *QUICK, "--seed", "1", "--data-dir", mnist_dir, cwd=tmp_path)
    assert "mnist-primer v2:" in second.stdout, second.stderr
    run_dir = Path(re.search(r"run report: (\S+)", second.stdout)[1])  # type: ignore[index]
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "confusion_matrix.png").is_file()
    exported = axon("export", run_dir, "--name", "digits", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    repository = ModelRepository(tmp_path / "model_repository")
    assert repository.versions("mnist-primer") == [1, 2]
    assert repository.versions("digits") == [1]
    # The re-export of v2's checkpoint is the same model: same accuracy on the same test set.
    assert repository.card("digits", 1).test_accuracy == repository.card(
        "mnist-primer", 2).test_accuracy


def test_image_folder_training_from_the_cli(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "cats-dogs", per_class=20, size=16)
    result = axon("train", "--dataset", "image-folder", "--data-dir", root, "--image-size", "16",
                  "--color-mode", "RGB", *QUICK[:2], "--epochs", "10", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cats-dogs-primer v1:" in result.stdout
    assert "labels cats, dogs" in result.stdout
    assert "input input [N, 3, 16, 16] float32" in result.stdout


def test_quickstart_does_not_retrain_an_existing_model(tmp_path: Path, mnist_dir: Path) -> None:
    trained = axon("train", *QUICK, "--name", "mnist", "--data-dir", mnist_dir, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    again = axon("quickstart", "--data-dir", mnist_dir, "--sample-count", "30", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "mnist v1 is already in the repository; not training" in again.stdout
    assert re.search(r"test accuracy \d+\.\d\d% on 10,000 mnist test images", again.stdout)
    assert ModelRepository(tmp_path / "model_repository").versions("mnist") == [1]
    # The main job classifies MNIST test digits it exported itself, named by their true label.
    assert "30 MNIST test digits written to samples/mnist/" in again.stdout
    exported = sorted(p.name for p in (tmp_path / "samples" / "mnist").iterdir())
    assert len(exported) == 30 and "7-test00000.png" in exported
    assert "served by a real server on 127.0.0.1:" in again.stdout
    assert "30 images from samples/mnist streamed" in again.stdout
    correct = int(re.search(r"(\d+)/30 correct", again.stdout)[1])  # type: ignore[index]
    assert correct >= 18  # a one-epoch primer net on 6,000 images
    # The first ten answers are shown, and after them only the wrong ones: all of them.
    answers = [line for line in again.stdout.splitlines() if " predicted " in line]
    assert len(answers) >= 10 and all("WRONG" in line for line in answers[10:])
    assert sum("WRONG" in line for line in answers) == 30 - correct
    # A second run classifies the same files again rather than exporting new ones.
    third = axon("quickstart", "--sample-count", "5", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert "written to" not in third.stdout and f"{correct}/30 correct" in third.stdout


@pytest.mark.slow
def test_quickstart_main_job_from_scratch(tmp_path: Path, mnist_dir: Path) -> None:
    """The README's main command: train the default model, publish it, print its accuracy,
    serve it and classify the sample digits through the real server."""
    result = axon("quickstart", "--data-dir", mnist_dir, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "mnist v1:" in result.stdout and "1,863,690 parameters" in result.stdout
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", result.stdout)[1])  # type: ignore[index]
    assert accuracy >= 98.2
    assert "parity on 10000 images" in result.stderr
    correct = int(re.search(r"(\d+)/100 correct", result.stdout)[1])  # type: ignore[index]
    assert correct >= 97


@pytest.mark.parametrize(("args", "message"), [
    (("train", "--dataset", "image-folder", "--data-dir", "absent"), "absent: not a folder"),
    (("train", "--hidden", "12,x"), "--hidden takes comma-separated widths"),
    (("train", "--preset", "huge"), "unknown preset 'huge'"),
    (("train", "--activation", "swish", "--epochs", "1", "--train-limit", "100"),
     "unknown activation 'swish'"),
    (("export", "nowhere"), "nowhere: no checkpoint.pt"),
])
def test_user_errors_are_one_clear_line(tmp_path: Path, mnist_dir: Path, args: tuple[str, ...],
                                        message: str) -> None:
    extra = ("--data-dir", str(mnist_dir)) if args[0] == "train" and "--data-dir" not in args \
        else ()
    result = axon(*args, *extra, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


WITHOUT_ONNXRUNTIME = ("import sys\n"
                       "sys.modules['onnxruntime'] = None  # as if neither extra were installed\n"
                       "from axon.cli import main\n"
                       "sys.exit(main(sys.argv[1:]))\n")


def axon_without_onnxruntime(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_ONNXRUNTIME, *args], check=False,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", sorted(NEEDS_ONNXRUNTIME))
def test_commands_that_run_models_name_both_extras_when_onnxruntime_is_missing(
        command: str) -> None:
    """Not installed is simulated, not done: the child process cannot import onnxruntime.
    (``--help``, so that a command that failed to check would print its help, not serve.)"""
    result = axon_without_onnxruntime(command, "--help")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == f"axon: error: {ONNXRUNTIME_MISSING}\n"
    assert "'axon-serving[cpu]'" in result.stderr and "'axon-serving[gpu]'" in result.stderr
    assert result.stdout == ""


MODULES_AFTER = ("import sys\n"
                 "from axon.cli import main\n"
                 "try:\n"
                 "    main(sys.argv[1:])\n"
                 "except SystemExit:\n"
                 "    pass\n"
                 "print(' '.join(sorted(sys.modules)))\n")


@pytest.mark.parametrize(("command", "foreign"), [
    ("train", ("onnxruntime", "axon.server", "axon.client", "grpc")),
    ("serve", ("torch", "axon.training", "axon.client")),
    ("classify", ("torch", "onnxruntime", "numpy", "axon.server", "axon.training")),
])
def test_each_commands_help_imports_only_its_own_side(command: str,
                                                      foreign: tuple[str, ...]) -> None:
    """The root parser is in axon/; each side registers its commands from its own package and
    imports the rest only when run."""
    result = subprocess.run([sys.executable, "-c", MODULES_AFTER, command, "--help"],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    modules = result.stdout.splitlines()[-1].split()
    assert "axon.cli" in modules
    imported = [m for m in modules if any(m == f or m.startswith(f + ".") for f in foreign)]
    assert imported == [], imported


@pytest.mark.parametrize("command", ["classify", "data", "export-samples"])
def test_commands_that_run_no_model_need_no_onnxruntime(command: str) -> None:
    result = axon_without_onnxruntime(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: axon")


def test_data_command_reports_corrupt_files(tmp_path: Path, mnist_dir: Path) -> None:
    good = axon("data", "mnist", "--data-dir", mnist_dir, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "60,000 training and 10,000 test images (10 classes), checksums verified" in good.stdout
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in mnist_dir.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    labels = broken / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-100])
    result = axon("data", "mnist", "--data-dir", broken, "--no-pypi", cwd=tmp_path)
    assert result.returncode == 1
    assert "t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip data" in result.stderr
    assert "Traceback" not in result.stderr


def test_serving_side_modules_do_not_import_torch(tmp_path: Path, mnist_dir: Path) -> None:
    code = (
        "import sys\n"
        "import axon.cli, axon.model_card, axon.model_repository, axon.preprocessing\n"
        "import axon.server.app, axon.client, axon.training.idx, axon.training.fetch\n"
        "import axon.training.datasets, axon.training.image_folder\n"
        f"assert axon.cli.main(['data', 'mnist', '--data-dir', {str(mnist_dir)!r}]) == 0\n"
        "heavy = sorted(m for m in ('torch', 'onnx', 'matplotlib') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr


def modules_loaded_by(*command: str) -> set[str]:
    """The modules ``axon COMMAND...`` has imported by the time its parser and handler ran
    (``--help`` stops there)."""
    code = ("import sys, runpy\n"
            f"sys.argv = ['axon', *{list(command)!r}]\n"
            "try:\n"
            "    runpy.run_module('axon.cli', run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                            text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return set(result.stderr.split())


def test_each_command_loads_only_its_own_side() -> None:
    """The root parser imports a command's module only when that command runs: training
    commands load no serving code (nor onnxruntime), serving loads no torch, the client
    command neither of them."""
    def serving(modules: set[str]) -> set[str]:
        return {m for m in modules if m.startswith("axon.server") or m == "onnxruntime"}

    assert not serving(modules_loaded_by("train", "--help"))
    assert not serving(modules_loaded_by("export", "--help"))
    assert "axon.training.cli" in modules_loaded_by("train", "--help")
    serve = modules_loaded_by("serve", "--help")
    assert "axon.server.cli" in serve and "torch" not in serve
    assert not {m for m in serve if m.startswith("axon.training")}
    classify = modules_loaded_by("classify", "--help")
    assert not serving(classify) and "torch" not in classify and "numpy" not in classify
    root = modules_loaded_by("--help")
    assert not {m for m in root if m.startswith(("axon.server", "axon.training", "axon.client",
                                                   "axon.benchmarks"))}


def test_the_health_check_reads_the_settings_without_the_runtime() -> None:
    """``axon health`` runs on every probe (every 10 s in the image), so a check that reads the
    server's settings and calls loads neither onnxruntime nor numpy (nor torch)."""
    health = modules_loaded_by("health", "--timeout", "0.5")
    assert {"axon.server.config", "axon.server.health_check", "grpc"} <= health
    assert not {"onnxruntime", "numpy", "torch"} & health
