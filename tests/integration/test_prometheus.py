"""The real Prometheus (Debian's package) scraping the real server with the repo's config.

Every PromQL expression of the Grafana dashboard and of the alert rules is sent to Prometheus'
HTTP API while traffic flows: dashboard queries must return data (GPU queries: data exactly
where NVML exists), alert rules must evaluate without error, an alert must go pending when a
model fails to load, and none when a model is unloaded on purpose.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml

from axon.client.common import infer_request
from axon.client.server_process import ServerProcess, free_port, running_server
from axon.client.sync_client import AxonClient
from axon.protocol import open_inference_pb2 as oip
from axon.server.gpu import load_nvml
from tests.support.deploy_files import (
    ALERTS_FILE,
    GRAFANA_DIR,
    PROMETHEUS_CONFIG,
    alert_rules,
    dashboard_expressions,
    is_gpu_expression,
    substitute_variables,
)
from tests.support.http import json_infer, post_json
from tests.support.repositories import BROKEN, DIGITS, PETS

pytestmark = pytest.mark.external
PREVIEW = GRAFANA_DIR / "preview.py"
RATE_WINDOW = "15s"
"""What Grafana's ``$__rate_interval`` becomes here: several 1 s scrapes."""


@dataclass
class Prometheus:
    url: str

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}",
                                        timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:  # 400/422 carry the PromQL error as JSON
            body = json.loads(error.read())
        return body

    def query(self, expr: str) -> Any:
        return self.api("query", query=expr)


