"""`--json`: one versioned document per command on stdout (issue 28, item 6), built from real passes over
in-process hosts (reconciler.transport.fake) and from the CLI as an operator pipes it."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.documents import API_VERSION, run_document
from reconciler.engine.converge import converge, plan_all
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.cli import reconciler
from tests.support.silent import closed_port, unanswered_specs

SECRET_FILE = "/etc/kubernetes/token.csv"


async def test_plan_and_apply_documents_say_what_is_planned_applied_and_observed(specs: Path) -> None:
    desired = load_desired(specs)
    hosts = {name: SimHost(name) for name in desired.hosts}
    session = Session(fake_connector(hosts))
    planned = run_document("plan", await plan_all(desired, session), desired, 2, "specs", "")
    assert planned["apiVersion"] == API_VERSION == "reconciler/v1" and planned["kind"] == "PlanResult"
    assert planned["exitCode"] == 2 and planned["errors"] == [] and sorted(planned["hosts"]) == sorted(desired.hosts)
    actions = planned["hosts"]["master-1"]["planned"]
    writes = {a["target"]: a for a in actions if a["kind"] == "write"}
    assert "+ETCD_NAME=master-1" in writes["/etc/etcd/etcd.conf"]["diff"]  # a plan's document has the diffs
    token = desired.hosts["master-1"].files[SECRET_FILE].content.decode()
    assert token.split(",")[0] not in json.dumps(planned)  # a sensitive file only by its size, as on a terminal
    assert {"kind": "start", "target": "etcd.service", "reason": "is not installed"} in actions

    result = await converge(desired, session, wait=1.0, interval=0.01)
    applied = run_document("apply", result, desired, 0, "specs", "")
    one = applied["hosts"]["master-1"]
    assert applied["kind"] == "ApplyResult" and one["status"] == "converged" and one["error"] is None
    assert {a["target"] for a in one["applied"] if a["kind"] == "write"} >= {"/etc/etcd/etcd.conf", SECRET_FILE}
    assert "diff" not in json.dumps(one["applied"]) and one["remaining"] == []
    assert one["units"]["etcd.service"]["active"] == "active" and all(c["ok"] for c in one["checks"])
    json.dumps(applied)  # every value is JSON


def test_the_cli_prints_the_document_alone_on_stdout(specs: Path, tmp_path: Path) -> None:
    valid = reconciler("validate", str(specs), "--json")
    doc = json.loads(valid.out)
    assert (
        valid.code == 0
        and doc["kind"] == "ValidateResult"
        and sorted(doc["hosts"]) == ["master-1", "master-2", "master-3"]
    )
    (specs / "bad.yaml").write_text("apiVersion: reconciler/v1\nkind: File\nmetadata: {name: x}\nspec: {mode: 644}\n")
    invalid = reconciler("plan", str(specs), "--json")
    doc = json.loads(invalid.out)
    assert invalid.code == 1 and doc["exitCode"] == 1 and doc["kind"] == "PlanResult"
    assert doc["errors"] and all(e.startswith("specs/bad.yaml:4: spec.") for e in doc["errors"]), doc["errors"]
    down = unanswered_specs(tmp_path / "down", {"master-1": closed_port()})
    failed = reconciler("check", str(down), "--json", "--connect-attempts", "1")
    doc = json.loads(failed.out)  # progress and logs went to stderr
    assert failed.code == 1 and doc["kind"] == "CheckResult" and doc["hosts"]["master-1"]["status"] == "failed"
