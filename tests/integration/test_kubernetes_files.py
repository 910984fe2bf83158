"""The Kubernetes and KServe files are valid, and agree with the image, the compose file and
the server's settings.

No cluster runs here. ``kubectl kustomize`` (kustomize v5, built into kubectl) renders
deploy/kubernetes, and every rendered object must meet Kubernetes 1.31's schema with unknown
fields refused (kubernetes-validate, offline). Custom resources (ServiceMonitor, KServe's
ServingRuntime and InferenceService) are checked against the parts of their CRDs vendored in
tests/support/crds/, and the containers inside them against Kubernetes' own Container schema.
The rest reads the files together: one image, the server's ports, probes on the gRPC port, the
drain arithmetic, scraping, settings that exist, mounts where the settings point.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from axon.cli import build_parser
from axon.client.server_process import ServerProcess, free_port, start_server
from axon.client.targets import ROUND_ROBIN, channel_target
from axon.server.config import ServerSettings, load_settings
from axon.server.health_check import HealthCheckSettings
from tests.support.certificates import CertificateAuthority
from tests.support.deploy_files import (
    COMPOSE_FILE,
    REPO_ROOT,
    dockerfile_stages,
    exec_form,
    load_yaml,
    port_mappings,
)
from tests.support.kubernetes_files import (
    ADAPTER_VALUES,
    KSERVE_CONTAINER,
    KSERVE_MODEL_MOUNT,
    KUBERNETES_VERSION,
    NAMESPACE,
    VARIANTS,
    VENDORED_SCHEMAS,
    CrdSchemaError,
    Manifest,
    PodView,
    RendererMissingError,
    container_env,
    kserve_objects,
    mounted_file,
    of_kind,
    only,
    pod,
    render,
    validate_custom_resource,
    validate_kubernetes,
)

pytestmark = pytest.mark.external  # kubectl renders the manifests

SERVER = "axon"
"""The serving container's name, and the Deployment's, the Service's and the HPA's."""
OUT_OF_BAND_SECRETS = frozenset({"axon-tokens", "axon-tls", "axon-model-store"})
"""Secrets the operator creates (docs/deployment.md): never in the repository, so never rendered."""
CLOSE_MARGIN_S = 10
"""How long after the grace period the server waits for a hung model execution before it
exits anyway (server/app.py)."""


def default_port(field: str) -> int:
    address: str = ServerSettings.model_fields[field].default
    return int(address.rpartition(":")[2])


GRPC_PORT, METRICS_PORT = default_port("address"), default_port("metrics_address")
HTTP_PORT = default_port("http_address")


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[Manifest, ...]]:
    try:
        return {variant: render(variant) for variant in VARIANTS}
    except RendererMissingError as error:
        pytest.fail(str(error))


def deployment_pod(objects: tuple[Manifest, ...]) -> PodView:
    return pod(only(objects, "Deployment", SERVER))


def axon_env(objects: tuple[Manifest, ...]) -> dict[str, str]:
    return container_env(objects, deployment_pod(objects).container(SERVER))


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def compose_axon() -> dict[str, Any]:
    found: dict[str, Any] = load_yaml(COMPOSE_FILE)["services"]["axon"]
    return found


def serving_runtime() -> Manifest:
    return only(kserve_objects(), "ServingRuntime")


def kserve_container() -> Manifest:
    containers = serving_runtime()["spec"]["containers"]
    assert [c["name"] for c in containers] == [KSERVE_CONTAINER]
    found: Manifest = containers[0]
    return found


# --- schemas ------------------------------------------------------------------------------------

def test_every_rendered_object_meets_the_kubernetes_schema(
        rendered: dict[str, tuple[Manifest, ...]]) -> None:
    for variant, objects in rendered.items():
        assert objects, variant
        for item in objects:
            name = f"{variant}: {item['kind']}/{item['metadata']['name']}"
            key = (item["apiVersion"], item["kind"])
            if key in VENDORED_SCHEMAS:
                validate_custom_resource(item)
                continue
            try:
                validate_kubernetes(item)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{name} against Kubernetes {KUBERNETES_VERSION}: "
                            f"{'.'.join(str(p) for p in error.path)}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                pytest.fail(f"{name}: {error.message}; vendor its CRD schema")


def test_kserve_objects_meet_the_kserve_crds() -> None:
    objects = kserve_objects()
    assert sorted(item["kind"] for item in objects) == ["InferenceService", "ServingRuntime"]
    for item in objects:
        validate_custom_resource(item)


def test_the_vendored_schemas_refuse_what_the_api_server_would(
        rendered: dict[str, tuple[Manifest, ...]]) -> None:
    """The checks above can fail: a misspelt field, a wrong type, a bad Container field."""
    monitor = only(rendered["prometheus-operator"], "ServiceMonitor")
    runtime, service = serving_runtime(), only(kserve_objects(), "InferenceService")
    broken = [
        {**monitor, "spec": {**monitor["spec"], "endpoint": monitor["spec"]["endpoints"]}},
        {**runtime, "spec": {**runtime["spec"], "protocolVersions": ["grpc-v3"]}},
        {**runtime, "spec": {**runtime["spec"], "containers": [
            {**kserve_container(), "readinessProbe": {"grpc": {"port": "8001"}}}]}},
        {**service, "spec": {"predictor": {"model": {
            **service["spec"]["predictor"]["model"], "modelFormats": {"name": "onnx"}}}}},
    ]
    for item in broken:
        with pytest.raises(CrdSchemaError):
            validate_custom_resource(item)


def test_every_namespaced_object_is_in_the_namespace(
        rendered: dict[str, tuple[Manifest, ...]]) -> None:
    for variant, objects in rendered.items():
        only(objects, "Namespace", NAMESPACE)
        for item in objects:
            if item["kind"] != "Namespace":
                assert item["metadata"].get("namespace") == NAMESPACE, (variant, item["kind"])


# --- references inside the rendering ------------------------------------------------------------

def test_references_resolve(rendered: dict[str, tuple[Manifest, ...]]) -> None:
    """Every ConfigMap and Secret the pod names exists (kustomize renames generated ones), but
    the Secrets the operator creates; selectors and targets find what they point at."""
    for variant, objects in rendered.items():
        view = deployment_pod(objects)
        config_maps = {item["metadata"]["name"] for item in of_kind(objects, "ConfigMap")}
        secrets = {item["metadata"]["name"] for item in of_kind(objects, "Secret")}
        for name, kind in _references(view):
            known = config_maps if kind == "ConfigMap" else secrets | OUT_OF_BAND_SECRETS
            assert name in known, f"{variant}: {kind} {name} is neither rendered nor documented"
        labels = view.metadata["labels"]
        for item in [*of_kind(objects, "Service"), *of_kind(objects, "PodDisruptionBudget")]:
            selector = item["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert selector and selector.items() <= labels.items(), (variant, item["kind"])
        deployment = only(objects, "Deployment", SERVER)
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        target = only(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", SERVER)


def _references(view: PodView) -> Iterator[tuple[str, str]]:
    for container in view.all_containers():
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield source["configMapRef"]["name"], "ConfigMap"
            if "secretRef" in source and not source["secretRef"].get("optional"):
                yield source["secretRef"]["name"], "Secret"
    for volume in view.spec.get("volumes", []):
        if "configMap" in volume:
            yield volume["configMap"]["name"], "ConfigMap"
        if "secret" in volume:
            yield volume["secret"]["secretName"], "Secret"


# --- one image, one command, the server's ports -------------------------------------------------

def test_one_serving_image_everywhere(rendered: dict[str, tuple[Manifest, ...]]) -> None:
    """compose builds the serving image (`docker build .`) under this name; Kubernetes and
    KServe run that name; an overlay may move it to a registry, under the same name."""
    image = compose_axon()["image"]
    assert "build" in compose_axon()
    assert kserve_container()["image"] == image
    repository = image.partition(":")[0]
    for variant, objects in rendered.items():
        used = deployment_pod(objects).container(SERVER)["image"]
        if variant == "production":
            assert used.rpartition(":")[0].rsplit("/", 1)[-1] == repository, used
        else:
            assert used == image, variant


def test_containers_run_the_images_axon_serve(
        rendered: dict[str, tuple[Manifest, ...]]) -> None:
    final = dockerfile_stages()[-1]
    entrypoint, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint is not None and cmd is not None
    for objects in rendered.values():
        container = deployment_pod(objects).container(SERVER)
        assert "command" not in container, "the image's ENTRYPOINT (axon) must stay"
        assert container["args"] == exec_form(cmd) == compose_axon()["command"]
    runtime = kserve_container()
    assert "command" not in runtime
    assert runtime["args"][:1] == exec_form(cmd)
    parsed = build_parser(runtime["args"]).parse_args(runtime["args"])
    assert str(parsed.model_repository) == KSERVE_MODEL_MOUNT


def test_ports_are_the_servers_defaults(rendered: dict[str, tuple[Manifest, ...]]) -> None:
    exposed = {int(port.split("/")[0]) for args in dockerfile_stages()[-1].arguments("EXPOSE")
               for port in args.split()}
    assert {GRPC_PORT, HTTP_PORT, METRICS_PORT} <= exposed
    compose_ports = {int(port) for port in compose_axon().get("expose", [])} | {
        container for _, container in port_mappings(compose_axon())}
    assert {GRPC_PORT, HTTP_PORT, METRICS_PORT} <= compose_ports
    for variant, objects in rendered.items():
        container = deployment_pod(objects).container(SERVER)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {"grpc": GRPC_PORT, "http": HTTP_PORT, "metrics": METRICS_PORT}, \
            variant
        env = axon_env(objects)
        assert port_of(env["AXON_ADDRESS"]) == GRPC_PORT
        assert port_of(env["AXON_HTTP_ADDRESS"]) == HTTP_PORT
        assert port_of(env["AXON_METRICS_ADDRESS"]) == METRICS_PORT
        for service in of_kind(objects, "Service"):
            for port in service["spec"]["ports"]:
                assert ports[port["targetPort"]] == port["port"], (variant, port)
                if port["targetPort"] == "grpc":
                    assert port["appProtocol"] == "kubernetes.io/h2c"
    runtime = kserve_container()
    # Knative routes gRPC to one port, and only to one named h2c.
    assert runtime["ports"] == [{"name": "h2c", "containerPort": GRPC_PORT, "protocol": "TCP"}]
    env = {item["name"]: item["value"] for item in runtime["env"]}
    assert port_of(env["AXON_ADDRESS"]) == GRPC_PORT
    assert port_of(env["AXON_METRICS_ADDRESS"]) == METRICS_PORT


def test_the_headless_service_serves_client_side_round_robin(
        rendered: dict[str, tuple[Manifest, ...]]) -> None:
    headless = only(rendered["base"], "Service", "axon-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert not headless["spec"].get("publishNotReadyAddresses", False)
    assert [port["port"] for port in headless["spec"]["ports"]] == [GRPC_PORT]
    target = f"dns:///axon-headless.{NAMESPACE}.svc.cluster.local:{GRPC_PORT}"
    assert channel_target(target) == (target, ROUND_ROBIN)
    assert target in (REPO_ROOT / "docs" / "deployment.md").read_text()


# --- probes and the drain -----------------------------------------------------------------------

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def test_probes_ask_the_grpc_health_service(rendered: dict[str, tuple[Manifest, ...]]) -> None:
    for variant in ("base", "prometheus-operator", "queue-autoscaling"):
        container = deployment_pod(rendered[variant]).container(SERVER)
        for probe in PROBES:
            assert container[probe]["grpc"] == {"port": GRPC_PORT, "service": ""}, variant
    # TLS: the kubelet's gRPC probe has no TLS, so `axon health` (the image's axon script)
    # does it, from mounted files; run for real at the end of this file.
    entrypoint = exec_form(dockerfile_stages()[-1].last("ENTRYPOINT") or "[]")
    check_timeout = HealthCheckSettings.model_fields["timeout"].default
    for variant in ("tls", "production"):
        objects = rendered[variant]
        view = deployment_pod(objects)
        container = view.container(SERVER)
        for probe in PROBES:
            command = container[probe]["exec"]["command"]
            assert "grpc" not in container[probe], variant
            assert command[:2] == [*entrypoint, "health"], variant
            build_parser(command[1:]).parse_args(command[1:])
            assert container[probe]["timeoutSeconds"] >= check_timeout + 1, (variant, probe)
            flags = dict(arg.removeprefix("--").partition("=")[::2] for arg in command[2:])
            tls_volume, ca = mounted_file(view, container, flags["tls-ca"])
            assert ca in {item["path"] for item in tls_volume["secret"]["items"]}
    runtime = kserve_container()
    assert runtime["readinessProbe"]["grpc"] == {"port": GRPC_PORT, "service": ""}
    assert runtime["livenessProbe"]["tcpSocket"] == {"port": GRPC_PORT}


def test_the_drain_fits_the_termination_grace_period(
        rendered: dict[str, tuple[Manifest, ...]]) -> None:
    """preStop (endpoints stop routing) + the grace period (admitted calls finish) + the close
    margin for a hung model execution must end before the kubelet's SIGKILL."""
    for variant, objects in rendered.items():
        view = deployment_pod(objects)
        container = view.container(SERVER)
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep", variant
        sleep = float(pre_stop[1])
        grace = float(axon_env(objects)["AXON_GRACE_SECONDS"])
        deadline = view.spec["terminationGracePeriodSeconds"]
        assert sleep > 0
        assert sleep + grace < deadline
        assert sleep + 2 * grace + CLOSE_MARGIN_S <= deadline, (variant, sleep, grace, deadline)
        # A liveness failure never cuts a drain short.
        liveness = container["livenessProbe"]
        assert liveness["periodSeconds"] * liveness["failureThreshold"] > sleep + grace
    # KServe: no preStop (Knative's queue-proxy drains), Kubernetes' default 30 s grace period.
    env = {item["name"]: item["value"] for item in kserve_container()["env"]}
    assert 2 * float(env["AXON_GRACE_SECONDS"]) + CLOSE_MARGIN_S <= 30


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_the_worker_count_matches_the_cpu_request(
        rendered: dict[str, tuple[Manifest, ...]]) -> None:
    """One worker process keeps about one core busy: as many workers as requested CPUs (the
    default, auto, would count the limit's CPUs instead), so the autoscaler's CPU target means
    what it says."""
    containers = [(variant, deployment_pod(objects).container(SERVER), axon_env(objects))
                  for variant, objects in rendered.items()]
    kserve = kserve_container()
    containers.append(("kserve", kserve, {item["name"]: item["value"]
                                          for item in kserve["env"]}))
    for variant, container, env in containers:
        requested = cpu_cores(str(container["resources"]["requests"]["cpu"]))
        assert int(env["AXON_WORKERS"]) == max(1, int(requested)), variant


