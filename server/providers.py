"""Execution provider names: the short aliases of flags and settings, and onnxruntime's own.

Apart from the runtime so that the settings can check names without importing onnxruntime:
``axon health`` loads the server's settings on every probe.
"""

from __future__ import annotations

PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
DEVICE_PROVIDERS = frozenset({CUDA_PROVIDER, TENSORRT_PROVIDER,
                              "ROCMExecutionProvider"})
"""Providers that run on the GPU named by ``SessionSettings.device_id``."""


def provider_name(alias: str) -> str:
    """``cuda`` -> ``CUDAExecutionProvider``; full onnxruntime names pass through."""
    name = PROVIDER_ALIASES.get(alias.strip().lower(), alias.strip())
    if name not in PROVIDER_ALIASES.values() and not name.endswith("ExecutionProvider"):
        raise ValueError(f"unknown execution provider {alias!r}; use one of "
                         f"{', '.join(PROVIDER_ALIASES)} or an onnxruntime provider name")
    return name
