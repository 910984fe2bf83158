"""One onnxruntime session: numpy in, numpy out, on the first usable execution provider.

Knows nothing of gRPC or batching. Provider names on the command line are short aliases
(``tensorrt``, ``cuda``, ``cpu``, ...; server/providers.py); ``resolve_providers`` turns the
ordered list into the providers this onnxruntime build can use, and says why it skipped the
others.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from axon.model_card import ModelCard, ModelCardError
from axon.server.errors import ModelLoadError
from axon.server.providers import CPU_PROVIDER, CUDA_PROVIDER, DEVICE_PROVIDERS, provider_name

log = logging.getLogger(__name__)

Run = Callable[[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]]]
GraphOptimization = Literal["disable", "basic", "extended", "all"]
_GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class ProviderChoice:
    """The providers to try, in order, and those skipped with the reason."""

    usable: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()


def resolve_providers(requested: Sequence[str],
                      available: Sequence[str] | None = None) -> ProviderChoice:
    """Keep the requested providers this onnxruntime build offers, in the requested order.

    The CPU provider is always appended as the last resort: onnxruntime needs it for any node
    another provider cannot place. ``available`` defaults to ``ort.get_available_providers()``.
    """
    offered = list(ort.get_available_providers() if available is None else available)
    usable: list[str] = []
    skipped: list[tuple[str, str]] = []
    for alias in requested:
        name = provider_name(alias)
        if name in usable or any(name == skip for skip, _ in skipped):
            continue
        if name in offered:
            usable.append(name)
        else:
            skipped.append((name, "not in this onnxruntime build (available: "
                                  f"{', '.join(offered)})"))
    if CPU_PROVIDER not in usable:
        usable.append(CPU_PROVIDER)
    return ProviderChoice(tuple(usable), tuple(skipped))


def load_gpu_libraries(providers: Sequence[str]) -> None:
    """Load CUDA and cuDNN from NVIDIA's pip packages before the first GPU session starts.

    onnxruntime-gpu's CUDA provider finds them by itself only on the loader's path (a CUDA base
    image, ``LD_LIBRARY_PATH``). Installed by pip (``onnxruntime-gpu[cuda,cudnn]``, or torch's
    CUDA wheels) they are found by ``onnxruntime.preload_dlls`` alone: on an H200 with CUDA
    taken off the loader's path, a session fell back to the CPU without it and ran on CUDA from
    the pip packages with it (docs/serving.md, "On a GPU"). A no-op unless a GPU provider is
    among ``providers``, and on a CPU build. ``preload_dlls`` reports by printing: its lines go
    to the log instead.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or not any(name in DEVICE_PROVIDERS for name in providers):
        return
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            preload()
    except Exception as exc:  # a missing or broken library must not stop a server that can
        log.warning("onnxruntime.preload_dlls failed: %s", exc)  # still fall back to the CPU
    for line in printed.getvalue().splitlines():
        if line.strip():
            log.info("onnxruntime.preload_dlls: %s", line.strip())


