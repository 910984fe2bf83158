"""Default locations on disk, overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Axon's cache root.

    ``$AXON_CACHE_DIR``, else ``$XDG_CACHE_HOME/axon``, else ``~/.cache/axon``.
    """
    explicit = os.environ.get("AXON_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "axon"


def default_data_dir(dataset: str) -> Path:
    """Where a named data set is stored when the user names no directory."""
    return cache_dir() / "data" / dataset
