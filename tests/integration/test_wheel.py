"""The wheel a user installs: built from a copy of the checkout, it holds one import package,
``axon``, with the real files behind the links axon/server, axon/client, axon/training and
axon/benchmarks; installed alone in a new virtualenv, its client front door imports.

The build reads a copy, not the checkout: setuptools leaves build/ behind in the tree it builds,
and a later wheel would take stale files from there. Building fetches setuptools into pip's
isolated build environment, as any ``pip install`` of the project does (hence ``network``).
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.support.deploy_files import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.network]

LINKED = {"server": "server", "client": "clients", "training": "training",
          "benchmarks": "benchmarks"}
"""axon/<link> -> ../<folder>: the parts kept in top-level folders of the repository."""

FRONT_DOOR = ("AxonClient", "AsyncAxonClient", "AxonClientError", "RetryPolicy",
              "ConnectionSecurity")
CLIENT_REQUIREMENTS = ("grpcio", "grpcio-health-checking", "protobuf")
"""What ``from axon.client import ...`` needs beyond the wheel: grpc, the health stubs (the
client's health check) and protobuf (the generated stubs). Pinned to this environment's versions,
which pip usually has cached."""
REQUIREMENT = re.compile(r"^Requires-Dist: ([A-Za-z0-9._-]+).*$", re.MULTILINE)

# Left out of the copy: the repository root's work products (.gitignore), and at any depth the
# caches and the Node client's packages, none of which a wheel may hold.
ROOT_SKIPPED = {".git", ".venv", ".venv-kserve", "build", "dist", "runs", "model_repository",
                "data", "samples", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}
SKIPPED_ANYWHERE = {"__pycache__", "node_modules"}


def skip_work_products(folder: str, names: list[str]) -> set[str]:
    """shutil.copytree's ``ignore``: which of ``names`` in ``folder`` to leave out."""
    skipped = {n for n in names if n in SKIPPED_ANYWHERE or n.endswith(".egg-info")}
    if Path(folder) == REPO_ROOT:
        skipped |= ROOT_SKIPPED & set(names)
    return skipped


def run(*command: str | Path, cwd: Path) -> str:
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    # symlinks=True copies axon/server etc. as the relative links they are; the build follows them.
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=skip_work_products)
    # `source` is absolute: pip would look a bare folder name up on the index as a project name.
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
        work / "dist", source, cwd=work)
    (built,) = (work / "dist").glob("axon_serving-*.whl")
    return built


def source_files(folder: Path) -> set[str]:
    """The modules, stubs and pictures under ``folder``, relative to it: what the wheel needs."""
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")
            if path.is_file() and path.suffix in {".py", ".pyi", ".png"}
            and not SKIPPED_ANYWHERE & set(path.parts)}


def test_the_wheel_holds_one_import_package_axon(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
        top_level = archive.read(f"{dist_info}/top_level.txt").decode().split()
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert {n.split("/")[0] for n in names} == {"axon", dist_info}
    assert top_level == ["axon"]
    assert "axon = axon.cli:main" in entry_points


@pytest.mark.parametrize(("link", "folder"), LINKED.items())
def test_the_linked_folders_are_in_the_wheel_as_real_files(wheel: Path, link: str,
                                                          folder: str) -> None:
    """Every module (and sample picture) of the folder, byte for byte, under axon/<link>/."""
    assert (REPO_ROOT / "axon" / link).is_symlink()
    expected = source_files(REPO_ROOT / folder)
    assert "__init__.py" in expected
    prefix = f"axon/{link}/"
    with zipfile.ZipFile(wheel) as archive:
        entries = {info.filename.removeprefix(prefix): info for info in archive.infolist()
                   if info.filename.startswith(prefix)}
        assert set(entries) == expected
        for name, info in entries.items():
            assert not stat.S_ISLNK(info.external_attr >> 16), name
            assert archive.read(info) == (REPO_ROOT / folder / name).read_bytes(), name


def test_axons_own_modules_and_stubs_are_in_the_wheel(wheel: Path) -> None:
    """axon/ itself (the shared modules, the generated stubs and their .pyi), links left aside."""
    expected = {name for name in source_files(REPO_ROOT / "axon")
                if name.split("/")[0] not in LINKED}
    assert {"__init__.py", "cli.py", "protocol/open_inference_pb2.pyi"} <= expected
    with zipfile.ZipFile(wheel) as archive:
        entries = {name.removeprefix("axon/") for name in archive.namelist()
                   if name.startswith("axon/") and name.split("/")[1] not in LINKED}
        assert entries == expected
        for name in entries:
            assert archive.read(f"axon/{name}") == (REPO_ROOT / "axon" / name).read_bytes(), name


def test_the_client_front_door_imports_from_the_wheel_alone(wheel: Path, tmp_path: Path) -> None:
    """A new virtualenv, without the system's site-packages: the wheel (no dependencies), then
    only the client's requirements. The import must come from that virtualenv, and must pull in
    no server part. That this environment's packages stay out of sight shows in onnxruntime,
    torch and pytest: none of them can be found there."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requires = {match[1] for match in REQUIREMENT.finditer(archive.read(metadata).decode())
                    if "extra ==" not in match[0]}
    assert set(CLIENT_REQUIREMENTS) <= requires, requires
    env = tmp_path / "venv"
    # Without a pip of its own (ensurepip takes seconds): this environment's pip installs into it.
    run(sys.executable, "-m", "venv", "--without-pip", env, cwd=tmp_path)
    python = env / "bin" / "python"
    pip = (sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
           "--disable-pip-version-check")
    run(*pip, "--no-deps", wheel, cwd=tmp_path)
    run(*pip, *(f"{name}=={version(name)}" for name in CLIENT_REQUIREMENTS), cwd=tmp_path)
    # -I: neither PYTHONPATH nor the working folder may put the checkout's axon on the path.
    probe = f"""
import importlib.util, json, sys
from axon.client import {", ".join(FRONT_DOOR)}
import axon.client
print(json.dumps({{"file": axon.client.__file__, "all": axon.client.__all__,
                  "prefix": sys.prefix, "base": sys.base_prefix,
                  "absent": [m for m in ("onnxruntime", "torch", "pytest")
                             if importlib.util.find_spec(m) is None],
                  "server": "axon.server" in sys.modules}}))
"""
    seen = json.loads(run(python, "-I", "-c", probe, cwd=tmp_path))
    assert Path(seen["prefix"]) == env and seen["base"] != seen["prefix"]
    assert Path(seen["file"]).is_relative_to(env / "lib"), seen["file"]
    assert set(FRONT_DOOR) <= set(seen["all"])
    assert seen["absent"] == ["onnxruntime", "torch", "pytest"]
    assert not seen["server"]