# --- metrics ------------------------------------------------------------------------------------

def test_the_metrics_port_is_scraped_once(rendered: dict[str, tuple[Manifest, ...]]) -> None:
    base = deployment_pod(rendered["base"]).metadata["annotations"]
    assert base["prometheus.io/scrape"] == "true"
    assert int(base["prometheus.io/port"]) == METRICS_PORT
    assert base["prometheus.io/path"] == "/metrics"
    for variant in ("prometheus-operator", "production"):
        objects = rendered[variant]
        view = deployment_pod(objects)
        assert view.metadata["annotations"]["prometheus.io/scrape"] == "false", variant
        monitor = only(objects, "ServiceMonitor")["spec"]
        selected = [service for service in of_kind(objects, "Service")
                    if monitor["selector"]["matchLabels"].items()
                    <= service["metadata"]["labels"].items()]
        for endpoint in monitor["endpoints"]:
            assert endpoint["path"] == "/metrics"
            ports = [port for service in selected for port in service["spec"]["ports"]
                     if port["name"] == endpoint["port"]]
            assert len(ports) == 1, f"{variant}: each replica scraped once, not {len(ports)}"
            container = view.container(SERVER)
            by_name = {port["name"]: port["containerPort"] for port in container["ports"]}
            assert by_name[ports[0]["targetPort"]] == METRICS_PORT
        # The alert rules watch job="axon": the operator names the job after the Service.
        assert "jobLabel" not in monitor
        assert {service["metadata"]["name"] for service in selected if any(
            port["name"] == "metrics" for port in service["spec"]["ports"])} == {"axon"}
    runtime = serving_runtime()["spec"]["annotations"]
    assert int(runtime["prometheus.kserve.io/port"]) == METRICS_PORT
    assert runtime["prometheus.kserve.io/path"] == "/metrics"
    service = only(kserve_objects(), "InferenceService")["metadata"]["annotations"]
    assert service["serving.kserve.io/enable-prometheus-scraping"] == "true"


