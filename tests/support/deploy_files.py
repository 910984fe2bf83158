"""Readers for the deployment files (Dockerfile, compose, Prometheus, Grafana) that tests check.

Static tests (tests/integration/test_deploy_files.py) and tests that run the dashboard's and
alerts' PromQL against a live Prometheus share these, so both read the files the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS_FILE = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST_FILE = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = REPO_ROOT / "deploy" / "grafana"
DATASOURCES_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER_FILE = GRAFANA_DIR / "provisioning" / "dashboards" / "axon.yml"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "axon.json"

GPU_METRIC_PREFIX = "axon_gpu_"
"""GPU series exist only where NVML does: a query of them is empty elsewhere, by design."""
GPU_PANEL_TITLES = frozenset({"GPU utilisation", "GPU memory"})
"""The dashboard panels that show "no GPU" on CPU-only machines."""
LAYOUT_PANEL_TYPES = frozenset({"row", "text"})
"""Panel types that hold no query."""


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@cache
def dashboard() -> dict[str, Any]:
    """The Grafana dashboard JSON (read once; do not modify the result)."""
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows, in file order."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL as written, Grafana variables and all) for every panel target."""
    return [(panel["title"], target["expr"])
            for panel in dashboard_panels() for target in panel.get("targets", [])]


def is_gpu_expression(expr: str) -> bool:
    """Whether ``expr`` reads GPU series (empty on machines without NVML)."""
    return GPU_METRIC_PREFIX in expr


def substitute_variables(expr: str, *, rate_interval: str = "1m", model: str = ".*",
                         protocol: str = ".*") -> str:
    """``expr`` as Grafana would send it: ``$__rate_interval``, ``$model`` and ``$protocol``
    filled in.

    ``model`` and ``protocol`` are regexes, as a variable's All value (``.*``) or a
    multi-selection is.
    """
    return expr.replace("$__rate_interval", rate_interval).replace("$model", model) \
        .replace("$protocol", protocol)


def alert_rules() -> list[tuple[str, str]]:
    """(alert name, PromQL) for every alerting rule in alerts.yml."""
    return [(rule["alert"], rule["expr"].strip())
            for group in load_yaml(ALERTS_FILE)["groups"]
            for rule in group["rules"] if "alert" in rule]


