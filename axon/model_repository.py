"""The on-disk model repository: ``<root>/<model-name>/<version>/model.onnx`` and friends.

Layout::

    <root>/<model-name>/config.json            serving hints, shared by all versions
    <root>/<model-name>/<version>/model.onnx   the model, metadata embedded
    <root>/<model-name>/<version>/model.json   the same model card as JSON
    <root>/<model-name>/<version>/report/      the training run report (metrics.json, plots)

Versions are positive integers; anything else in a model folder (staging folders, the lock file)
is ignored by readers. A new version is built in a staging folder and renamed into place, so a
reader never sees half a version.
"""

from __future__ import annotations

import fcntl
import json
import re
import reprlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from axon.batching_settings import BATCHING_FIELDS, check_value
from axon.errors import AxonError
from axon.model_card import ModelCard

MODEL_FILENAME = "model.onnx"
CARD_FILENAME = "model.json"
CONFIG_FILENAME = "config.json"
REPORT_DIRNAME = "report"
_LOCK_FILENAME = ".lock"
_STAGING_PREFIX = ".staging-"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHORT = reprlib.Repr()
_SHORT.maxstring = 80


class RepositoryError(AxonError):
    """A model repository, model or version is missing or malformed."""


@dataclass(frozen=True)
class ServingConfig:
    """Per-model serving settings (``config.json``), shared by all versions of a model.

    ``null`` (None) means "the server's default" (``axon serve --help``). Written with every
    field null when a model is first published and never overwritten after, so an operator's
    edits survive retraining.
    """

    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None
    max_queue_size: int | None = None
    instances: int | None = None
    max_inline_ms: float | None = None
    """The batching settings (``axon.batching_settings.BatchingSettings`` says what each
    means); null: the server's."""
    version_policy: str | None = None
    """Versions to serve: ``latest``, ``latest:N``, ``all`` or ``specific:V1,V2``."""

    def __post_init__(self) -> None:
        for name, value in self.batching_overrides().items():
            check_value(name, value)

    def batching_overrides(self) -> dict[str, int | float]:
        """The batching settings this model sets (those not null)."""
        return {name: value for name in BATCHING_FIELDS
                if (value := getattr(self, name)) is not None}

    @classmethod
    def read(cls, path: Path) -> ServingConfig:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError("expected a JSON object")
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError, ValueError) as exc:
            raise RepositoryError(f"{path}: unreadable serving config: {exc}") from exc

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def validate_model_name(name: str) -> str:
    """Return ``name`` if it is a safe folder name for a model, else raise ``RepositoryError``."""
    # The whole name: a regex "$" would also accept a final newline ("mnist\n").
    if not _MODEL_NAME.fullmatch(name):
        # Cut: the name comes from callers, and a status message longer than gRPC's metadata
        # limit would reach them as RESOURCE_EXHAUSTED instead of this.
        raise RepositoryError(
            f"invalid model name {_SHORT.repr(name)}: use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (at most 128 characters)")
    return name


class ModelRepository:
    """Reads and extends a model repository rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def model_names(self) -> list[str]:
        """Names of the models that have at least one version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _MODEL_NAME.fullmatch(p.name) and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        """Published versions of ``name``, ascending; empty if the model does not exist."""
        model_dir = self.root / validate_model_name(name)
        if not model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in model_dir.iterdir()
                      if p.is_dir() and p.name.isascii() and p.name.isdigit() and int(p.name) > 0
                      and (p / MODEL_FILENAME).is_file())

    def latest_version(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def version_dir(self, name: str, version: int) -> Path:
        return self.root / validate_model_name(name) / str(version)

    def model_file(self, name: str, version: int) -> Path:
        """The version's model file, resolved. A symlink on the way that leads out of the
        repository (model folder, version folder or the file) is refused: what is served comes
        from the repository, whatever links are placed in it."""
        path = self.version_dir(name, version) / MODEL_FILENAME
        root = self.root.resolve()
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            raise RepositoryError(f"{name} v{version}: {path} leads to {resolved}, outside the "
                                  f"repository {root}; links out of the repository are refused")
        return resolved

    def card(self, name: str, version: int) -> ModelCard:
        """The model card of a published version."""
        if version not in self.versions(name):
            raise RepositoryError(f"model {name!r} has no version {version} in {self.root}")
        return ModelCard.read_json(self.version_dir(name, version) / CARD_FILENAME)

    def serving_config(self, name: str) -> ServingConfig:
        path = self.root / validate_model_name(name) / CONFIG_FILENAME
        return ServingConfig.read(path) if path.is_file() else ServingConfig()

    def publish(self, name: str, populate: Callable[[Path, int], None]) -> int:
        """Add the next version of ``name``: ``populate(folder, version)`` fills the folder.

        The version number is max(existing, including unpublished folders) + 1, chosen under a
        file lock so concurrent publishers never collide. If ``populate`` raises, nothing is
        published and the staging folder is removed.
        """
        model_dir = self.root / validate_model_name(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        with _locked(model_dir / _LOCK_FILENAME):
            version = 1 + max((int(p.name) for p in model_dir.iterdir() if p.name.isdigit()),
                              default=0)
            staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=model_dir))
            try:
                populate(staging, version)
                if not (staging / MODEL_FILENAME).is_file():
                    raise RepositoryError(f"publishing {name!r} wrote no {MODEL_FILENAME}")
                staging.chmod(0o755)
                staging.rename(model_dir / str(version))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            config_path = model_dir / CONFIG_FILENAME
            if not config_path.exists():
                ServingConfig().write(config_path)
        return version


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
