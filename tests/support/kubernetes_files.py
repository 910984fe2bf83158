"""Readers for the Kubernetes and KServe files that tests check: kustomize's rendered output,
the KServe manifests, and the CRD schemas vendored beside this file (tests/support/crds/).

What is validated is what ``kubectl apply -k`` would send: the output of ``kubectl kustomize``
(kustomize v5, built into kubectl), never the source files, which are partial (patches).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.support.deploy_files import REPO_ROOT

KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"
KSERVE_DIR = REPO_ROOT / "deploy" / "kserve"
ADAPTER_VALUES = KUBERNETES_DIR / "prometheus-adapter" / "values.yaml"
CRD_DIR = Path(__file__).resolve().parent / "crds"

KUBERNETES_VERSION = "1.31"
"""The Kubernetes release whose API schemas every rendered object must meet (strictly)."""
NAMESPACE = "axon"
COMPONENTS = ("tls", "prometheus-operator", "queue-autoscaling")
VARIANTS = ("base", *COMPONENTS, "production")
"""What gets rendered: the base, the base with each component alone, and the production
overlay (every component, the image from a registry)."""

VENDORED_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.v1.yaml",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime.v1alpha1.yaml",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice.v1beta1.yaml",
}
"""Custom resources, checked against the CRD schema parts vendored in tests/support/crds/."""
CORE_TYPE_MARK = "x-kubernetes-core-type"
"""Marks a vendored schema node whose value is a core/v1 Container (checked by Kubernetes'
own schema); ``x-kserve-properties`` then names the fields KServe adds to it."""

KSERVE_MODEL_MOUNT = "/mnt/models"
"""Where KServe's storage initializer puts storageUri (pkg/constants DefaultModelLocalMountPath)."""
KSERVE_CONTAINER = "kserve-container"
"""KServe's name for the model server container (pkg/constants InferenceServiceContainerName)."""


class RendererMissingError(RuntimeError):
    """No kubectl with kustomize v5 on PATH."""


class CrdSchemaError(ValueError):
    """A custom resource does not meet its vendored schema, or Kubernetes' own."""


Manifest = dict[str, Any]


def kubectl() -> str:
    """The kubectl on PATH, if its built-in kustomize is v5 or newer (the syntax used here)."""
    path = shutil.which("kubectl")
    if path is None:
        raise RendererMissingError("kubectl is not on PATH: install kubectl >= 1.27 (its "
                                   "built-in kustomize v5 renders deploy/kubernetes)")
    result = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True,
                            text=True, timeout=60, check=True)
    version = json.loads(result.stdout).get("kustomizeVersion", "")
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < 5:
        raise RendererMissingError(f"kubectl's kustomize is {version or 'absent'}; need v5 "
                                   "or newer (kubectl >= 1.27)")
    return path


@cache
def render(variant: str) -> tuple[Manifest, ...]:
    """The objects ``kubectl kustomize`` renders for a variant (see VARIANTS)."""
    if variant == "base":
        return _kustomize(KUBERNETES_DIR)
    if variant == "production":
        return _kustomize(KUBERNETES_DIR / "overlays" / "production")
    if variant not in COMPONENTS:
        raise ValueError(f"unknown variant {variant!r}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        # kustomize takes only relative paths to other kustomizations.
        relative = Path(os.path.relpath(KUBERNETES_DIR, root))
        (root / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "namespace": NAMESPACE, "resources": [str(relative / "base")],
            "components": [str(relative / "components" / variant)]}))
        return _kustomize(root)


def _kustomize(folder: Path) -> tuple[Manifest, ...]:
    result = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True,
                            text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {folder} failed:\n{result.stderr}")
    return tuple(item for item in yaml.safe_load_all(result.stdout) if item)


def kserve_objects() -> list[Manifest]:
    """Every object in deploy/kserve/*.yaml (plain files, applied with kubectl apply -f)."""
    return [item for path in sorted(KSERVE_DIR.glob("*.yaml"))
            for item in yaml.safe_load_all(path.read_text()) if item]