# --- settings and mounts ------------------------------------------------------------------------

def test_every_axon_variable_is_a_setting_that_parses(
        rendered: dict[str, tuple[Manifest, ...]], monkeypatch: pytest.MonkeyPatch) -> None:
    runtime_env = {item["name"]: item["value"] for item in kserve_container()["env"]}
    environments = {**{variant: axon_env(objects) for variant, objects in rendered.items()},
                    "kserve": runtime_env}
    for where, env in environments.items():
        settings = {key: value for key, value in env.items() if key.startswith("AXON_")}
        assert settings, where
        for key in settings:
            field = key.removeprefix("AXON_").lower()
            assert field in ServerSettings.model_fields, f"{where}: {key} is no setting"
        with monkeypatch.context() as patch:
            for key in [key for key in os.environ if key.startswith("AXON_")]:
                patch.delenv(key)
            for key, value in settings.items():
                patch.setenv(key, value)
            load_settings()  # raises on a value that does not parse


def test_settings_point_at_what_is_mounted(rendered: dict[str, tuple[Manifest, ...]]) -> None:
    for variant, objects in rendered.items():
        view = deployment_pod(objects)
        container, env = view.container(SERVER), axon_env(objects)
        # The model repository: the volume the init container fills, read-only here.
        repository = env["AXON_MODEL_REPOSITORY"]
        mount = {m["mountPath"]: m for m in container["volumeMounts"]}[repository]
        assert mount["readOnly"] is True
        fetcher = view.spec["initContainers"][0]
        assert any(m["name"] == mount["name"] and not m.get("readOnly")
                   for m in fetcher["volumeMounts"])
        assert "emptyDir" in view.volume(mount["name"])
        # Tokens and TLS files: a Secret key mounted at exactly the file the setting names.
        for setting in ("AXON_TOKENS_FILE", "AXON_TLS_CERT", "AXON_TLS_KEY", "AXON_TLS_CLIENT_CA"):
            if setting not in env:
                assert setting != "AXON_TOKENS_FILE", f"{variant}: tokens are required"
                continue
            volume, name = mounted_file(view, container, env[setting])
            assert name in {item["path"] for item in volume["secret"]["items"]}, (variant,
                                                                                  setting)
        assert ("AXON_TLS_CERT" in env) == (variant in ("tls", "production"))


