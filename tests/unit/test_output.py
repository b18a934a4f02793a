"""Human output (output.py): the status table, plain unless coloured; plans coloured only when asked."""

from __future__ import annotations


def status_doc() -> dict:
    host = {
        "status": "converged",
        "last_run": 990.0,
        "last_success": 990.0,
        "duration_seconds": 0.2,
        "error": "",
        "drift": 0,
        "applied": [],
        "pending_actions": [],
        "failures": 0,
        "retry_in_seconds": None,
        "components": {"etcd": {"healthy": True, "detail": "HTTP 200"}},
        "units": {},
        "reconcile_id": "x",
    }
    failed = {
        **host,
        "status": "failed",
        "last_success": 400.0,
        "error": "master-3: cannot connect",
        "failures": 4,
        "retry_in_seconds": 3.5,
        "components": {"etcd": {"healthy": False, "detail": "unknown"}},
        "pending_actions": ["~ write /etc/etcd/etcd.conf: content differs"],
    }
    return {
        "ready": True,
        "spec": {"valid": True, "errors": [], "generation": 2},
        "summary": {"hosts": 2, "converged": 1, "queue_depth": 1, "in_flight": []},
        "hosts": {"master-1": host, "master-3": failed},
        "tuning": {
            "enabled": True,
            "effective": {"ETCD_HEARTBEAT_INTERVAL": 400, "ETCD_ELECTION_TIMEOUT": 4000},
            "overlay": {"decided_at": 700.0, "reason": "6 warnings", "cause": "CPU starvation or network"},
            "last_decision": {"outcome": "quiet", "reason": "0 warnings"},
        },
    }


def test_status_table_is_readable_and_plain_unless_coloured() -> None:
    from reconciler.output import Style, render_status, status_exit_code

    text = render_status(status_doc(), "http://127.0.0.1:9479", Style(False), now=1000.0)
    lines = text.splitlines()
    assert (
        lines[0]
        == "reconciler at http://127.0.0.1:9479: ready, specs valid (generation 2), 1/2 hosts converged, 1 queued"
    )
    header = next(i for i, line in enumerate(lines) if line.startswith("HOST"))
    assert lines[header + 1].split()[:4] == ["master-1", "converged", "10s", "ago"]
    assert "failed" in lines[header + 2] and "10m ago" in lines[header + 2] and "3.5s" in lines[header + 2]
    assert "0/1 healthy (etcd failing)" in lines[header + 2]
    assert "master-3: cannot connect" in text and "~ write /etc/etcd/etcd.conf" in text
    assert "etcd tuning: heartbeat 400 ms, election 4000 ms (raised 5m ago: 6 warnings" in text
    assert "\x1b[" not in text and status_exit_code(status_doc()) == 1
    coloured = render_status(status_doc(), "u", Style(True), now=1000.0)
    assert "\x1b[31m" in coloured and "\x1b[32m" in coloured


def test_plan_colours_only_when_asked() -> None:
    from reconciler.output import Style, colour_plan

    plan = "master-1: 1 change(s)\n  ~ write /etc/x: content differs\n      --- /etc/x\n      +++ /etc/x\n      @@ -1 +1 @@\n      -a\n      +b"
    assert colour_plan(plan, Style(False)) == plan
    coloured = colour_plan(plan, Style(True)).splitlines()
    assert (
        coloured[5].startswith("\x1b[31m") and coloured[6].startswith("\x1b[32m") and coloured[4].startswith("\x1b[36m")
    )


def test_status_says_the_etcd_snapshots_newest_and_failures() -> None:
    from reconciler.output import Style, render_status

    doc = status_doc()
    assert "etcd snapshots" not in render_status(doc, "u", Style(False), now=1000.0)  # no EtcdBackup
    last = {"taken_at": 880.0, "revision": 42, "size": 2_100_000, "member": "master-2"}
    doc["etcd_snapshots"] = {
        "enabled": True,
        "directory": "/var/lib/reconciler/etcd-snapshots",
        "interval_seconds": 300.0,
        "last": last,
        "failures": 0,
    }
    text = render_status(doc, "u", Style(False), now=1000.0)
    assert (
        "etcd snapshots: newest 2m ago (revision 42, 2.1 MB, from master-2), every 300 s in "
        "/var/lib/reconciler/etcd-snapshots" in text
    )
    doc["etcd_snapshots"].update(last=None, failures=3, error="master-2: etcdctl snapshot save failed")
    text = render_status(doc, "u", Style(False), now=1000.0)
    assert "etcd snapshots: none kept yet" in text
    assert "3 attempt(s) in a row kept nothing: master-2: etcdctl snapshot save failed" in text
