"""A real Prometheus server on loopback scrapes the daemon running against the testbed.

Asserted through Prometheus's HTTP API: the target is up, every host reports converged, the alert rules
load and evaluate, and every query of the Grafana dashboard is valid PromQL with data behind it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed import Testbed
from tests.support.daemon import RunningDaemon, all_converged, wait_for
from tests.support.specs import REPO

pytestmark = pytest.mark.testbed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, workdir: Path, target: str):
        if shutil.which("prometheus") is None:
            pytest.fail("prometheus is missing: scripts/install-deps installs Debian's prometheus package")
        config = workdir / "prometheus.yml"
        shutil.copy(REPO / "deploy/prometheus/reconciler-rules.yml", workdir / "reconciler-rules.yml")
        shipped = (REPO / "deploy/prometheus/prometheus.yml").read_text()
        config.write_text(
            shipped.replace("127.0.0.1:9479", target)
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        )
        self.base = f"http://127.0.0.1:{free_port()}"
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.base.removeprefix('http://')}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            # 503 "Service Unavailable" (plain text) while the TSDB is still starting; errors from a ready
            # server (e.g. a bad query) are JSON and are returned for the caller to inspect.
            return json.loads(body) if body.startswith(b"{") else None
        except (urllib.error.URLError, ConnectionError):
            return None

    def ready(self) -> bool:
        """Prometheus answers /-/ready with 200 once its TSDB is open; until then the API returns 503."""
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus exited with {self.proc.returncode}; see {self.log.name}")
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=10) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def query(self, expr: str) -> list[dict[str, Any]] | None:
        answer = self.api("query", query=expr)
        return answer["data"]["result"] if answer and answer.get("status") == "success" else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        started.append(Prometheus(tmp_path, target))
        return started[-1]

    yield start
    for prom in started:
        prom.stop()


def test_prometheus_scrapes_the_daemon_and_sees_every_host_converged(
    converged: Testbed,
    spec_copy: Path,
    run_daemon: Callable[..., RunningDaemon],
    prometheus_for: Callable[[str], Prometheus],
) -> None:
    daemon = run_daemon(spec_copy)
    wait_for("convergence", lambda: all_converged(daemon), daemon=daemon)
    prom = prometheus_for(daemon.base.removeprefix("http://"))
    wait_for("prometheus to be ready", prom.ready, timeout=60)

    up = wait_for("the target to be up", lambda: prom.query('up{job="reconciler"} == 1'), timeout=60)
    assert len(up) == 1
    hosts = wait_for(
        "every host converged in Prometheus",
        lambda: (r := prom.query("reconciler_host_converged == 1")) and len(r) == 3 and r,
        timeout=60,
    )
    assert sorted(s["metric"]["host"] for s in hosts) == [h.name for h in converged.hosts]

    groups = wait_for(
        "the alert rules to be evaluated",
        lambda: (
            (a := prom.api("rules"))
            and all(r.get("lastEvaluation", "").startswith("20") for g in a["data"]["groups"] for r in g["rules"])
            and a
        ),
        timeout=60,
    )
    rules = [r for g in groups["data"]["groups"] for r in g["rules"]]
    shipped = yaml.safe_load((REPO / "deploy/prometheus/reconciler-rules.yml").read_text())
    names = [r["alert"] for g in shipped["groups"] for r in g["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(names) and all(r["health"] == "ok" for r in rules), rules
    firing = [r["name"] for r in rules if r["state"] != "inactive"]
    assert firing == [], firing  # a healthy, converged fleet raises nothing

    dashboard = json.loads((REPO / "deploy/grafana/reconciler-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            answer = prom.api("query", query=target["expr"])
            assert answer and answer["status"] == "success", (panel["title"], target["expr"], answer)
    for expr in (
        "reconciler_host_converged",
        "reconciler_component_healthy",
        "reconciler_etcd_heartbeat_interval_seconds",
        "reconciler_reconcile_duration_seconds_bucket",
    ):
        assert prom.query(expr), expr  # the dashboard's main panels have data
