"""The deployment files agree with each other and with the code they deploy.

No Docker engine runs here, so these read the files: Prometheus's own ``promtool`` checks the
configuration, the alerts and their unit tests (and parses every dashboard query); the rest
cross-checks ports, paths, datasource uids and entry points between the Dockerfile, the compose
file, the Prometheus and Grafana files and ``ServerSettings``.
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from axon.benchmarks.nginx_process import (
    HTTP2_DIRECTIVE_SINCE,
    for_installed_nginx,
    legacy_http2_form,
    nginx_version,
)
from axon.cli import build_parser
from axon.client.server_process import start_server
from axon.server.config import ServerSettings, load_settings
from axon.server.health_check import HealthCheckSettings
from tests.support.deploy_files import (
    ALERTS_FILE,
    ALERTS_TEST_FILE,
    COMPOSE_FILE,
    DASHBOARD_FILE,
    DASHBOARD_PROVIDER_FILE,
    DATASOURCES_FILE,
    GPU_PANEL_TITLES,
    LAYOUT_PANEL_TYPES,
    PROMETHEUS_CONFIG,
    REPO_ROOT,
    alert_rules,
    bind_mounts,
    copied_from_context,
    dashboard,
    dashboard_expressions,
    dashboard_panels,
    dockerfile_stages,
    dockerignored,
    env_values,
    exec_form,
    healthcheck,
    host_path,
    is_gpu_expression,
    load_yaml,
    port_mappings,
    substitute_variables,
    volume_entries,
)

NGINX_CONFIG = REPO_ROOT / "deploy" / "nginx" / "nginx.conf"

SERVICES = ("train", "axon", "nginx", "prometheus", "grafana")


def default_port(field: str) -> int:
    """The port of a ServerSettings address default (not the environment's override)."""
    address: str = ServerSettings.model_fields[field].default
    return int(address.rpartition(":")[2])


GRPC_PORT, METRICS_PORT = default_port("address"), default_port("metrics_address")
HTTP_PORT = default_port("http_address")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool from the repository root; its absence is a failure, not a skip."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: install Prometheus's tools (Debian/Ubuntu: "
                    "apt-get install prometheus)")
    return subprocess.run([path, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def assert_promtool_ok(*args: str) -> None:
    result = promtool(*args)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return loaded


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


# --- Prometheus ---------------------------------------------------------------------------------

@pytest.mark.external
def test_prometheus_config_is_valid() -> None:
    assert_promtool_ok("check", "config", str(PROMETHEUS_CONFIG.relative_to(REPO_ROOT)))


@pytest.mark.external
def test_alert_rules_are_valid() -> None:
    assert_promtool_ok("check", "rules", str(ALERTS_FILE.relative_to(REPO_ROOT)))


@pytest.mark.external
def test_alert_unit_tests_pass() -> None:
    assert_promtool_ok("test", "rules", str(ALERTS_TEST_FILE.relative_to(REPO_ROOT)))


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases = [case for test in load_yaml(ALERTS_TEST_FILE)["tests"]
             for case in test.get("alert_rule_test", [])]
    for name, _ in alert_rules():
        outcomes = {bool(case.get("exp_alerts")) for case in cases if case["alertname"] == name}
        assert outcomes == {True, False}, f"{name}: needs a case that fires and one that does not"


def test_alerts_have_duration_severity_and_text() -> None:
    rules = [rule for group in load_yaml(ALERTS_FILE)["groups"] for rule in group["rules"]]
    assert rules
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


@pytest.mark.external
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule for promtool."""
    rules = [{"record": f"axon_dashboard:query_{index}", "expr": substitute_variables(expr)}
             for index, (_, expr) in enumerate(dashboard_expressions())]
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert_promtool_ok("check", "rules", str(rule_file))


def test_prometheus_scrapes_every_axon_replica_on_the_metrics_port() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (discovery,) = jobs["axon"]["dns_sd_configs"]
    assert "axon" in compose()["services"]
    # Every address the service name resolves to: one target per replica.
    assert discovery["names"] == ["axon"] and discovery["type"] == "A"
    assert discovery["port"] == METRICS_PORT
    down = dict(alert_rules())["AxonTargetDown"]
    assert 'job="axon"' in down, "AxonTargetDown must watch the scrape job's name"


def test_prometheus_rule_files_exist() -> None:
    rule_files = load_yaml(PROMETHEUS_CONFIG)["rule_files"]
    assert rule_files
    for name in rule_files:
        assert not Path(name).is_absolute(), "relative, so promtool works outside the container"
        assert (PROMETHEUS_CONFIG.parent / name).is_file(), name


# --- compose ------------------------------------------------------------------------------------

def test_compose_has_the_stack() -> None:
    assert set(SERVICES) <= compose()["services"].keys()


def test_replicas_expose_the_default_ports_and_nginx_publishes_grpc() -> None:
    axon = service("axon")
    # No host ports on the replicated service, or `--scale axon=3` would collide.
    assert port_mappings(axon) == []
    assert {int(port) for port in axon["expose"]} == {GRPC_PORT, HTTP_PORT, METRICS_PORT}
    nginx = service("nginx")
    config = NGINX_CONFIG.read_text()
    listen = int(re.search(r"^\s*listen (\d+);", config, re.MULTILINE)[1])  # type: ignore[index]
    assert port_mappings(nginx) == [(GRPC_PORT, listen)]
    assert re.search(rf"^\s*server axon:{GRPC_PORT} ", config, re.MULTILINE)
    assert ("./deploy/nginx/nginx.conf", "/etc/nginx/nginx.conf") in [
        (m.split(":")[0], m.split(":")[1]) for m in nginx["volumes"]]
    assert nginx["depends_on"]["axon"]["condition"] == "service_healthy"
    # Long-lived gRPC connections are not ended every 1,000 calls (nginx's default), towards
    # callers or towards the replicas.
    assert [int(n) for n in re.findall(r"keepalive_requests (\d+);", config)] == [1000000] * 2
    # The proxy accepts every message the server does.
    body = re.search(r"client_max_body_size (\d+)m;", config)[1]  # type: ignore[index]
    assert int(body) * 1024 * 1024 == ServerSettings.model_fields["max_message_bytes"].default


def compose_value(value: object, environment: dict[str, str]) -> str:
    """``value`` with ``${NAME:-default}`` substituted as compose does."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: environment.get(m[1]) or m[2],
                  str(value))


def test_each_replica_runs_one_worker_per_cpu_it_is_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker keeps about one core busy: the replica's worker count follows its CPU limit
    (auto would count the host's CPUs), by default and when AXON_CPUS is set."""
    axon = service("axon")
    for environment in ({}, {"AXON_CPUS": "4"}):
        cpus = float(compose_value(axon["cpus"], environment))
        workers = compose_value(axon["environment"]["AXON_WORKERS"], environment)
        assert cpus >= 1 and int(workers) == cpus, environment
        monkeypatch.setenv("AXON_WORKERS", workers)
        assert load_settings().worker_count == cpus
    assert float(compose_value(axon["cpus"], {})) == 2


def nginx_check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` of ``text``, with "axon" (which resolves only on the compose network)
    pointed at loopback."""
    assert shutil.which("nginx"), "nginx is not installed (Debian: nginx; make test installs it)"
    config = tmp_path / "nginx.conf"
    config.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
                      + text.replace("server axon:", "server 127.0.0.1:"))
    return subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(config)],
                          capture_output=True, text=True, check=False)


def test_nginx_config_is_valid(tmp_path: Path) -> None:
    checked = nginx_check(tmp_path, for_installed_nginx(NGINX_CONFIG.read_text()))
    assert checked.returncode == 0, checked.stderr


def test_nginx_config_uses_the_current_http2_form() -> None:
    """``http2 on;`` (nginx >= 1.25.1, compose runs 1.27), not the deprecated ``listen ...
    http2``, which nginx 1.25.1 and later warn about at every start."""
    config = NGINX_CONFIG.read_text()
    assert re.findall(r"^\s*http2 on;$", config, re.MULTILINE) == ["        http2 on;"]
    assert not re.search(r"^\s*listen [^;]*\bhttp2\b", config, re.MULTILINE)
    image = service("nginx")["image"]
    version = tuple(int(part) for part in image.partition(":")[2].split("."))
    assert version >= HTTP2_DIRECTIVE_SINCE[:len(version)], f"{image} predates http2 on;"


def test_the_harness_writes_the_old_http2_form_only_for_old_nginx(tmp_path: Path) -> None:
    config = NGINX_CONFIG.read_text()
    legacy = legacy_http2_form(config)
    # The `http2 on;` line is gone, the listen line carries http2, the rest is untouched.
    assert not re.search(r"^\s*http2 on;", legacy, re.MULTILINE)
    assert re.findall(r"^\s*listen .*;$", legacy, re.MULTILINE) == ["        listen 8080 http2;"]
    assert legacy.splitlines() == [
        line.replace("listen 8080;", "listen 8080 http2;") for line in config.splitlines()
        if line != "        http2 on;"]
    assert legacy_http2_form(legacy) == legacy  # nothing left to translate
    installed = nginx_version()
    assert for_installed_nginx(config) == (
        config if installed >= HTTP2_DIRECTIVE_SINCE else legacy)
    if installed < HTTP2_DIRECTIVE_SINCE:
        # The translation is needed here, not cosmetic: this nginx refuses the shipped form.
        refused = nginx_check(tmp_path, config)
        assert refused.returncode != 0 and 'unknown directive "http2"' in refused.stderr


def test_mounted_folders_exist() -> None:
    for name in ("prometheus", "grafana"):
        mounts = bind_mounts(service(name))
        assert mounts, name
        for target, source in mounts.items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"


def test_named_volumes_are_declared() -> None:
    declared = (compose().get("volumes") or {}).keys()
    for name, body in compose()["services"].items():
        for source, _ in volume_entries(body):
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_prometheus_reads_the_config_in_the_repository() -> None:
    prometheus = service("prometheus")
    flags = [arg for arg in prometheus["command"] if arg.startswith("--config.file=")]
    assert len(flags) == 1
    config = host_path(bind_mounts(prometheus), flags[0].partition("=")[2])
    assert config == PROMETHEUS_CONFIG.resolve()


def test_grafana_provisioning_and_dashboards_are_mounted_where_grafana_looks() -> None:
    grafana = service("grafana")
    mounts = bind_mounts(grafana)
    provisioning = host_path(mounts, "/etc/grafana/provisioning")
    assert provisioning is not None
    assert provisioning / "datasources" / DATASOURCES_FILE.name == DATASOURCES_FILE.resolve()
    provider_paths = [provider["options"]["path"]
                      for provider in load_yaml(DASHBOARD_PROVIDER_FILE)["providers"]]
    assert provider_paths, "no dashboard provider"
    for path in provider_paths:
        assert host_path(mounts, path) == DASHBOARD_FILE.parent.resolve(), path
        assert path in mounts, f"{path} is not a mount target"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(mounts, home) == DASHBOARD_FILE.resolve()


# --- Grafana dashboard --------------------------------------------------------------------------

def test_panels_use_the_provisioned_datasource() -> None:
    sources = load_yaml(DATASOURCES_FILE)["datasources"]
    assert len(sources) == 1
    expected = {"type": "prometheus", "uid": sources[0]["uid"]}
    for variable in dashboard()["templating"]["list"]:
        assert variable["datasource"] == expected, variable["name"]
    for panel in dashboard_panels():
        if panel["type"] in LAYOUT_PANEL_TYPES:
            continue
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, (panel["title"], target["refId"])


def test_panel_ids_are_unique_and_fit_the_grid() -> None:
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_query_panels_have_described_targets() -> None:
    for panel in dashboard_panels():
        if panel["type"] in LAYOUT_PANEL_TYPES:
            continue
        assert panel.get("description"), panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        targets = panel.get("targets", [])
        assert targets, panel["title"]
        ref_ids = [target["refId"] for target in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(target.get("expr", "").strip() for target in targets), panel["title"]


def test_gpu_panels_say_why_they_are_empty() -> None:
    gpu_titles = {title for title, expr in dashboard_expressions() if is_gpu_expression(expr)}
    assert gpu_titles == GPU_PANEL_TITLES
    for panel in dashboard_panels():
        if panel["title"] in GPU_PANEL_TITLES:
            assert "no GPU" in panel["fieldConfig"]["defaults"]["noValue"], panel["title"]


# --- Dockerfile ---------------------------------------------------------------------------------

def test_the_axon_script_is_the_module_the_tests_launch() -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["axon"] == "axon.cli:main"
    launcher = inspect.signature(start_server).parameters["launcher"].default
    assert tuple(launcher[1:]) == ("-m", "axon.cli")


def test_serving_image_runs_axon_serve() -> None:
    final = dockerfile_stages()[-1]
    entrypoint, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    assert entrypoint is not None and exec_form(entrypoint) == ["axon"]
    assert cmd is not None and exec_form(cmd) == ["serve"]
    assert service("axon")["command"] == exec_form(cmd)
    build_parser(exec_form(cmd)).parse_args(exec_form(cmd))


def test_compose_builds_the_right_stages() -> None:
    stages = dockerfile_stages()
    names = {stage.name for stage in stages}
    axon_build, train_build = service("axon")["build"], service("train")["build"]
    # No target, or the last stage by name: `docker build .` and compose agree.
    assert isinstance(axon_build, str) or axon_build.get("target") in (None, stages[-1].name)
    assert train_build["target"] in names
    assert train_build["target"] != stages[-1].name
    build_parser(service("train")["command"]).parse_args(service("train")["command"])


def test_serving_image_exposes_the_default_ports_and_checks_health() -> None:
    final = dockerfile_stages()[-1]
    exposed = {int(port.split("/")[0]) for args in final.arguments("EXPOSE")
               for port in args.split()}
    assert {GRPC_PORT, HTTP_PORT, METRICS_PORT} <= exposed
    # `axon health` with no address follows the server's settings (port, TLS): it is run
    # against real servers in tests/integration/test_health_check.py.
    check = healthcheck(final)
    assert check.command[:2] == ["axon", "health"] and "--address" not in check.command
    build_parser(check.command[1:]).parse_args(check.command[1:])
    # Docker's timeout covers the check's own and a Python start.
    check_timeout = HealthCheckSettings.model_fields["timeout"].default
    assert float(check.options["timeout"].removesuffix("s")) >= check_timeout + 1


def test_serving_image_has_no_torch() -> None:
    stages = dockerfile_stages()
    by_name = {stage.name: stage for stage in stages if stage.name}
    chain, stage = [stages[-1]], stages[-1]
    while stage.base in by_name:  # FROM another stage inherits its packages
        stage = by_name[stage.base]
        chain.append(stage)
    for link in chain:
        for run in link.arguments("RUN"):
            assert "torch" not in run.lower() and "[train]" not in run, run
        for copy in link.arguments("COPY"):
            assert "--from=train" not in copy, copy


PROJECT_INSTALL = re.compile(r"pip install [^&]*?'\.\[([a-z,]+)\]'")


def project_extras(text: str) -> set[str]:
    """The extras named by ``pip install ... '.[a,b]'`` in ``text``."""
    return {extra for match in PROJECT_INSTALL.finditer(text) for extra in match[1].split(",")}


def test_every_install_brings_one_onnxruntime_build_and_the_pinned_torch() -> None:
    """onnxruntime is no base dependency (axon/extras.py): the images and the Makefile install
    the ``cpu`` extra, and the three places that install torch agree on its version."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert not [d for d in project["dependencies"] if d.startswith("onnxruntime")]
    assert {extras["cpu"][0].partition(">=")[2]} == {extras["gpu"][0].partition(">=")[2]}
    assert (extras["cpu"][0].partition(">=")[0], extras["gpu"][0].partition(">=")[0]) \
        == ("onnxruntime", "onnxruntime-gpu")
    stages = dockerfile_stages()
    train = next(stage for stage in stages if stage.name == "train")
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert project_extras(" ".join(stages[-1].arguments("RUN"))) == {"cpu"}
    assert project_extras(" ".join(train.arguments("RUN"))) == {"cpu", "train"}
    assert project_extras(makefile) == {"cpu", "dev"}
    (pin,) = [d for d in extras["train"] if d.startswith("torch")]
    version = pin.removeprefix("torch==")
    assert re.search(rf"^TORCH_VERSION := {re.escape(version)}$", makefile, re.MULTILINE)
    assert f"torch=={version} " in " ".join(train.arguments("RUN"))


def test_serving_image_reads_the_mounted_repository() -> None:
    repository = env_values(dockerfile_stages()[-1])["AXON_MODEL_REPOSITORY"]
    assert repository in {target for _, target in volume_entries(service("axon"))}


NODE_MODULES = "clients/node/node_modules"


def test_the_images_leave_out_the_node_clients_packages() -> None:
    """``make node-client`` fills clients/node/node_modules (tens of MB) in the checkout, and
    the images copy clients/: .dockerignore must keep it out, and keep what they copy in."""
    sources = [source.rstrip("/") for stage in dockerfile_stages()
               for source in copied_from_context(stage)]
    assert any(s == NODE_MODULES or NODE_MODULES.startswith(s + "/") for s in sources), \
        "no COPY takes clients/ any more: this test no longer guards anything"
    for path in (NODE_MODULES, f"{NODE_MODULES}/@grpc/grpc-js/package.json",
                 f"{NODE_MODULES}/.installed"):
        assert dockerignored(path), path
    for source in sources:
        assert not dockerignored(source), f"COPY {source}, but .dockerignore leaves it out"
    for kept in ("clients/node/classify.mjs", "clients/node/package.json",
                 "clients/samples/digit-0-test0003.png", "server/app.py"):
        assert not dockerignored(kept), kept


def test_the_dockerignore_reader_follows_dockers_rules(tmp_path: Path) -> None:
    rules = tmp_path / ".dockerignore"
    rules.write_text("# comment\n**/__pycache__\n*.egg-info\ndocs/*.tmp\n"
                     "logs\n!logs/keep.txt\n")
    assert dockerignored("server/sub/__pycache__/x.pyc", rules)
    assert dockerignored("__pycache__", rules)
    assert dockerignored("axon_serving.egg-info/PKG-INFO", rules)
    assert not dockerignored("sub/axon_serving.egg-info", rules)  # * stays at the root
    assert dockerignored("docs/a.tmp", rules) and not dockerignored("docs/sub/a.tmp", rules)
    assert dockerignored("logs/today.txt", rules) and not dockerignored("logs/keep.txt", rules)
    assert not dockerignored("comment", rules)
