"""A served model version: its runtime, batcher, statistics and signature checks."""

from __future__ import annotations

import asyncio
import math
import time
from typing import NamedTuple

import numpy as np

from axon.batching_settings import BatchingSettings
from axon.model_card import ModelCard
from axon.server.batching import Array, BatchObserver, DynamicBatcher, Outputs
from axon.server.errors import InvalidInputError
from axon.server.runtime import ModelRuntime
from axon.server.statistics import ModelStatistics

PLATFORM = "onnxruntime_onnx"
FP32_BYTES = 4

ResponseTemplate = tuple[bytes, bytes, tuple[bytes, ...]]
"""What every ModelInfer response with the same outputs and shapes shares, serialized: the
head, the outputs' descriptions, each FP32 output's contents key and length
(server/servicers/tensors.py)."""


class OutputChoice(NamedTuple):
    """One output a request asks for: which of the model's outputs, and whether as classes.

    (A tuple: every response looks its template up by the choices, and a tuple hashes in C.)
    """

    output: int
    """Which of the model's outputs (an index into them)."""
    classes: int = 0
    """The classification extension's k: the output as the k highest "score:index:label"
    strings of each item; 0: the tensor itself."""


class ServedModel:
    """One loaded model version. ``infer`` validates nothing: callers check the request's shape
    (``check_shape``) before converting its contents, then the values (``check_values``)."""

    def __init__(self, name: str, version: int, runtime: ModelRuntime,
                 batching: BatchingSettings, metrics: BatchObserver | None = None) -> None:
        """``metrics``, when given, hears what the batcher does, as the statistics do."""
        self.name = name
        self.version = version
        self.runtime = runtime
        self.card: ModelCard = runtime.card
        self.statistics = ModelStatistics()
        observer: BatchObserver = self.statistics if metrics is None \
            else _BothObservers(self.statistics, metrics)
        self.batcher = DynamicBatcher(runtime.run, batching, observer, f"{name} v{version}",
                                      execute_solo=runtime.run_solo)
        # Read by every request's checks: plain attributes, not properties (a property is a
        # Python call per read).
        self.input_name = runtime.input.name
        self.item_shape: tuple[int, ...] = runtime.input.shape
        """Shape of one item, without the batch dimension."""
        self.item_bytes = math.prod(self.item_shape) * FP32_BYTES
        """Raw FP32 bytes of one item."""
        self.max_batch_size = batching.max_batch_size
        self.version_label = str(version)
        """The version as metrics label it."""
        self.output_names = tuple(spec.name for spec in runtime.outputs)
        self.output_indexes = tuple(range(len(self.output_names)))
        self.output_choices = tuple(OutputChoice(index) for index in self.output_indexes)
        """Every output as a tensor: what a request that names no outputs gets."""
        self.response_templates: dict[tuple[object, ...], ResponseTemplate] = {}
        """The serialized parts every response with the same outputs and shapes shares, by
        outputs and shapes (server/servicers/tensors.py)."""

    @property
    def batching(self) -> BatchingSettings:
        return self.batcher.settings

    @property
    def provider(self) -> str:
        return self.runtime.provider

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise InvalidInputError unless ``shape`` is [N, *item shape] with N allowed.

        Checked on the declared shape, before any contents are converted: a request declaring
        an absurd shape costs nothing.
        """
        if len(shape) != 1 + len(self.item_shape) or shape[1:] != self.item_shape:
            raise InvalidInputError(f"input {self.input_name!r} of {self.name} must have shape "
                                    f"{self._expected_shape()}, got {list(shape)}")
        if not 0 < shape[0] <= self.max_batch_size:
            raise InvalidInputError(f"input {self.input_name!r} of {self.name} holds {shape[0]} "
                                    f"items; expected {self._expected_shape()}")

    def _expected_shape(self) -> str:
        return f"[N, {', '.join(map(str, self.item_shape))}] with N from 1 to " \
               f"{self.batching.max_batch_size}"

    def check_values(self, batch: Array) -> None:
        """Raise InvalidInputError unless every value is finite."""
        # The sum of squares is finite only if every value is, and it is one BLAS call: a
        # third of the time of isfinite + all, two ufunc passes (3 µs against 9 for one image
        # here; docs/performance.md, "A lone call, live"). vdot, not dot: dot copies unaligned
        # floats (raw contents straight from gRPC's bytes often are) before calling BLAS, vdot
        # hands them to it as they are (4 µs against 10 for 64 images). When the sum is not
        # finite (a NaN, an infinity, or finite values whose squares overflow float32), the
        # exact check decides.
        flat = batch.reshape(-1)
        if math.isfinite(np.vdot(flat, flat)):
            return
        if not np.isfinite(batch).all():
            bad = int(np.count_nonzero(~np.isfinite(batch)))
            raise InvalidInputError(f"input {self.input_name!r} of {self.name} holds {bad} NaN or "
                                    "infinite values; every value must be finite")

    async def infer(self, batch: Array, deadline: float | None = None) -> Outputs:
        """Every output for ``batch``, via the dynamic batcher; updates the statistics."""
        started = time.monotonic_ns()
        try:
            outputs = await self.batcher.submit(batch, deadline)
        except asyncio.CancelledError:
            # The caller went away (or its deadline passed): not a failure of the model, so
            # not counted as one.
            raise
        except Exception:
            self.statistics.request_failed(time.monotonic_ns() - started)
            raise
        self.statistics.request_succeeded(len(batch), time.monotonic_ns() - started)
        return outputs

    def refuse_new(self) -> None:
        self.batcher.refuse_new()

    async def close(self) -> None:
        """Finish queued requests, then release the batcher's threads."""
        await self.batcher.close()


class _BothObservers:
    """Tells two observers what the batcher did."""

    __slots__ = ("_first", "_second")

    def __init__(self, first: BatchObserver, second: BatchObserver) -> None:
        self._first = first
        self._second = second

    def batch_executed(self, size: int, gather_ns: int, infer_ns: int, scatter_ns: int) -> None:
        self._first.batch_executed(size, gather_ns, infer_ns, scatter_ns)
        self._second.batch_executed(size, gather_ns, infer_ns, scatter_ns)

    def request_dequeued(self, waited_ns: int) -> None:
        self._first.request_dequeued(waited_ns)
        self._second.request_dequeued(waited_ns)

    def request_dropped(self, expired: bool) -> None:
        self._first.request_dropped(expired)
        self._second.request_dropped(expired)

    def request_refused(self) -> None:
        self._first.request_refused()
        self._second.request_refused()
