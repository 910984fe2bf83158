"""Polls the model repository and reloads a model when its files change: a version dropped in
or removed, a model file or ``config.json`` replaced.

A reload builds and warms the new versions while the old ones serve, then swaps them in at once
(``ModelManager.load``); one that fails leaves the serving versions serving, and is tried again
only when the files change again, so a broken version costs one log line, not one per poll.
Publish a version by writing it elsewhere and renaming its folder into place (as ``axon train``
does): a half-copied file fails to load and is retried when it is complete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from axon.errors import AxonError
from axon.model_repository import CONFIG_FILENAME, MODEL_FILENAME, ModelRepository
from axon.server.errors import ServingError
from axon.server.model_manager import ModelManager

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int], ...]
"""(version, mtime in ns, size) of each model file; version 0 stands for config.json."""


def stamp(repository: ModelRepository, name: str) -> Stamp:
    """What identifies the files of ``name`` now (file system reads only)."""
    files = [(version, repository.version_dir(name, version) / MODEL_FILENAME)
             for version in repository.versions(name)]
    files.append((0, repository.root / name / CONFIG_FILENAME))
    return tuple((version, *_stat(path)) for version, path in files)


def _stat(path: Path) -> tuple[int, int]:
    try:
        status = path.stat()
    except OSError:
        return (0, -1)
    return (status.st_mtime_ns, status.st_size)


class RepositoryWatcher:
    """Reloads the models the server serves when their files change; with ``load_new``, also
    loads models that appear in the repository (a server started without ``--models``)."""

    def __init__(self, models: ModelManager, interval: float, *, load_new: bool,
                 load: Callable[[str], Awaitable[list[int]]] | None = None) -> None:
        """``load`` (re)loads a model: ``models.load`` unless given (a worker group's, which
        reloads it in every worker)."""
        self._models = models
        self._load = load or models.load
        self._interval = interval
        self._load_new = load_new
        self._seen: dict[str, Stamp] = {}

    async def run(self) -> None:
        """Poll until cancelled; the first look only records what is there."""
        await self.remember()
        while True:
            await asyncio.sleep(self._interval)
            await self.poll()

    async def remember(self) -> None:
        """Record the repository as it is, without loading anything."""
        self._seen = await asyncio.to_thread(self._stamps, self._watched())

    async def poll(self) -> list[str]:
        """One look at the repository; returns the models it (re)loaded."""
        current = await asyncio.to_thread(self._stamps, self._watched())
        reloaded = []
        for name, files in current.items():
            if self._seen.get(name) == files:
                continue
            self._seen[name] = files
            log.info("model repository: %s changed; loading it", name)
            try:
                versions = await self._load(name)
            except ServingError as error:  # logged by the manager, counted in the metrics
                log.warning("model repository: %s not reloaded: %s", name, error)
                continue
            reloaded.append(name)
            log.info("model repository: %s now serves version(s) %s", name,
                     ", ".join(map(str, versions)))
        return reloaded

    def _watched(self) -> list[str]:
        names = set(self._models.served_names())
        if self._load_new:
            names |= {n for n in self._models.repository.model_names()
                      if not self._models.knows(n)}
        return sorted(names)

    def _stamps(self, names: list[str]) -> dict[str, Stamp]:
        stamps = {}
        for name in names:
            try:
                stamps[name] = stamp(self._models.repository, name)
            except (OSError, AxonError) as error:
                log.warning("model repository: cannot read %s: %s", name, error)
        return stamps
