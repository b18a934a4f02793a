"""deploy/prometheus and deploy/grafana: promtool checks the config and rules and runs the rule tests;
every metric the rules and the dashboard use is one the daemon documents (and exports)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy/prometheus"
DASHBOARD = REPO / "deploy/grafana/reconciler-dashboard.json"


def documented_families() -> set[str]:
    reference = (REPO / "docs/daemon.md").read_text()  # its Metrics table
    return {re.sub(r"_total$", "", m) for m in re.findall(r"^\| `(reconciler_[a-z0-9_]+)`", reference, re.M)}


def families_used(text: str) -> set[str]:
    return {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in re.findall(r"reconciler_[a-z0-9_]+", text)}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: scripts/install-deps installs Debian's prometheus package")
    return subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "reconciler-rules.yml"),
        ("test", "rules", "reconciler-rules.test.yml"),
    ],
)
def test_promtool_accepts_config_rules_and_rule_tests(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_rule_tests_cover_every_alert() -> None:
    alerts = set(re.findall(r"^\s+- alert: (\w+)", (PROM / "reconciler-rules.yml").read_text(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", (PROM / "reconciler-rules.test.yml").read_text()))
    assert alerts and alerts == tested


def test_rules_and_dashboard_use_only_documented_metrics() -> None:
    documented = documented_families()
    rules = families_used((PROM / "reconciler-rules.yml").read_text())
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = families_used("\n".join(exprs))
    assert rules <= documented, rules - documented
    assert used <= documented, used - documented
    assert {
        "reconciler_host_converged",
        "reconciler_reconcile_duration_seconds",
        "reconciler_retries",
        "reconciler_component_healthy",
        "reconciler_etcd_heartbeat_interval_seconds",
    } <= used
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
