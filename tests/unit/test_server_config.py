"""Server settings: defaults, and flags over environment over settings file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from axon.cpus import usable_cpus
from axon.server.config import ENV_PREFIX, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AXON_* variable of the machine running the tests, and no stray files nearby."""
    for name in os.environ:
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def toml_file(folder: Path, text: str) -> Path:
    path = folder / "axon.toml"
    path.write_text(text)
    return path


def field_errors(error: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in error.value.errors()]


def test_defaults() -> None:
    settings = load_settings()
    assert settings.model_repository == Path("model_repository")
    assert settings.address == "0.0.0.0:8001"
    assert settings.models == ()
    assert settings.version_policy == "latest"
    assert settings.providers == ("cuda", "cpu")
    assert (settings.max_batch_size, settings.max_queue_delay_ms, settings.max_queue_size,
            settings.instances, settings.max_inline_ms) == (256, 8.0, 4096, "auto", 1.0)
    # auto: one worker process per usable CPU, and per worker one execution per CPU it has:
    # a model that is the bottleneck keeps every core busy, without more threads than cores.
    assert settings.workers == "auto" and settings.worker_count == usable_cpus()
    assert settings.batching.instances == 1
    assert (settings.intra_op_threads, settings.inter_op_threads) == (1, 1)
    assert settings.solo_execution_threads == "auto"
    assert settings.graph_optimization == "all"
    assert settings.model_control and settings.reflection


@pytest.mark.parametrize(("flags", "problem"), [
    ({"max_batch_size": 512, "max_queue_size": 256},
     "max_queue_size (256) must be at least max_batch_size (512)"),
    ({"instances": "0"}, "greater than or equal to 1"),
    ({"instances": "many"}, "auto"),
])
def test_batching_settings_that_contradict_or_are_out_of_range_are_refused(
        flags: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as error:
        load_settings(**flags)
    assert problem in str(error.value)


@pytest.mark.parametrize(("workers", "instances"), [(1, 8), (2, 4), (3, 2), (8, 1), (16, 1)])
def test_auto_instances_share_the_cpus_among_the_workers(
        monkeypatch: pytest.MonkeyPatch, workers: int, instances: int) -> None:
    monkeypatch.setattr("axon.server.config.usable_cpus", lambda: 8)
    settings = load_settings(workers=workers)
    assert settings.worker_count == workers
    assert settings.batching.instances == instances
    assert load_settings(workers=workers, instances=3).batching.instances == 3


def test_solo_execution_threads_are_a_count_or_auto() -> None:
    assert load_settings(solo_execution_threads="3").solo_execution_threads == 3
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        load_settings(solo_execution_threads=0)
    with pytest.raises(ValidationError, match="auto"):
        load_settings(solo_execution_threads="all")


def test_workers_must_be_a_count_or_auto() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        load_settings(workers=0)
    with pytest.raises(ValidationError, match="auto"):
        load_settings(workers="all")


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.max_batch_size = 1


def test_flags_beat_environment_beats_file_beats_defaults(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    config = toml_file(tmp_path, 'max_batch_size = 32\naddress = "127.0.0.1:9000"\n'
                                 'max_queue_delay_ms = 1.5\nproviders = ["cpu"]\n')
    monkeypatch.setenv("AXON_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("AXON_ADDRESS", "127.0.0.1:9001")
    settings = load_settings(config, max_batch_size=8, instances=None)
    assert settings.max_batch_size == 8  # flag
    assert settings.address == "127.0.0.1:9001"  # environment
    assert settings.max_queue_delay_ms == 1.5  # file
    assert settings.providers == ("cpu",)  # file, an array
    assert settings.instances == "auto"  # default: a None flag is no flag


def test_a_none_flag_leaves_the_environment_value(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("AXON_MAX_BATCH_SIZE", "16")
    config = toml_file(tmp_path, "max_batch_size = 32\n")
    assert load_settings(config, max_batch_size=None).max_batch_size == 16
    assert load_settings(max_batch_size=None).max_batch_size == 16


def test_a_json_settings_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "axon.json"
    path.write_text(json.dumps({"max_batch_size": 32, "models": ["mnist", "pets"],
                                "model_control": False}))
    settings = load_settings(path)
    assert settings.max_batch_size == 32
    assert settings.models == ("mnist", "pets")
    assert not settings.model_control


@pytest.mark.parametrize(("value", "providers"), [
    ("cpu", ("cpu",)), ("cuda,cpu", ("cuda", "cpu")), (" tensorrt , cuda ,cpu,", ("tensorrt",
                                                                                  "cuda", "cpu")),
])
def test_comma_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str,
                                          providers: tuple[str, ...]) -> None:
    monkeypatch.setenv("AXON_PROVIDERS", value)
    monkeypatch.setenv("AXON_MODELS", "mnist,pets")
    settings = load_settings()
    assert settings.providers == providers
    assert settings.models == ("mnist", "pets")


def test_comma_list_flags_are_split_too() -> None:
    assert load_settings(providers="cuda,cpu").providers == ("cuda", "cpu")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("version_policy", "newest", "invalid version policy 'newest'"),
    ("providers", ("gpu",), "unknown execution provider 'gpu'"),
    ("providers", "", "name at least one execution provider"),
    ("address", "localhost", "address must be host:port"),
    ("address", "localhost:99999", "address must be host:port"),
    ("address", ":8001", "address must be host:port"),
    ("max_batch_size", -1, "greater than or equal to 1"),
    ("max_queue_delay_ms", -0.5, "greater than or equal to 0"),
    ("graph_optimization", "maximal", "'disable', 'basic', 'extended' or 'all'"),
])
def test_invalid_flags_name_their_field(field: str, value: object, message: str) -> None:
    flags: dict[str, Any] = {field: value}
    with pytest.raises(ValidationError, match=message) as error:
        load_settings(**flags)
    assert field_errors(error) == [(field,)]


def test_invalid_environment_values_name_their_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AXON_PROVIDERS", "cuda,gpu")
    monkeypatch.setenv("AXON_MAX_BATCH_SIZE", "many")
    with pytest.raises(ValidationError) as error:
        load_settings()
    assert sorted(field_errors(error)) == [("max_batch_size",), ("providers",)]


def test_an_unknown_key_in_the_settings_file_is_refused(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "max_batch_size = 8\nmax_batch = 8\n")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted") as error:
        load_settings(config)
    assert field_errors(error) == [("max_batch",)]


def test_an_invalid_value_in_the_settings_file_names_its_field(tmp_path: Path) -> None:
    config = toml_file(tmp_path, 'version_policy = "specific"\n')
    with pytest.raises(ValidationError, match="invalid version policy") as error:
        load_settings(config)
    assert field_errors(error) == [("version_policy",)]


def test_a_missing_settings_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.toml does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_the_http_port_is_on_by_default_and_turned_off_two_ways() -> None:
    settings = load_settings()
    assert (settings.http, settings.http_address, settings.serves_http) == \
        (True, "0.0.0.0:8000", True)
    assert settings.http_body_timeout_seconds == 30.0
    assert not load_settings(http=False).serves_http
    assert not load_settings(http_address="").serves_http
    with pytest.raises(ValidationError) as error:
        load_settings(http_address="8000")
    assert field_errors(error) == [("http_address",)]
    with pytest.raises(ValidationError):
        load_settings(http_body_timeout_seconds=0)
