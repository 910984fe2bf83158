"""Model state read at scrape time: on the event loop, and never failing the scrape."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from axon.batching_settings import BatchingSettings
from axon.model_repository import MODEL_FILENAME, ModelRepository
from axon.server.metrics import Metrics
from axon.server.model_manager import ModelManager
from axon.server.model_states import watch_models
from axon.server.runtime import SessionSettings
from axon.server.version_policy import VersionPolicy


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own, as the server's is to the scrape."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    if running.is_running():
        running.call_soon_threadsafe(running.stop)
    thread.join(timeout=5)
    running.close()


def manager_for(root: Path) -> ModelManager:
    for name in ("digits", "pets"):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / MODEL_FILENAME).write_bytes(b"not read by these tests")
    return ModelManager(ModelRepository(root), VersionPolicy(), SessionSettings(),
                        BatchingSettings())


def state(registry: CollectorRegistry, model: str, value: str) -> float | None:
    return registry.get_sample_value("axon_model_state",
                                     {"model": model, "version": "1", "state": value})


def test_versions_on_disk_are_reported_and_a_failing_listing_drops_only_them(
        tmp_path: Path, loop: asyncio.AbstractEventLoop,
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, server_version="test", process=False)
    manager = manager_for(tmp_path)
    watch_models(metrics, manager, loop)
    assert state(registry, "digits", "UNAVAILABLE") == 1
    assert state(registry, "pets", "READY") == 0

    def broken() -> dict[str, list[int]]:
        raise ValueError("a folder nobody expected")

    monkeypatch.setattr(manager, "on_disk", broken)
    assert state(registry, "digits", "UNAVAILABLE") is None
    # The rest of the page is still served: the scrape did not fail.
    assert registry.get_sample_value("axon_build_info", {"version": "test"}) == 1


def test_a_stopped_loop_leaves_the_state_out_instead_of_hanging(
        tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, server_version="test", process=False)
    watch_models(metrics, manager_for(tmp_path), loop)
    loop.call_soon_threadsafe(loop.stop)
    while loop.is_running():
        pass
    loop.close()
    assert state(registry, "digits", "UNAVAILABLE") is None
    assert registry.get_sample_value("axon_build_info", {"version": "test"}) == 1


def test_odd_version_folders_are_not_versions(tmp_path: Path) -> None:
    (tmp_path / "digits" / "\u00b2").mkdir(parents=True)  # "²".isdigit() is True
    (tmp_path / "digits" / "\u00b2" / MODEL_FILENAME).write_bytes(b"x")
    assert ModelRepository(tmp_path).versions("digits") == []
