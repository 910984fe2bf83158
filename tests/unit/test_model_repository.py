"""Model repository layout and versioning."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from axon.model_repository import (
    CARD_FILENAME,
    CONFIG_FILENAME,
    MODEL_FILENAME,
    ModelRepository,
    RepositoryError,
    ServingConfig,
)
from tests.unit.test_model_card import sample_card


def _write_version(folder: Path, version: int) -> None:
    (folder / MODEL_FILENAME).write_bytes(b"onnx bytes")
    sample_card(version).write_json(folder / CARD_FILENAME)


def test_publish_numbers_versions_from_one(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path / "repo")
    assert repository.versions("mnist") == [] and repository.latest_version("mnist") is None
    assert [repository.publish("mnist", _write_version) for _ in range(3)] == [1, 2, 3]
    assert repository.versions("mnist") == [1, 2, 3]
    assert repository.model_names() == ["mnist"]
    assert repository.card("mnist", 2).version == 2
    assert (repository.version_dir("mnist", 3) / MODEL_FILENAME).read_bytes() == b"onnx bytes"


def test_readers_ignore_what_is_not_a_version(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)
    repository.publish("mnist", _write_version)
    (tmp_path / "mnist" / "latest").mkdir()
    (tmp_path / "mnist" / "0").mkdir()
    (tmp_path / "mnist" / "5").mkdir()  # no model.onnx: half-copied by hand
    (tmp_path / "mnist" / "notes.txt").write_text("hi")
    assert repository.versions("mnist") == [1]
    # ...but the next version never reuses a number that exists on disk.
    assert repository.publish("mnist", _write_version) == 6


def test_failed_publication_leaves_nothing_behind(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)

    def broken(folder: Path, version: int) -> None:
        _write_version(folder, version)
        raise RuntimeError("parity failed")

    with pytest.raises(RuntimeError, match="parity failed"):
        repository.publish("mnist", broken)
    assert repository.versions("mnist") == []
    assert [p.name for p in (tmp_path / "mnist").iterdir()] == [".lock"]
    assert repository.publish("mnist", _write_version) == 1


def test_publication_without_a_model_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"wrote no model\.onnx"):
        ModelRepository(tmp_path).publish("mnist", lambda folder, version: None)


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(
        repository.publish("mnist", _write_version))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 9))


def test_serving_config_is_written_once_and_kept(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)
    repository.publish("mnist", _write_version)
    assert repository.serving_config("mnist") == ServingConfig()
    ServingConfig(max_batch_size=64, max_queue_delay_ms=0.5).write(
        tmp_path / "mnist" / CONFIG_FILENAME)
    repository.publish("mnist", _write_version)
    assert repository.serving_config("mnist") == ServingConfig(64, 0.5)


def test_unreadable_serving_config(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / CONFIG_FILENAME).write_text('{"max_batch": 3}')
    with pytest.raises(RepositoryError, match="unreadable serving config"):
        ModelRepository(tmp_path).serving_config("mnist")


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x" * 129, "sp ace"])
def test_unsafe_model_names_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(RepositoryError, match="invalid model name"):
        ModelRepository(tmp_path).publish(name, _write_version)


def test_card_of_a_missing_version(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="model 'mnist' has no version 4"):
        ModelRepository(tmp_path).card("mnist", 4)
