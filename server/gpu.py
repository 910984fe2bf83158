"""GPU utilisation and memory from NVML, when the machine has an NVIDIA driver.

Where NVML is missing (no driver, no ``pynvml``, a CPU-only machine) the collector reports
nothing: the GPU series are absent, never zeros that would look like an idle GPU.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


def load_nvml() -> ModuleType | None:
    """``pynvml`` (package nvidia-ml-py), initialised; None where NVML is unavailable."""
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception as exc:  # ImportError, or NVMLError: no library, no driver, no device
        log.debug("GPU metrics off: %s", exc)
        return None
    return nvml


class GpuCollector(Collector):
    """``axon_gpu_*`` gauges per GPU, read from NVML when Prometheus scrapes."""

    def __init__(self, nvml: Any = None) -> None:
        """``nvml`` is the ``pynvml`` module (default: loaded here, None when unavailable)."""
        self._nvml = nvml if nvml is not None else load_nvml()

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def collect(self) -> Iterator[Metric]:
        if self._nvml is None:
            return
        nvml = self._nvml
        labels = ["gpu", "name"]
        utilization = GaugeMetricFamily(
            "axon_gpu_utilization_ratio", "Share of the last sample period in which the GPU "
            "ran a kernel (NVML), 0 to 1", labels=labels)
        used = GaugeMetricFamily("axon_gpu_memory_used_bytes", "GPU memory in use (NVML)",
                                 labels=labels)
        total = GaugeMetricFamily("axon_gpu_memory_total_bytes", "GPU memory in all (NVML)",
                                  labels=labels)
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = nvml.nvmlDeviceGetName(handle)
                ids = [str(index), name.decode() if isinstance(name, bytes) else str(name)]
                utilization.add_metric(ids, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                used.add_metric(ids, float(memory.used))
                total.add_metric(ids, float(memory.total))
        except Exception as exc:  # a driver error must not break the whole scrape
            log.warning("reading GPU metrics from NVML failed: %s", exc)
            return
        yield from (utilization, used, total)