@dataclass(frozen=True)
class DockerStage:
    """One ``FROM`` stage: its base image (or stage), its ``AS`` name and its instructions."""

    base: str
    name: str | None
    instructions: tuple[tuple[str, str], ...]
    """(KEYWORD, arguments) in order, continuation lines joined, comments dropped."""

    def arguments(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str | None:
        """The arguments of the stage's last ``keyword`` instruction, the one in force."""
        found = self.arguments(keyword)
        return found[-1] if found else None


def dockerfile_stages(path: Path = DOCKERFILE) -> list[DockerStage]:
    """The stages of a Dockerfile, in order; the last is what ``docker build .`` produces."""
    stages: list[DockerStage] = []
    current: tuple[str, str | None] | None = None
    instructions: list[tuple[str, str]] = []
    for keyword, args in _instructions(path.read_text()):
        if keyword == "FROM":
            if current is not None:
                stages.append(DockerStage(*current, tuple(instructions)))
            words = [word for word in args.split() if not word.startswith("--platform")]
            named = len(words) == 3 and words[1].upper() == "AS"
            current, instructions = (words[0], words[2] if named else None), []
        elif current is not None:
            instructions.append((keyword, args))
    if current is not None:
        stages.append(DockerStage(*current, tuple(instructions)))
    return stages


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; Docker drops comment lines even mid-instruction."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        continued = line.endswith("\\")
        pending += (line[:-1] if continued else line) + " "
        if not continued:
            keyword, _, args = pending.strip().partition(" ")
            found.append((keyword.upper(), args.strip()))
            pending = ""
    return found


def exec_form(args: str) -> list[str]:
    """The JSON (exec) form of ENTRYPOINT/CMD as a list; ValueError for the shell form."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not in exec (JSON array) form: {args}") from exc
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"not a JSON array of strings: {args}")
    return value


def copied_from_context(stage: DockerStage) -> list[str]:
    """The build-context paths the stage's ``COPY`` instructions take (not ``--from`` ones)."""
    sources: list[str] = []
    for args in stage.arguments("COPY"):
        words = args.split()
        if any(word.startswith("--from") for word in words):
            continue
        sources += [word for word in words[:-1] if not word.startswith("--")]
    return sources


def dockerignored(path: str, ignore_file: Path = DOCKERIGNORE) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out of the build context.

    Docker's rules as far as this repository uses them: ``*`` and ``?`` within one path
    element, ``**`` across any number, ``!`` to take a path back, the last matching line wins,
    and a pattern that matches a folder leaves out everything under it. (Character classes
    ``[...]`` are not handled: none is used.)
    """
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    excluded = False
    for line in ignore_file.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        matcher = _ignore_pattern(pattern.removeprefix("!").strip("/"))
        if any(matcher.fullmatch(candidate) for candidate in candidates):
            excluded = not keep
    return excluded


def _ignore_pattern(pattern: str) -> re.Pattern[str]:
    translated = ""
    for token in re.split(r"(\*\*/?|\*|\?)", pattern):
        if token.startswith("**"):
            translated += "(?:.*/)?" if token.endswith("/") else ".*"
        elif token == "*":
            translated += "[^/]*"
        elif token == "?":
            translated += "[^/]"
        else:
            translated += re.escape(token)
    return re.compile(translated)


@dataclass(frozen=True)
class HealthCheck:
    """A ``HEALTHCHECK`` instruction: its options (``interval``: ``10s``, ...) and command."""

    options: dict[str, str]
    command: list[str]


def healthcheck(stage: DockerStage) -> HealthCheck:
    """The stage's ``HEALTHCHECK ... CMD [...]`` in force (exec form only, as this repository
    writes it: no shell between Docker and the command)."""
    args = stage.last("HEALTHCHECK")
    if args is None:
        raise ValueError("the stage has no HEALTHCHECK")
    flags, separator, command = args.partition("CMD ")
    if not separator:
        raise ValueError(f"HEALTHCHECK without CMD: {args}")
    options = dict(flag.removeprefix("--").partition("=")[::2] for flag in flags.split())
    return HealthCheck(options, exec_form(command))


def env_values(stage: DockerStage) -> dict[str, str]:
    """The stage's ``ENV KEY=VALUE ...`` settings (unquoted values only, as this repo uses)."""
    values: dict[str, str] = {}
    for args in stage.arguments("ENV"):
        for pair in args.split():
            key, sep, value = pair.partition("=")
            if sep:
                values[key] = value
    return values


def port_mappings(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) for a compose service's ``ports``, short or long syntax."""
    mappings: list[tuple[int, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            mappings.append((int(entry["published"]), int(entry["target"])))
            continue
        parts = re.sub(r"/(tcp|udp)$", "", str(entry)).split(":")
        container = int(parts[-1])
        mappings.append((int(parts[-2]) if len(parts) > 1 else container, container))
    return mappings


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path for a compose service's bind mounts (relative paths are
    resolved against the compose file's folder; named volumes are left out)."""
    mounts: dict[str, Path] = {}
    for source, target in volume_entries(service):
        if source.startswith((".", "/")):
            mounts[target] = (COMPOSE_FILE.parent / source).resolve()
    return mounts


def volume_entries(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, container path) per ``volumes`` entry of a compose service."""
    entries: list[tuple[str, str]] = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            entries.append((str(entry["source"]), str(entry["target"])))
        else:
            source, target = str(entry).split(":")[:2]
            entries.append((source, target))
    return entries


def host_path(mounts: dict[str, Path], container_path: str) -> Path | None:
    """Where ``container_path`` lives on the host through ``mounts``, or None if unmounted."""
    for target, source in sorted(mounts.items(), key=lambda item: -len(item[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / Path(container_path).relative_to(target)
    return None
