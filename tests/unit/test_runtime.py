"""Provider choice and the onnxruntime session of one exported model.

No GPU exists here: GPU builds of onnxruntime are simulated by passing ``available`` to
``resolve_providers``; the real onnxruntime of this machine (a CPU build) is tested as well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from axon.model_repository import MODEL_FILENAME, ModelRepository
from axon.server.errors import ModelLoadError
from axon.server.providers import CPU_PROVIDER, provider_name
from axon.server.runtime import (
    ModelRuntime,
    SessionSettings,
    TensorSpec,
    _runner,
    load_gpu_libraries,
    provider_options,
    resolve_providers,
)
from axon.training.train import TrainResult
from tests.support.repositories import publish_run

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_BUILD = (TENSORRT, CUDA, CPU_PROVIDER)
"""What onnxruntime-gpu with TensorRT offers on a GPU machine."""


@pytest.mark.parametrize(("alias", "name"), [
    ("cuda", CUDA), ("tensorrt", TENSORRT), ("cpu", CPU_PROVIDER),
    (" CUDA ", CUDA), ("openvino", "OpenVINOExecutionProvider"),
    (CUDA, CUDA), ("QNNExecutionProvider", "QNNExecutionProvider"),
])
def test_provider_aliases_and_full_names(alias: str, name: str) -> None:
    assert provider_name(alias) == name


@pytest.mark.parametrize("alias", ["gpu", "", "cudaexecutionprovider", "CUDA-EP"])
def test_unknown_provider_names_are_refused(alias: str) -> None:
    with pytest.raises(ValueError, match=r"unknown execution provider .* use one of tensorrt"):
        provider_name(alias)


def test_resolve_keeps_the_requested_order_on_a_gpu_build() -> None:
    choice = resolve_providers(["cuda", "tensorrt", "cpu"], available=GPU_BUILD)
    assert choice.usable == (CUDA, TENSORRT, CPU_PROVIDER)
    assert choice.skipped == ()


def test_resolve_skips_what_the_build_lacks_and_says_why() -> None:
    choice = resolve_providers(["tensorrt", "cuda", "cpu"], available=(CUDA, CPU_PROVIDER))
    assert choice.usable == (CUDA, CPU_PROVIDER)
    assert [name for name, _ in choice.skipped] == [TENSORRT]
    reason = choice.skipped[0][1]
    assert "not in this onnxruntime build" in reason and CUDA in reason


def test_resolve_always_ends_with_the_cpu_provider() -> None:
    assert resolve_providers(["cuda"], available=GPU_BUILD).usable == (CUDA, CPU_PROVIDER)
    # Even when the build does not list it: onnxruntime places leftover nodes on it.
    assert resolve_providers(["cuda"], available=[CUDA]).usable == (CUDA, CPU_PROVIDER)
    # Asked for first, it stays first.
    assert resolve_providers(["cpu", "cuda"], available=GPU_BUILD).usable == (CPU_PROVIDER, CUDA)


def test_cuda_runs_float32_in_float32_unless_the_settings_say_otherwise() -> None:
    """TF32 is onnxruntime's default on the CUDA provider; on an H200 it moved logits by up to
    3.7e-3 (docs/serving.md). These are the options onnxruntime gets; no GPU here runs them."""
    settings = SessionSettings(device_id=1)
    assert provider_options(CUDA, settings) == {"device_id": "1", "use_tf32": "0"}
    assert provider_options(TENSORRT, settings) == {"device_id": "1"}
    assert provider_options(CPU_PROVIDER, settings) == {}
    chosen = SessionSettings(provider_options={CUDA: {"use_tf32": "1", "device_id": "2"}})
    assert provider_options(CUDA, chosen) == {"device_id": "2", "use_tf32": "1"}


def test_gpu_libraries_are_preloaded_for_a_gpu_provider_only(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``onnxruntime.preload_dlls`` loads CUDA from NVIDIA's pip packages; on an H200 with CUDA
    hidden from the loader, a session started on CUDA only after it (docs/serving.md). This
    machine's CPU build has nothing to load, so a stand-in records the calls and prints what the
    real one prints when a library is missing."""
    calls = []

    def preload() -> None:
        calls.append(True)
        print("Failed to load libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    load_gpu_libraries([CPU_PROVIDER])
    assert calls == []
    with caplog.at_level("INFO", logger="axon.server.runtime"):
        load_gpu_libraries([CUDA, CPU_PROVIDER])
    assert calls == [True]
    assert capsys.readouterr().out == ""  # the server's stdout is not onnxruntime's to print on
    assert "preload_dlls: Failed to load libcudnn.so.9" in caplog.text


def test_a_failing_gpu_preload_is_logged_and_the_server_goes_on(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def preload() -> None:
        raise RuntimeError("Invalid parameter of directory=None")

    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    with caplog.at_level("WARNING", logger="axon.server.runtime"):
        load_gpu_libraries([TENSORRT, CPU_PROVIDER])
    assert "onnxruntime.preload_dlls failed: Invalid parameter" in caplog.text


def test_resolve_removes_duplicates() -> None:
    choice = resolve_providers(["cuda", CUDA, "cpu", " cuda", "cpu"], available=GPU_BUILD)
    assert choice.usable == (CUDA, CPU_PROVIDER)


def test_resolve_reports_a_skipped_provider_once() -> None:
    choice = resolve_providers(["tensorrt", "tensorrt", "cpu"], available=[CPU_PROVIDER])
    assert [name for name, _ in choice.skipped] == [TENSORRT]


def test_resolve_refuses_an_unknown_alias() -> None:
    with pytest.raises(ValueError, match="'gpu'"):
        resolve_providers(["gpu", "cpu"], available=GPU_BUILD)


def test_this_machines_onnxruntime_falls_back_to_the_cpu() -> None:
    choice = resolve_providers(("tensorrt", "cuda", "cpu"))
    assert choice.usable == (CPU_PROVIDER,)
    assert [name for name, _ in choice.skipped] == [TENSORRT, CUDA]


@pytest.fixture(scope="module")
def model_path(primer_run: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The primer digit net, exported and published as mnist v1."""
    repository = ModelRepository(tmp_path_factory.mktemp("runtime") / "models")
    publish_run(primer_run, repository, "mnist")
    return repository.version_dir("mnist", 1) / MODEL_FILENAME


def test_a_published_model_has_its_signature_and_card(model_path: Path) -> None:
    runtime = ModelRuntime(model_path, SessionSettings())
    assert runtime.input == TensorSpec("input", (784,))
    assert runtime.outputs == (TensorSpec("logits", (10,)), TensorSpec("probabilities", (10,)))
    assert runtime.provider == CPU_PROVIDER
    assert runtime.path == model_path
    assert (runtime.card.name, runtime.card.version) == ("mnist", 1)


def test_run_gives_what_a_plain_onnxruntime_session_gives(model_path: Path) -> None:
    batch = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    logits, probabilities = ModelRuntime(model_path, SessionSettings()).run(batch)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    plain = ort.InferenceSession(str(model_path), options, providers=[CPU_PROVIDER])
    expected_logits, expected_probabilities = plain.run(["logits", "probabilities"],
                                                       {"input": batch})
    np.testing.assert_array_equal(logits, expected_logits)
    np.testing.assert_array_equal(probabilities, expected_probabilities)
    assert logits.shape == (5, 10) and logits.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_the_solo_session_gives_run_s_answers_on_more_threads(model_path: Path) -> None:
    runtime = ModelRuntime(model_path, SessionSettings())
    assert runtime.run_solo is None and runtime.solo_threads == 1
    runtime.add_solo_session(2)
    assert runtime.run_solo is not None and runtime.solo_threads == 2
    batch = np.random.default_rng(3).random((64, 784), dtype=np.float32)
    for got, want in zip(runtime.run_solo(batch), runtime.run(batch), strict=True):
        np.testing.assert_array_equal(got, want)


def test_on_the_cpu_provider_runs_skip_onnxruntime_s_python_wrapper(
        model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # If an onnxruntime release drops the compiled session this fails, rather than every
    # execution silently taking the slower public path.
    runtime = ModelRuntime(model_path, SessionSettings())
    runtime.add_solo_session(2)
    batch = np.random.default_rng(4).random((3, 784), dtype=np.float32)
    expected = runtime.run(batch)

    def public_run(*args: object) -> None:
        raise AssertionError("InferenceSession.run was called")

    monkeypatch.setattr(ort.InferenceSession, "run", public_run)
    assert runtime.run_solo is not None
    for run in (runtime.run, runtime.run_solo):
        for got, want in zip(run(batch), expected, strict=True):
            np.testing.assert_array_equal(got, want)


class _Session:
    """What ``_runner`` reads of an onnxruntime session, the public run recorded: a stand-in,
    since no GPU session (nor one without ``_sess``) can be made here."""

    def __init__(self, providers: list[str], compiled: object | None) -> None:
        self._providers = providers
        if compiled is not None:
            self._sess = compiled
        self.public_runs: list[tuple[object, ...]] = []

    def get_providers(self) -> list[str]:
        return self._providers

    def run(self, *args: object) -> list[str]:
        self.public_runs.append(args)
        return ["public"]


class _Compiled:
    def run(self, *args: object) -> list[str]:
        return ["compiled"]


@pytest.mark.parametrize(("providers", "compiled"), [
    ([CPU_PROVIDER], None),
    ([CUDA, CPU_PROVIDER], _Compiled()),
], ids=["no compiled session", "a GPU provider, whose failures fall back"])
def test_runs_take_onnxruntime_s_public_path_where_the_direct_one_is_missing_or_unsafe(
        providers: list[str], compiled: object | None) -> None:
    session = _Session(providers, compiled)
    batch = np.zeros((1, 784), np.float32)
    assert _runner(session, ["logits"], "input")(batch) == ["public"]
    assert session.public_runs == [(["logits"], {"input": batch})]


def test_a_cpu_session_with_a_compiled_one_is_run_directly() -> None:
    session = _Session([CPU_PROVIDER], _Compiled())
    assert _runner(session, ["logits"], "input")(
        np.zeros((1, 784), np.float32)) == ["compiled"]
    assert session.public_runs == []


@pytest.mark.parametrize(("intra_op_threads", "solo_threads"), [(1, 1), (0, 2), (2, 4)],
                         ids=["one thread asked", "every core already", "two already"])
def test_no_solo_session_where_it_would_add_nothing(model_path: Path, intra_op_threads: int,
                                                    solo_threads: int) -> None:
    runtime = ModelRuntime(model_path, SessionSettings(intra_op_threads=intra_op_threads))
    runtime.add_solo_session(solo_threads)
    assert runtime.run_solo is None and runtime.solo_threads == 1


def test_a_corrupt_model_file_is_a_load_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / MODEL_FILENAME
    path.write_bytes(b"this is not an ONNX model")
    with pytest.raises(ModelLoadError, match="cannot load it") as caught:
        ModelRuntime(path, SessionSettings())
    assert str(path) in str(caught.value)


def test_a_model_without_axon_metadata_is_a_load_error(model_path: Path,
                                                       tmp_path: Path) -> None:
    model = onnx.load(str(model_path))
    assert len(model.metadata_props) > 0
    del model.metadata_props[:]
    stripped = tmp_path / MODEL_FILENAME
    onnx.save(model, str(stripped))
    with pytest.raises(ModelLoadError, match=r"no axon\.\* metadata") as caught:
        ModelRuntime(stripped, SessionSettings())
    assert str(stripped) in str(caught.value)


def test_a_missing_model_file_is_a_load_error(tmp_path: Path) -> None:
    missing = tmp_path / MODEL_FILENAME
    with pytest.raises(ModelLoadError) as caught:
        ModelRuntime(missing, SessionSettings())
    assert str(missing) in str(caught.value)