def test_pods_run_restricted(rendered: dict[str, tuple[Manifest, ...]]) -> None:
    """The "restricted" Pod Security Standard the namespace enforces, and a non-root image."""
    user = dockerfile_stages()[-1].last("USER")
    # Numeric, so the kubelet can enforce runAsNonRoot, and the uid the pods run as.
    assert user is not None and user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0
    for variant, objects in rendered.items():
        view = deployment_pod(objects)
        pod_security = view.spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["runAsUser"] == int(user.split(":")[0])
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert view.spec["enableServiceLinks"] is False  # they would inject AXON_* variables
        assert view.spec["automountServiceAccountToken"] is False
        for container in view.all_containers():
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, (variant, container["name"])
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["requests"] and container["resources"]["limits"]
        namespace = only(objects, "Namespace", NAMESPACE)["metadata"]["labels"]
        assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    security = kserve_container()["securityContext"]
    assert security["runAsNonRoot"] is True and security["allowPrivilegeEscalation"] is False


# --- autoscaling --------------------------------------------------------------------------------

def test_autoscaling_keeps_a_replica_through_a_disruption(
        rendered: dict[str, tuple[Manifest, ...]]) -> None:
    for variant, objects in rendered.items():
        hpa = only(objects, "HorizontalPodAutoscaler")["spec"]
        budget = only(objects, "PodDisruptionBudget")["spec"]
        assert hpa["minReplicas"] > budget["maxUnavailable"], variant
        assert "replicas" not in only(objects, "Deployment", SERVER)["spec"], "the HPA owns it"
        cpu = [m for m in hpa["metrics"] if m["type"] == "Resource"]
        assert [m["resource"]["name"] for m in cpu] == ["cpu"], variant
        requests = deployment_pod(objects).container(SERVER)["resources"]["requests"]
        assert "cpu" in requests, "CPU utilisation is measured against the request"


