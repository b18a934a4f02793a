"""A certificate's state is the same in `reconciler check`/`apply` and in /status (and `reconciler status`).

The CLI used to print only `30 days left` for a certificate /status called `expiring` (days rounded, no
warnDays): one state, one count of days and one wording everywhere now (`status.report.certificate_entry`,
`output.certificate_text`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli
from reconciler.engine import converge as converge_module
from reconciler.observe.snapshot import CertFact, HostSnapshot
from reconciler.outcome import HostOutcome, RunResult
from reconciler.output import Style, render_status
from reconciler.spec.desired import DesiredCert, DesiredHost, DesiredState, Target
from reconciler.status.report import HostRecord, certificate_report, status_document

DAY = 86400.0
EXPIRING, OK, MISSING = "/etc/kubernetes/ssl/expiring.pem", "/etc/kubernetes/ssl/ok.pem", "/etc/kubernetes/ssl/gone.pem"


def _host() -> DesiredHost:
    return DesiredHost(
        Target("master-1", "192.0.2.11"),
        certificates=tuple(DesiredCert(p, 30.0, "Certificate/kubernetes-ssl") for p in (EXPIRING, OK, MISSING)),
    )


def _snapshot(now: float) -> HostSnapshot:
    # 29.7 days: under warnDays 30, but "30 days left" once rounded to whole days
    return HostSnapshot(
        "master-1",
        certificates={
            EXPIRING: CertFact(EXPIRING, True, now + 29.7 * DAY, "CN=kube-apiserver"),
            OK: CertFact(OK, True, now + 365.2 * DAY, "CN=kubernetes-ca"),
            MISSING: CertFact(MISSING, exists=False),
        },
    )


def _check_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, snapshot: HostSnapshot
) -> str:
    """What `reconciler check` prints for a host observed as `snapshot` (no SSH, no spec files read)."""
    desired = DesiredState({"master-1": _host()})

    async def observed(desired_: DesiredState, session: Any, only: Any = None) -> RunResult:
        return RunResult({"master-1": HostOutcome("master-1", "converged", snapshot=snapshot)})

    monkeypatch.setattr(cli, "_load", lambda spec_dir, state_dir: (desired, ""))
    monkeypatch.setattr(converge_module, "observe_status", observed)  # `check` imports it when it runs
    assert cli.main(["check", str(tmp_path), "--state-dir", str(tmp_path)]) == 0
    return capsys.readouterr().out


def _cert_line(text: str, path: str) -> str:
    return next(line for line in text.splitlines() if path in line)


def test_a_certificate_under_warn_days_is_expiring_in_check_and_in_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    now = time.time()
    snapshot = _snapshot(now)
    out = _check_output(monkeypatch, capsys, tmp_path, snapshot)

    # `reconciler check` names the state, with the days and the threshold
    line = _cert_line(out, EXPIRING)
    assert re.search(
        rf"cert  {re.escape(EXPIRING)}\s+expiring: 29 days left \(warnDays 30\)  \(CN=kube-apiserver\)$", line
    ), out
    assert "30 days" not in out
    assert re.search(r"ok: 365 days left \(warnDays 30\)", _cert_line(out, OK)), out
    assert _cert_line(out, MISSING).rstrip().endswith("missing"), out

    # /status, as the daemon reports it, and `reconciler status` rendering that document: the same state,
    # the same days, the same words
    report = certificate_report(_host(), snapshot, now)
    assert (
        report[EXPIRING]["state"] == "expiring"
        and report[OK]["state"] == "ok"
        and report[MISSING]["state"] == "missing"
    )
    assert int(report[EXPIRING]["days_left"]) == 29 and int(report[OK]["days_left"]) == 365
    doc = status_document(
        ready=True,
        spec={"generation": 1, "valid": True, "errors": []},
        hosts={"master-1": HostRecord(status="converged", certificates=report)},
        queue_depth=0,
        in_flight=[],
    )
    table = render_status(doc, "test", Style(False), now=now)
    assert "expiring: 29 days left (warnDays 30)" in _cert_line(table, EXPIRING)
    assert "1 expiring, 1 missing, 1 ok" in table
    for path in (EXPIRING, MISSING):  # the words of `reconciler status`'s attention list are the CLI's words
        shown = _cert_line(table, path).split(path, 1)[1].strip()
        assert shown in _cert_line(out, path), (shown, out)


@pytest.mark.parametrize(
    ("fact_days", "exists", "error", "text"),
    [
        (365.2, True, "", "ok: 365 days left (warnDays 30)"),
        (30.0, True, "", "ok: 30 days left (warnDays 30)"),
        (29.99, True, "", "expiring: 29 days left (warnDays 30)"),
        (1.5, True, "", "expiring: 1 day left (warnDays 30)"),
        (0.4, True, "", "expiring: less than a day left (warnDays 30)"),
        (-3.2, True, "", "expired: 3 days ago"),
        (None, False, "", "missing"),
        (None, True, "not a readable PEM certificate", "unreadable: not a readable PEM certificate"),
    ],
)
def test_each_state_is_worded_once(fact_days: float | None, exists: bool, error: str, text: str) -> None:
    from reconciler.output import certificate_text
    from reconciler.status.report import certificate_entry

    now = 2_000_000_000.0
    fact = CertFact("/c.pem", exists, None if fact_days is None else now + fact_days * DAY, error=error)
    entry = certificate_entry(fact, 30.0, now)
    assert entry["state"] == fact.state(now, 30.0) and text.startswith(entry["state"])
    assert certificate_text(entry) == text
