"""The model manager: which versions of each model are served, loaded by their version policy,
swapped on reload, unloaded; request lookup and the repository index.

A (re)load builds the new versions' sessions in a worker thread while the old ones keep serving,
swaps them in at once, then lets the old ones finish their queued requests before closing them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from axon.batching_settings import BatchingSettings
from axon.cpus import usable_cpus
from axon.model_repository import (
    ModelRepository,
    RepositoryError,
    validate_model_name,
)
from axon.server.batching import (
    JOIN_TOLERANCE,
    NEVER_HELD,
    PROFILED_AGAIN,
    TO_PROFILE_AGAIN,
    BatchObserver,
    output_rows_problem,
)
from axon.server.errors import (
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    shown,
)
from axon.server.providers import TENSORRT_PROVIDER
from axon.server.runtime import ModelRuntime, SessionSettings
from axon.server.served_model import ServedModel
from axon.server.version_policy import VersionPolicy

log = logging.getLogger(__name__)

_VERSION = re.compile(r"[0-9]{1,18}")


class ModelObserver(Protocol):
    """Told of loads and given an observer for each version built (the server's metrics)."""

    def for_model(self, model: str, version: int) -> BatchObserver:
        ...

    def model_loaded(self, model: str, seconds: float) -> None:
        ...

    def model_load_failed(self, model: str) -> None:
        ...


@dataclass(frozen=True)
class Prepared:
    """A change to one model, built and checked, not yet serving: the versions that will
    serve (none: an unload) and the numbers the version policy selected."""

    name: str
    versions: dict[int, ServedModel]
    selected: tuple[int, ...]


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: int
    state: Literal["READY", "LOADING", "UNAVAILABLE"]
    reason: str = ""


@dataclass
class _ModelSlot:
    """What the manager knows of one model name."""

    versions: dict[int, ServedModel] = field(default_factory=dict)
    reason: str = ""
    """Why no version is loaded, when none is."""
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    loading: tuple[int, ...] = ()
    """Versions being built now (a first load, or a reload while others serve)."""
    failed: dict[int, str] = field(default_factory=dict)
    """Why each version of the last failed load did not load (kept while others serve)."""


class ModelManager:
    """Serves the versions of each model that the version policy selects."""

    def __init__(self, repository: ModelRepository, policy: VersionPolicy,
                 session: SessionSettings, batching: BatchingSettings,
                 *, on_change: Callable[[str, bool], Coroutine[Any, Any, None]] | None = None,
                 observer: ModelObserver | None = None) -> None:
        """``on_change(name, serving)`` is awaited after a model is loaded or unloaded."""
        self.repository = repository
        self.policy = policy
        self._session = session
        self._batching = batching
        self._on_change = on_change
        self._observer = observer
        self._slots: dict[str, _ModelSlot] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._notifying: set[asyncio.Task[None]] = set()
        self.sync: Callable[[], None] | None = None
        """Called before every lookup (``get``): a worker group applies a change committed by
        its other workers here (server/worker_group.py)."""

    async def load(self, name: str) -> list[int]:
        """Load, or reload from disk, the selected versions of ``name``; return them.

        Returns once the new versions serve; the replaced ones finish their queued requests in
        the background (``close`` waits for them).
        """
        selected = self.commit(await self.prepare_load(name))
        await self.notified()
        return selected

    async def prepare_load(self, name: str) -> Prepared:
        """Build (and warm) the selected versions of ``name`` while the serving ones go on;
        ``commit`` swaps them in, ``discard`` drops them. A worker group prepares in every
        worker before any commits (server/worker_group.py)."""
        try:
            on_disk = self.repository.versions(name)
            # The folder's own spelling, too: on a case-insensitive file system "MNIST" would
            # otherwise find "mnist" and serve it under a second name.
            listed = bool(on_disk) and name in self.repository.model_names()
        except RepositoryError as exc:
            raise InvalidInputError(str(exc)) from exc
        except OSError as exc:
            # Not a missing model: the repository cannot be read now (no file descriptors
            # left, a network file system gone). A failed load, said and recorded as one.
            slot = self._slot(name)
            async with slot.lock:
                message = self._load_failed(name, slot, "cannot read the model repository: "
                                            f"{exc.strerror or exc}")
            raise ModelLoadError(message) from exc
        if not listed:
            raise ModelNotFoundError(f"model {shown(name)} is not in the model repository "
                                     f"{self.repository.root.name}")
        slot = self._slot(name)
        async with slot.lock:
            if not slot.versions:
                slot.reason = "loading"
            started = time.perf_counter()
            try:
                fresh, selected = await self._build_selected(name, on_disk, slot)
                self._check_compatible(name, slot.versions, fresh)
            except ModelLoadError as exc:
                raise ModelLoadError(self._load_failed(name, slot, str(exc))) from exc
            except BaseException:  # e.g. the caller cancelled: the model is not half-loaded
                if not slot.versions:
                    slot.reason = "its load was cancelled"
                raise
            finally:
                slot.loading = ()
            if self._observer is not None:
                self._observer.model_loaded(name, time.perf_counter() - started)
        return Prepared(name, fresh, tuple(selected))

    def prepare_unload(self, name: str) -> Prepared:
        """Check that ``name`` is loaded; ``commit`` then stops serving it."""
        try:
            validate_model_name(name)
        except RepositoryError as exc:
            raise InvalidInputError(str(exc)) from exc
        slot = self._slots.get(name)
        if slot is None or not slot.versions:
            raise ModelNotFoundError(f"model {shown(name)} is not loaded")
        return Prepared(name, {}, ())

    def commit(self, prepared: Prepared) -> list[int]:
        """Serve what ``prepared`` holds instead of what serves now (at once: no await);
        the replaced versions finish their queued requests in the background."""
        slot = self._slot(prepared.name)
        old, slot.versions, slot.failed = slot.versions, dict(prepared.versions), {}
        slot.reason = "" if prepared.versions else "unloaded"
        if prepared.versions:
            log.info("loaded %s version(s) %s on %s", prepared.name, _numbers(prepared.selected),
                     ", ".join(sorted({m.provider for m in prepared.versions.values()})))
        else:
            log.info("unloaded %s", prepared.name)
        self._notify(prepared.name, bool(prepared.versions))
        self._retire(old.values())
        for model in prepared.versions.values():
            model.batcher.look_again_when_idle(functools.partial(_log_profile, model, again=True))
        return list(prepared.selected)

    def discard(self, prepared: Prepared, reason: str) -> None:
        """Drop what ``prepared`` built: another worker of the group could not prepare it
        (``reason``). The model stands as if it had failed here, so every worker describes it
        alike."""
        if prepared.versions:
            self.load_failed_elsewhere(prepared.name, reason, prepared.selected)
        self._retire(prepared.versions.values())

    def load_failed_elsewhere(self, name: str, reason: str,
                              versions: tuple[int, ...] = ()) -> None:
        """Stand ``name`` (``versions`` of it) as failed to load for ``reason``, as the rest
        of its worker group has it: they could not load it, or this worker was started again
        after they could not."""
        slot = self._slot(name)
        slot.failed = {v: reason for v in versions if v not in slot.versions}
        if not slot.versions:
            slot.reason = f"failed to load: {reason}"

    def _load_failed(self, name: str, slot: _ModelSlot, message: str) -> str:
        """Log, count and record a failed load of ``name``; return what the caller is told."""
        if self._observer is not None:
            self._observer.model_load_failed(name)
        message = self._within_repository(message)
        slot.failed = {v: message for v in slot.loading if v not in slot.versions}
        log.error("%s did not load%s: %s", name, " (the loaded versions go on "
                  "serving)" if slot.versions else "", message)
        if not slot.versions:
            slot.reason = f"failed to load: {message}"
        return message

    async def _build_selected(self, name: str, on_disk: list[int], slot: _ModelSlot,
                              ) -> tuple[dict[int, ServedModel], list[int]]:
        """Read the model's config.json, apply its version policy, build those versions."""
        try:
            config = self.repository.serving_config(name)
            slot.policy = VersionPolicy.parse(config.version_policy) if config.version_policy \
                else self.policy
            batching = self._batching.with_overrides(**config.batching_overrides())
        except (RepositoryError, ValueError, OSError) as exc:
            raise ModelLoadError(f"{name}/config.json: {exc}") from exc
        selected = slot.policy.select(on_disk)
        if not selected:
            raise ModelLoadError(f"version policy {slot.policy} selects none of the versions "
                                 f"of {name!r} on disk ({_numbers(on_disk)})")
        slot.loading = tuple(selected)
        # Observers are made here, on the event loop: the metrics' collectors are only ever
        # changed from the loop's thread.
        observers = {version: self._observer.for_model(name, version) for version in selected} \
            if self._observer is not None else {}
        return await asyncio.to_thread(self._build, name, selected, batching, observers), selected

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name``; queued requests still get their answers."""
        self.commit(self.prepare_unload(name))
        await self.notified()

    async def close(self) -> None:
        """Stop serving everything; wait for every model to finish its queued requests."""
        for slot in list(self._slots.values()):
            async with slot.lock:
                old, slot.versions, slot.reason = slot.versions, {}, "server stopping"
            self._retire(old.values())
        await asyncio.gather(*self._retiring, return_exceptions=True)

    def _check_compatible(self, name: str, serving: dict[int, ServedModel],
                          fresh: dict[int, ServedModel]) -> None:
        """A reload must not change what callers send or get back: a version whose input or
        outputs differ from the serving one is refused (and closed), so clients built against
        the model keep working. A deliberate change is an unload and a load, or a new name."""
        if not serving:
            return
        current = serving[max(serving)]
        expected = _signature(current)
        for version, model in fresh.items():
            if (found := _signature(model)) != expected:
                self._retire(fresh.values())
                raise ModelLoadError(
                    f"{name} v{version} has an incompatible signature: {found}, where the "
                    f"serving v{current.version} has {expected}; unload {name} first, or "
                    "publish it under a new name")

    def _retire(self, models: Iterable[ServedModel]) -> None:
        """Close replaced models in the background: a caller's deadline or cancellation must
        not cut their draining short and leave their threads and sessions behind."""
        for model in models:
            model.refuse_new()
            task = asyncio.create_task(model.close(), name=f"close {model.name} v{model.version}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def get(self, name: str, version: str = "") -> ServedModel:
        """The loaded model version a request names; ``version`` empty means the highest."""
        if self.sync is not None:
            self.sync()
        if not name:
            raise InvalidInputError("a model name is required; loaded models: "
                                    f"{', '.join(self.loaded_names()) or 'none'}")
        slot = self._slots.get(name)
        if slot is None or not slot.versions:
            if slot is not None and slot.reason:
                raise ModelNotReadyError(f"model {shown(name)} is not loaded ({slot.reason})")
            raise ModelNotFoundError(f"unknown model {shown(name)}; loaded models: "
                                     f"{', '.join(self.loaded_names()) or 'none'}")
        if not version:
            return slot.versions[max(slot.versions)]
        if not _VERSION.fullmatch(version):
            raise InvalidInputError("model version must be a positive integer, got "
                                    f"{shown(version)}")
        served = slot.versions.get(int(version))
        if served is None:
            raise ModelNotFoundError(f"model {shown(name)} has no loaded version {version} "
                                     f"(loaded: {_numbers(slot.versions)})")
        return served

    def policy_of(self, name: str) -> VersionPolicy:
        """The version policy ``name`` is served under: its config.json's, else the server's."""
        slot = self._slots.get(name)
        return self.policy if slot is None else slot.policy

    def served_names(self) -> list[str]:
        """The models the server means to serve: loaded, loading, or failed to load -- not
        those unloaded on purpose (or never asked for)."""
        return sorted(name for name, slot in self._slots.items()
                      if slot.versions or slot.reason not in ("unloaded", "server stopping"))

    def knows(self, name: str) -> bool:
        """Whether ``name`` was ever asked to be served (a bounded set: a label is safe)."""
        return name in self._slots

    def loaded_names(self) -> list[str]:
        return sorted(name for name, slot in self._slots.items() if slot.versions)

    def loaded(self, name: str | None = None) -> list[ServedModel]:
        """Every loaded model version (of ``name``, if given), by name then version."""
        names = [name] if name is not None else self.loaded_names()
        return [slot.versions[v] for n in names if (slot := self._slots.get(n))
                for v in sorted(slot.versions)]

    def on_disk(self) -> dict[str, list[int]]:
        """Every model in the repository and its versions (reads the file system only, so any
        thread may call it)."""
        return {name: self.repository.versions(name) for name in self.repository.model_names()}

    def index(self, on_disk: dict[str, list[int]] | None = None) -> list[IndexEntry]:
        """Every version on disk (``on_disk``, read now if not given) or loaded, with its
        state."""
        disk = self.on_disk() if on_disk is None else on_disk
        entries: list[IndexEntry] = []
        for name in sorted(set(disk) | set(self.loaded_names())):
            slot = self._slots.get(name)
            loaded = slot.versions if slot else {}
            for version in sorted(set(disk.get(name, ())) | set(loaded)):
                if version in loaded:
                    entries.append(IndexEntry(name, version, "READY"))
                elif slot and (slot.reason == "loading" or version in slot.loading):
                    entries.append(IndexEntry(name, version, "LOADING"))
                elif slot and version in slot.failed:
                    entries.append(IndexEntry(name, version, "UNAVAILABLE",
                                              f"failed to load: {slot.failed[version]}"))
                else:
                    reason = slot.reason if slot and slot.reason else \
                        f"not selected by version policy {slot.policy}" if slot and loaded \
                        else "not loaded"
                    entries.append(IndexEntry(name, version, "UNAVAILABLE", reason))
        return entries

    def _within_repository(self, message: str) -> str:
        """``message`` with the repository's location cut from paths: callers of the model
        control API see paths relative to the repository, not the server's file system."""
        for root in {str(self.repository.root.resolve()), str(self.repository.root)}:
            message = message.replace(root + os.sep, "")
        return message

    def _notify(self, name: str, serving: bool) -> None:
        """Tell ``on_change`` (in order: tasks start in the order they are made); ``notified``
        waits for it."""
        if self._on_change is not None:
            task = asyncio.create_task(self._on_change(name, serving))
            self._notifying.add(task)
            task.add_done_callback(self._notifying.discard)

    async def notified(self) -> None:
        """Return once ``on_change`` has heard of every change committed so far."""
        await asyncio.gather(*self._notifying)

    def _slot(self, name: str) -> _ModelSlot:
        return self._slots.setdefault(name, _ModelSlot())

    def _build(self, name: str, versions: list[int], batching: BatchingSettings,
               observers: dict[int, BatchObserver]) -> dict[int, ServedModel]:
        """Create the sessions (blocking: runs in a worker thread)."""
        built: dict[int, ServedModel] = {}
        for version in versions:
            try:
                path = self.repository.model_file(name, version)
            except RepositoryError as exc:
                raise ModelLoadError(str(exc)) from exc
            runtime = ModelRuntime(path, self._session)
            # One run before it takes traffic: onnxruntime allocates and, on a GPU, compiles
            # kernels on the first run, which would otherwise fall on a caller.
            warm_up = np.zeros((1, *runtime.input.shape), np.float32)
            problem = output_rows_problem(runtime.run(warm_up), 1)
            if problem is not None:  # it would fail every call
                raise ModelLoadError(f"{path}: on its warm-up, {problem}")
            if runtime.card.name != name or runtime.card.version != version:
                log.warning("%s carries the model card of %s v%d; serving it as %s v%d",
                            path, runtime.card.name, runtime.card.version, name, version)
            solo_threads = self._session.solo_threads
            # An execution with no other in flight may use the CPUs the model's other
            # instances would (a config.json may ask for more instances than there are).
            runtime.add_solo_session(min(batching.instances, usable_cpus())
                                     if solo_threads is None else solo_threads)
            served = ServedModel(name, version, runtime, batching, observers.get(version))
            if runtime.provider != TENSORRT_PROVIDER:  # TensorRT builds an engine per shape
                # Batches of 1 to max_batch_size, timed: whether a batch may run on the event
                # loop, the size past which batching no longer pays, and the size from which
                # a batch alone runs on the solo session (server/batching.py).
                times = served.batcher.times
                times.profile(runtime.run, runtime.input.shape, batching.max_batch_size,
                              execute_solo=runtime.run_solo, inline_ns=batching.max_inline_ns)
                _log_profile(served)
            built[version] = served
        return built


def _log_profile(model: ServedModel, *, again: bool = False) -> None:
    """What the profile chose; ``again``: a second look's profile, made while the server was
    idle, which replaces every choice of the first (server/batching.py)."""
    _log_solo(model, again=again)
    _log_alone(model, again=again)


def _log_solo(model: ServedModel, *, again: bool = False) -> None:
    """What the profile chose for the solo session; ``again``: a second look's profile, made
    while the server was idle (server/batching.py)."""
    times, threads = model.batcher.times, model.runtime.solo_threads
    if times.solo_from is None:
        if model.runtime.run_solo is not None:
            log.info("%s v%d: no batch size gains enough on %d onnxruntime threads; every "
                     "execution runs on one%s", model.name, model.version, threads,
                     f"; {TO_PROFILE_AGAIN}" if times.solo_may_pay else "")
        return
    single, solo = times.solo_profile[times.solo_from]
    log.info("%s v%d: %sa batch of %d images or more with no other execution in flight runs "
             "on %d onnxruntime threads (%d images: %.0f µs on one thread; %.0f µs on %d, %.0f "
             "µs of CPU)", model.name, model.version,
             f"{PROFILED_AGAIN}: " if again else "", times.solo_from,
             threads, times.solo_from, single.wall_ns / 1000, solo.wall_ns / 1000, threads,
             solo.cpu_ns / 1000)


def _log_alone(model: ServedModel, *, again: bool = False) -> None:
    """From which request size the profile found company to save nothing (server/batching.py,
    ``first_alone_size``)."""
    times, limit = model.batcher.times, model.batching.max_batch_size
    on_loop, on_thread = times.alone_from, times.alone_on_thread_from
    if on_loop is None or on_thread is None or min(on_loop, on_thread) >= limit:
        return  # a full batch has no company to wait for anyway
    one_thread = times.alone_from_one_thread
    log.info("%s v%d: %sa request of %d image%s or more, with nothing queued before it, runs "
             "as it arrives when short enough for the event loop%s, and one of %d or more when "
             "it must go to a worker thread, %s (per image, the profile ran it within %.0f %% "
             "of every larger batch's time)", model.name, model.version,
             f"{PROFILED_AGAIN}: " if again else "", on_loop, "" if on_loop == 1 else "s",
             f" ({one_thread} or more while the solo session saves nothing live)"
             if one_thread is not None and one_thread != on_loop else "",
             on_thread, NEVER_HELD, JOIN_TOLERANCE * 100)


def _signature(model: ServedModel) -> str:
    runtime = model.runtime
    outputs = ", ".join(f"{o.name}{list(o.shape)}" for o in runtime.outputs)
    return f"input {runtime.input.name}{list(runtime.input.shape)} -> {outputs}, " \
        f"{len(model.card.labels)} labels"


def _numbers(versions: Iterable[int]) -> str:
    return ", ".join(str(v) for v in sorted(versions))