def test_queue_autoscaling_uses_the_adapters_metric(
        rendered: dict[str, tuple[Manifest, ...]]) -> None:
    rules = load_yaml(ADAPTER_VALUES)["rules"]["custom"]
    served = {rule["name"]["as"]: rule for rule in rules}
    metrics_source = (REPO_ROOT / "server" / "metrics.py").read_text()
    for rule in rules:
        for metric in ("axon_queue_items", "axon_queue_capacity_items"):
            assert metric in rule["metricsQuery"] and f'"{metric}"' in metrics_source
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    for variant in ("queue-autoscaling", "production"):
        hpa = only(rendered[variant], "HorizontalPodAutoscaler")["spec"]
        pods = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
        assert [metric["metric"]["name"] for metric in pods] == list(served), variant
        assert {m["type"] for m in hpa["metrics"]} == {"Resource", "Pods"}


def test_the_adapters_query_is_valid_promql(tmp_path: Path) -> None:
    """The rule's query with the adapter's template variables filled in, parsed by promtool."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH (Debian: apt-get install prometheus)")
    rules = []
    for index, rule in enumerate(load_yaml(ADAPTER_VALUES)["rules"]["custom"]):
        query = rule["metricsQuery"].replace("<<.GroupBy>>", "namespace, pod").replace(
            "<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"axon-.*"')
        assert "<<" not in query
        rules.append({"record": f"axon_adapter:query_{index}", "expr": query})
        series = rule["seriesQuery"]
        rules.append({"record": f"axon_adapter:series_{index}", "expr": series})
    path = tmp_path / "adapter_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- KServe -------------------------------------------------------------------------------------

def test_the_inference_service_uses_the_runtime() -> None:
    runtime = serving_runtime()
    model = only(kserve_objects(), "InferenceService")["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model["modelFormat"]["name"] == "onnx"
    assert model["protocolVersion"] == "grpc-v2"
    assert runtime["spec"]["protocolVersions"] == ["grpc-v2"], "one routed port: gRPC's"
    assert model["storageUri"].startswith(("s3://", "gs://", "pvc://", "https://", "oci://"))


# --- the TLS component's probe, for real ---------------------------------------------------------

POD_FILES = "/etc/axon/"
"""Where the pod's Secrets are mounted; here, a temporary folder stands in."""


