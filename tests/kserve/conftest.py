"""Fixtures for the KServe SDK tests, which run in a virtualenv of their own (``.venv-kserve``,
made by ``make test``): the ``kserve`` package pins its own dependencies (FastAPI, pandas, the
Kubernetes client, protobuf and grpcio ranges) and ships its own generated ``inference`` stubs,
which cannot share a process with Axon's. So this folder is run on its own, with
``--confcutdir tests/kserve`` (tests/conftest.py needs torch), against a real Axon server
started with Axon's own interpreter (``$AXON_PYTHON``, by default ``.venv/bin/python``), which
also trains the model it serves (tests/kserve/prepare.py).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from axon.client.server_process import ServerProcess, running_server

ROOT = Path(__file__).resolve().parents[2]
AXON_PYTHON = os.environ.get("AXON_PYTHON", str(ROOT / ".venv" / "bin" / "python"))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kserve")
    done = subprocess.run([AXON_PYTHON, "-m", "tests.kserve.prepare", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def digits(prepared: Path) -> dict[str, np.ndarray]:
    with np.load(prepared / "digits.npz") as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="session")
def server(prepared: Path) -> Iterator[ServerProcess]:
    with running_server(prepared / "models", prepared / "server.log",
                        launcher=(AXON_PYTHON, "-m", "axon.cli")) as process:
        yield process