@dataclass(frozen=True)
class SessionSettings:
    """How every model's onnxruntime session is built."""

    providers: tuple[str, ...] = (CPU_PROVIDER,)
    """onnxruntime provider names, most preferred first (see ``resolve_providers``)."""
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    solo_threads: int | None = None
    """onnxruntime threads of an execution that runs with no other in flight (``ModelRuntime.
    add_solo_session``); None: the model's instances; 1: none."""
    graph_optimization: GraphOptimization = "all"
    device_id: int = 0
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)
    """Extra options per provider name, passed to onnxruntime as given."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    """Per-item shape, without the batch dimension."""


class ModelRuntime:
    """A loaded ONNX model: ``run(batch)`` returns every output, in the model's order."""

    def __init__(self, path: Path, settings: SessionSettings) -> None:
        providers = [(name, provider_options(name, settings)) for name in settings.providers]
        try:
            self._session = ort.InferenceSession(
                str(path), _session_options(settings, settings.intra_op_threads),
                providers=providers)
            self.card = ModelCard.from_metadata(
                self._session.get_modelmeta().custom_metadata_map)
        except ModelCardError as exc:
            raise ModelLoadError(f"{path}: {exc}") from exc
        except Exception as exc:  # onnxruntime raises bare RuntimeErrors of several kinds
            raise ModelLoadError(f"{path}: onnxruntime cannot load it: {exc}") from exc
        self.path = path
        self._settings = settings
        self.run_solo: Run | None = None
        """``run`` on more threads, once ``add_solo_session`` made it."""
        self.solo_threads = 1
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)":
            raise ModelLoadError(f"{path}: expected one float32 input, found "
                                 f"{[(i.name, i.type) for i in inputs]}")
        self.input = TensorSpec(inputs[0].name, _item_shape(inputs[0].shape))
        self.outputs = tuple(TensorSpec(o.name, _item_shape(o.shape))
                             for o in self._session.get_outputs())
        self._output_names = [o.name for o in self.outputs]
        self.run: Run = _runner(self._session, self._output_names, self.input.name)
        """Run the model on a batch ([N, *input shape], float32); every output, in order."""
        self.provider: str = self._session.get_providers()[0]
        self.device_id = settings.device_id if self.provider in DEVICE_PROVIDERS else None
        """The GPU the model runs on; None off the GPU."""
        if self.provider != settings.providers[0]:
            log.warning("%s runs on %s: onnxruntime could not start %s here", path,
                        self.provider, settings.providers[0])

    def add_solo_session(self, threads: int) -> None:
        """Make ``run_solo``: the model in a second session of ``threads`` intra-op threads,
        for an execution with no other in flight, when the CPUs of the idle instances are
        free (the batcher decides when it pays).

        Only on the CPU provider (a GPU provider's work is not split over CPU threads) and
        only when ``run`` has one thread (with ``intra_op_threads`` 0 or more, every
        execution is split already). The model's weights are then held twice. The answers are
        the same, bit for bit: onnxruntime's CPU kernels split a batch between threads by rows
        and columns of the result, not within a row's sums (tests/unit/test_batch_invariance.py).
        """
        if self.provider != CPU_PROVIDER or self._settings.intra_op_threads != 1 \
                or threads <= 1 or self.run_solo is not None:
            return
        session = ort.InferenceSession(str(self.path), _session_options(self._settings, threads),
                                       providers=[CPU_PROVIDER])
        self.run_solo = _runner(session, self._output_names, self.input.name)
        self.solo_threads = threads


def _runner(session: ort.InferenceSession, output_names: list[str], input_name: str) -> Run:
    """``session``'s run, batch in, every output out (one per session: the shared run and the
    solo one).

    On the CPU provider it calls onnxruntime's compiled session directly (``_sess``, present in
    every release since 1.0; the public ``run`` is used where it is missing). The public
    ``run`` first checks the feed's names and kinds, which ours always pass (one float32
    array under the input's name), and retries on a fallback provider, which the CPU provider
    has none of: three Python calls skipped per execution, about 1.3 µs (docs/performance.md,
    "Fewer Python calls per request").
    """
    run_compiled = getattr(getattr(session, "_sess", None), "run", None)
    if session.get_providers()[0] == CPU_PROVIDER and callable(run_compiled):
        def run_direct(batch: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
            outputs: list[npt.NDArray[np.float32]] = run_compiled(output_names,
                                                                  {input_name: batch}, None)
            return outputs
        return run_direct

    def run(batch: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        outputs: list[npt.NDArray[np.float32]] = session.run(output_names, {input_name: batch})
        return outputs
    return run


def _session_options(settings: SessionSettings, intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = _GRAPH_LEVELS[settings.graph_optimization]
    # Spinning worker threads burn a core waiting for work that, in a server, arrives
    # between gRPC calls; they would steal the CPU the transport needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _item_shape(shape: Sequence[int | str | None]) -> tuple[int, ...]:
    """The shape after the (dynamic) batch dimension; a symbolic dimension becomes -1."""
    return tuple(d if isinstance(d, int) else -1 for d in shape[1:])


def provider_options(name: str, settings: SessionSettings) -> dict[str, str]:
    """What onnxruntime is given for provider ``name``: the settings' own options, and Axon's
    defaults for the ones they leave out."""
    options = dict(settings.provider_options.get(name, {}))
    if name in DEVICE_PROVIDERS:
        options.setdefault("device_id", str(settings.device_id))
    if name == CUDA_PROVIDER:
        # onnxruntime's CUDA provider multiplies float32 in TF32 (a 10-bit mantissa) by default
        # on Ampere and later GPUs. On an H200 that moved the default net's logits by up to
        # 3.7e-3 from the CPU provider's, against 5.7e-6 without it (docs/serving.md, "On a
        # GPU"). A float32 model is served in float32.
        options.setdefault("use_tf32", "0")
    return options