def pod_environment(objects: tuple[Manifest, ...], folder: Path, port: int) -> dict[str, str]:
    """The container's AXON_* variables, the mounted files under ``folder``, the gRPC port
    ``port`` (the pod's any-address host kept), and nothing of this process's AXON_*."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AXON_")}
    pod = {k: v.replace(POD_FILES, f"{folder}/") for k, v in axon_env(objects).items()}
    return {**clean, **pod, "AXON_ADDRESS": f"0.0.0.0:{port}"}


def run_probe(objects: tuple[Manifest, ...], folder: Path, port: int, *extra: str) -> int:
    """The rendered readiness probe (the image's ``axon`` script as the tests launch it) in the
    pod's environment, its file paths under ``folder``."""
    command = deployment_pod(objects).container(SERVER)["readinessProbe"]["exec"]["command"]
    args = [arg.replace(POD_FILES, f"{folder}/") for arg in command[1:]]
    env = pod_environment(objects, folder, port)
    return subprocess.run([sys.executable, "-m", "axon.cli", *args, *extra],
                          capture_output=True, timeout=60, check=False, env=env).returncode


def pod_files(folder: Path, authority: CertificateAuthority) -> Path:
    """The tls Secret's files and a tokens file, as mounted in the pod, under ``folder``."""
    server = authority.issue_server((f"axon.{NAMESPACE}.svc",))
    for name, content in (("tls/tls.crt", server.certificate), ("tls/tls.key", server.key),
                          ("tls/ca.crt", authority.certificate),
                          ("tokens/tokens", b"infer:probe-test-token-0123456789\n")):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture(scope="module")
def tls_pod(rendered: dict[str, tuple[Manifest, ...]], tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[tuple[ServerProcess, Path]]:
    """A real server started with the tls variant's settings and files, on an empty
    repository (it then serves, with no models)."""
    folder = pod_files(tmp_path_factory.mktemp("k8s-tls"), CertificateAuthority("axon test CA"))
    (folder / "models").mkdir()
    port = free_port()
    process = start_server(folder / "models", folder / "server.log",
                           "--address", f"127.0.0.1:{port}",
                           env=pod_environment(rendered["tls"], folder, port))
    try:
        yield process, folder
    finally:
        process.stop()


def test_the_tls_probe_checks_health_over_tls(
        rendered: dict[str, tuple[Manifest, ...]], tls_pod: tuple[ServerProcess, Path]) -> None:
    process, folder = tls_pod
    # The pod's settings took: TLS, and the tokens from the mounted file.
    assert "INFO    TLS; bearer tokens required except for health" in process.log()
    objects = rendered["tls"]
    assert run_probe(objects, folder, process.port) == 0
    stranger = folder / "stranger.crt"
    stranger.write_bytes(CertificateAuthority("another CA").certificate)
    assert run_probe(objects, folder, process.port, f"--tls-ca={stranger}") == 1
    assert run_probe(objects, folder, process.port, "--tls-server-name=wrong.example") == 1
    assert run_probe(objects, folder, process.port, "--service=no-such-model") == 1


def test_the_tls_probe_fails_while_not_serving(rendered: dict[str, tuple[Manifest, ...]],
                                               tmp_path: Path) -> None:
    """Startup (models loading) and the drain: the health service answers NOT_SERVING."""
    folder = pod_files(tmp_path, CertificateAuthority("probe CA"))
    servicer = health.HealthServicer()
    server = grpc.server(ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [((folder / "tls/tls.key").read_bytes(), (folder / "tls/tls.crt").read_bytes())]))
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert run_probe(rendered["tls"], folder, port) == 1
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert run_probe(rendered["tls"], folder, port) == 0
    finally:
        server.stop(None)
