"""How a model's requests are batched: the one type for it, its defaults and its rules.

The server's flags (``axon serve --max-batch-size ...``), its settings file and environment, and
each model's ``config.json`` all speak these names and units; a model's settings are the server's
with the model's overrides applied (``with_overrides``), checked here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


class BatchingSettingsError(ValueError):
    """Batching settings that contradict each other or are out of range."""


@dataclass(frozen=True)
class BatchingSettings:
    """The dynamic batcher's settings for one model (server-wide defaults where unset)."""

    max_batch_size: int = 256
    """Most items (images) in one model execution; a larger request is refused."""
    max_queue_delay_ms: float = 8.0
    """Longest the oldest queued request waits for its batch to fill while the server is busy
    with other calls. An idle server runs a batch at once (see server/batching.py)."""
    max_queue_size: int = 4096
    """Most items queued for the model; a request that would exceed it is refused at once
    (RESOURCE_EXHAUSTED). At least ``max_batch_size``."""
    instances: int = 1
    """Model executions that may run at the same time (worker threads)."""
    max_inline_ms: float = 1.0
    """An execution expected to take at most this long runs on the event loop itself when the
    loop has nothing else to do, saving the hand-off to a worker thread and back; longer ones,
    and any execution while other calls wait for the loop, run on a worker thread. 0: always
    on a worker thread."""

    def __post_init__(self) -> None:
        for name in BATCHING_FIELDS:
            check_value(name, getattr(self, name))
        if self.max_queue_size < self.max_batch_size:
            raise BatchingSettingsError(
                f"max_queue_size ({self.max_queue_size}) must be at least max_batch_size "
                f"({self.max_batch_size}): a full batch must fit in the queue")

    @property
    def max_queue_delay_ns(self) -> int:
        return round(self.max_queue_delay_ms * 1_000_000)

    @property
    def max_inline_ns(self) -> int:
        return round(self.max_inline_ms * 1_000_000)

    def with_overrides(self, **overrides: Any) -> BatchingSettings:
        """These settings with every override that is not None applied (and checked)."""
        unknown = set(overrides) - set(BATCHING_FIELDS)
        if unknown:
            raise BatchingSettingsError(f"unknown batching settings: {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


BATCHING_FIELDS = tuple(f.name for f in fields(BatchingSettings))
_COUNTS = ("max_batch_size", "max_queue_size", "instances")


def check_value(name: str, value: object) -> None:
    """Raise BatchingSettingsError unless ``value`` is valid for the setting ``name`` on its
    own (counts: positive integers; times: non-negative numbers)."""
    if name in _COUNTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BatchingSettingsError(f"{name} must be a positive integer, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BatchingSettingsError(f"{name} must be a non-negative number, got {value!r}")


DEFAULT_BATCHING = BatchingSettings()
assert tuple(f.name for f in fields(BatchingSettings)) == BATCHING_FIELDS