def only(objects: tuple[Manifest, ...] | list[Manifest], kind: str,
         name: str | None = None) -> Manifest:
    """The one object of ``kind`` (and ``name``); an AssertionError names what was found."""
    found = [item for item in objects if item["kind"] == kind
             and (name is None or item["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def of_kind(objects: tuple[Manifest, ...] | list[Manifest], kind: str) -> list[Manifest]:
    return [item for item in objects if item["kind"] == kind]


@dataclass(frozen=True)
class PodView:
    """A Deployment's pod template, with the look-ups tests make."""

    metadata: Manifest
    spec: Manifest

    def container(self, name: str) -> Manifest:
        matches: list[Manifest] = [c for c in self.spec["containers"] if c["name"] == name]
        assert len(matches) == 1, f"expected one container {name}"
        return matches[0]

    def volume(self, name: str) -> Manifest:
        matches: list[Manifest] = [v for v in self.spec.get("volumes", [])
                                   if v["name"] == name]
        assert len(matches) == 1, f"expected one volume {name}"
        return matches[0]

    def all_containers(self) -> list[Manifest]:
        return [*self.spec.get("initContainers", []), *self.spec["containers"]]


def pod(deployment: Manifest) -> PodView:
    template = deployment["spec"]["template"]
    return PodView(template.get("metadata", {}), template["spec"])


def container_env(objects: tuple[Manifest, ...], container: Manifest) -> dict[str, str]:
    """The variables a container gets: its ConfigMaps (envFrom), then its own ``env``."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = only(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
            values.update({key: str(value) for key, value in data.items()})
    for variable in container.get("env", []):
        if "value" in variable:
            values[variable["name"]] = str(variable["value"])
    return values


def mounted_file(pod_view: PodView, container: Manifest, path: str) -> tuple[Manifest, str]:
    """(the volume, the path inside it) that ``path`` lies on in ``container``."""
    mounts = sorted(container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"]))
    for mount in mounts:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            return pod_view.volume(mount["name"]), path[len(prefix):]
    raise AssertionError(f"{path} is on no volume mounted in {container['name']}")


def validate_kubernetes(item: Manifest) -> None:
    """Kubernetes' own schema for ``item`` at KUBERNETES_VERSION, unknown fields refused."""
    kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)


@cache
def vendored_schema(file_name: str) -> Manifest:
    schema: Manifest = yaml.safe_load((CRD_DIR / file_name).read_text())
    return schema


def validate_custom_resource(item: Manifest) -> None:
    """``item`` against its vendored CRD schema, and each core/v1 Container inside it against
    Kubernetes' own Container schema (as a Pod of one container). Raises CrdSchemaError."""
    key = (str(item.get("apiVersion")), str(item.get("kind")))
    if key not in VENDORED_SCHEMAS:
        raise CrdSchemaError(f"no vendored schema for {key}")
    schema = vendored_schema(VENDORED_SCHEMAS[key])
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(item),
                    key=lambda error: list(error.path))
    if errors:
        raise CrdSchemaError("; ".join(
            f"{'.'.join(str(p) for p in error.path) or '(root)'}: {error.message}"
            for error in errors))
    for where, container in _core_containers(schema, item, ""):
        wrapped = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
                   "spec": {"containers": [{"name": KSERVE_CONTAINER, **container}]}}
        try:
            validate_kubernetes(wrapped)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in list(error.path)[4:])
            raise CrdSchemaError(f"{where}.{path}: {error.message}") from None


def _core_containers(schema: Manifest, value: Any, where: str) -> Iterator[tuple[str, Manifest]]:
    """(path, the Container fields) for every value that a marked schema node describes."""
    if CORE_TYPE_MARK in schema and isinstance(value, dict):
        kserve_fields = set(schema.get("x-kserve-properties", []))
        yield where, {key: item for key, item in value.items() if key not in kserve_fields}
        return
    if isinstance(value, dict):
        for key, item in value.items():
            child = schema.get("properties", {}).get(key)
            if child is not None:
                yield from _core_containers(child, item, f"{where}.{key}".lstrip("."))
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _core_containers(schema["items"], item, f"{where}[{index}]")