def prometheus_config(metrics_port: int) -> dict[str, Any]:
    """The repo's config with its scrape target pointed at the test server, scraping fast."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS_FILE)]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "axon"]
    # The compose service's DNS discovery becomes the test server's address (the discovery
    # itself is checked in test_deploy_files).
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    return config


@pytest.fixture(scope="module")
def axon(serving_repository: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("axon-for-prometheus") / "server.log"
    # Two worker processes: what Prometheus scrapes is the supervisor's merged page, with
    # per-worker series (the worker panels need them); one process's page is the same less
    # those, and tests/integration/test_metrics.py reads it.
    with running_server(serving_repository, log, "--models", f"{DIGITS},{PETS}",
                        "--workers", "2") as process:
        yield process


@pytest.fixture(scope="module")
def prometheus(axon: ServerProcess,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is not installed: apt-get install prometheus (make test does)"
    folder = tmp_path_factory.mktemp("prometheus")
    assert axon.metrics_port is not None
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(axon.metrics_port)))
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    server = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (folder / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "Prometheus did not become ready"
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


class Traffic:
    """Requests of every kind the dashboard shows, until stopped: good, bad, classify, over
    gRPC and over HTTP."""

    def __init__(self, address: str, http_address: str) -> None:
        self._client = AxonClient(address)
        self._http = http_address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._client.close()

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        while not self._stop.is_set():
            batch = rng.random((int(rng.integers(1, 9)), 784), dtype=np.float32)
            self._client.infer(DIGITS, batch)
            assert post_json(self._http, f"/v2/models/{DIGITS}/infer",
                             json_infer(batch)).status == 200
            if self.sent % 10 == 0:
                for bad in (infer_request("no-such-model", batch),
                            infer_request(DIGITS, batch[:, :10])):
                    # Refused (NOT_FOUND, INVALID_ARGUMENT): the error panels need them.
                    with contextlib.suppress(grpc.RpcError):
                        self._client.inference.ModelInfer(bad)
                post_json(self._http, "/v2/models/no-such-model/infer", json_infer(batch))
            self.sent += 1
            time.sleep(0.005)


def wait_for_samples(prometheus: Prometheus, expr: str, at_least: float,
                     timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = prometheus.query(expr)["data"]["result"]
        if result and float(result[0]["value"][1]) >= at_least:
            return
        time.sleep(0.5)
    pytest.fail(f"Prometheus never saw {expr} >= {at_least}")


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = [float(series["value"][1]) for series in result]
    return [value for value in values if math.isfinite(value)]


def test_prometheus_scrapes_the_server_and_every_query_answers(
        axon: ServerProcess, prometheus: Prometheus) -> None:
    with Traffic(axon.address, axon.http_address) as traffic:
        # Enough scrapes for every rate window to hold several samples with traffic in them.
        wait_for_samples(prometheus, 'count_over_time(up{job="axon"}[1m])', 6)
        wait_for_samples(prometheus, f'sum(increase(axon_requests_total[{RATE_WINDOW}]))', 10)
        (target,) = prometheus.api("targets")["data"]["activeTargets"]
        assert target["health"] == "up", target
        assert target["labels"]["job"] == "axon"

        has_gpu = load_nvml() is not None
        problems = []
        # With the model variable on All, and on one model (the common case in an incident).
        queries = [(title, substitute_variables(raw, rate_interval=RATE_WINDOW, model=".*"))
                   for title, raw in dashboard_expressions()]
        queries += [(f"{title} [model={DIGITS}]",
                     substitute_variables(raw, rate_interval=RATE_WINDOW, model=DIGITS))
                    for title, raw in dashboard_expressions() if "$model" in raw]
        # And on each protocol: both carry traffic.
        queries += [(f"{title} [protocol={protocol}]",
                     substitute_variables(raw, rate_interval=RATE_WINDOW, protocol=protocol))
                    for title, raw in dashboard_expressions() if "$protocol" in raw
                    for protocol in ("grpc", "http")]
        assert len(queries) > len(dashboard_expressions()) + 10
        for title, expr in queries:
            answer = prometheus.query(expr)
            if answer["status"] != "success":
                problems.append(f"{title}: {expr}: {answer.get('error')}")
                continue
            values = finite_values(answer["data"]["result"])
            if is_gpu_expression(expr) and not has_gpu:
                if answer["data"]["result"]:
                    problems.append(f"{title}: GPU series on a machine without NVML: {expr}")
            elif not values:
                problems.append(f"{title}: no data: {expr} -> {answer['data']['result']}")
        assert not problems, "\n".join(problems)
        assert traffic.sent > 0


def test_the_dashboard_preview_renders_from_the_live_prometheus(
        axon: ServerProcess, prometheus: Prometheus, tmp_path: Path) -> None:
    """deploy/grafana/preview.py (the picture in docs/deployment.md) runs every panel's range
    query."""
    wait_for_samples(prometheus, 'count_over_time(up{job="axon"}[1m])', 3)
    out = tmp_path / "preview.png"
    result = subprocess.run(
        [sys.executable, str(PREVIEW), "--prometheus", prometheus.url, "--minutes", "1",
         "--rate-interval", RATE_WINDOW, "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 50_000


def test_every_alert_rule_evaluates_cleanly(axon: ServerProcess,
                                            prometheus: Prometheus) -> None:
    rules = alert_rules()
    assert len(rules) >= 5
    for name, expr in rules:
        answer = prometheus.query(expr)
        assert answer["status"] == "success", f"{name}: {answer.get('error')}"
    wait_for_samples(prometheus, 'count_over_time(up{job="axon"}[1m])', 3)
    time.sleep(2)  # at least one evaluation of the loaded rule group
    groups = prometheus.api("rules")["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert {name for name, _ in rules} <= set(loaded)
    for name, _ in rules:
        assert loaded[name]["health"] == "ok", (name, loaded[name].get("lastError"))
    # The target-down rule's own expression, live: the server is up, so it selects nothing.
    (up,) = prometheus.query('up{job="axon"}')["data"]["result"]
    assert up["value"][1] == "1"
    assert prometheus.query(dict(rules)["AxonTargetDown"])["data"]["result"] == []
    assert loaded["AxonTargetDown"]["state"] == "inactive"


def test_a_failed_load_turns_the_not_ready_alert_pending(
        axon: ServerProcess, prometheus: Prometheus) -> None:
    with AxonClient(axon.address) as client:
        with pytest.raises(grpc.RpcError) as error:
            client.inference.RepositoryModelLoad(
                oip.RepositoryModelLoadRequest(model_name=BROKEN))
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    deadline = time.monotonic() + 30
    pending: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not pending:
        alerts = prometheus.api("alerts")["data"]["alerts"]
        pending = [a for a in alerts if a["labels"]["alertname"] == "AxonModelNotReady"]
        time.sleep(0.5)
    assert pending, "AxonModelNotReady never went pending after the failed load"
    assert {a["labels"]["model"] for a in pending} == {BROKEN}
    assert pending[0]["state"] in {"pending", "firing"}


def test_a_model_unloaded_on_purpose_raises_no_alert(axon: ServerProcess,
                                                    prometheus: Prometheus) -> None:
    with AxonClient(axon.address) as client:
        client.inference.RepositoryModelUnload(oip.RepositoryModelUnloadRequest(model_name=PETS))
        try:
            # Several scrapes and rule evaluations (1 s each) after the unload.
            wait_for_samples(prometheus, f'absent(axon_model_ready{{model="{PETS}"}})', 1)
            time.sleep(3)
            alerts = prometheus.api("alerts")["data"]["alerts"]
            assert not [a for a in alerts if a["labels"].get("model") == PETS]
            state = prometheus.query(f'axon_model_state{{model="{PETS}",state="UNAVAILABLE"}}')
            assert [r["value"][1] for r in state["data"]["result"]] == ["1"]
        finally:
            client.inference.RepositoryModelLoad(
                oip.RepositoryModelLoadRequest(model_name=PETS))
