"""What /status shows: each host's last pass, in a JSON-ready shape with no secret content.

`HostRecord.update` keeps the summary of a finished pass (headlines of actions, never file contents or
diffs); `status_document` assembles the whole report. Kept by `status.ledger`, read by HTTP.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from reconciler.observe.snapshot import CertFact, HostSnapshot
from reconciler.outcome import HostOutcome
from reconciler.spec.desired import DesiredHost


@dataclass
class HostRecord:
    status: str = "pending"  # pending (no pass yet) | converged | unconverged | failed
    last_run: float | None = None
    last_success: float | None = None
    duration_seconds: float | None = None
    phase_seconds: dict[str, float] = field(default_factory=dict)  # observe, apply, restart, verify
    spec_generation: int = 0  # the specs the last pass worked from (/status "spec.generation")
    error: str = ""
    drift: int = 0  # actions the pass found necessary
    applied: list[str] = field(default_factory=list)
    pending_actions: list[str] = field(default_factory=list)
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    certificates: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> state, days_left, ...
    addresses: dict[str, bool] = field(default_factory=dict)  # VirtualIP name -> held by this host (last seen)
    failures: int = 0
    retry_in_seconds: float | None = None
    reconcile_id: str = ""

    def update(
        self, outcome: HostOutcome, *, finished: float, seconds: float, reconcile_id: str, generation: int
    ) -> None:
        self.status, self.error, self.reconcile_id = outcome.status, outcome.error, reconcile_id
        self.last_run, self.duration_seconds = finished, round(seconds, 3)
        self.phase_seconds = {phase: round(s, 4) for phase, s in outcome.seconds.items()}
        self.spec_generation = generation
        if outcome.status == "converged":
            self.last_success = finished
        self.drift = len(outcome.plan.actions) if outcome.plan else 0
        self.applied = [a.headline() for a in outcome.applied]
        left = outcome.remaining if outcome.remaining is not None else outcome.plan
        done = set(outcome.applied)
        self.pending_actions = [a.headline() for a in (left.actions if left else ()) if a not in done]
        if outcome.status == "failed":  # nothing was verified: do not keep claiming health
            self.components = {
                name: {"healthy": False, "detail": "unknown: the last pass failed"} for name in self.components
            }
            self.addresses = {}
        elif outcome.snapshot is not None:
            self.units = {u.name: f"{u.active_state}/{u.sub_state}" for u in outcome.snapshot.units.values()}
            self.components = {c.name: {"healthy": c.ok, "detail": c.detail} for c in outcome.snapshot.checks}
            if outcome.snapshot.addresses or outcome.snapshot.checks:  # observed with its checks: addresses too
                self.addresses = dict(outcome.snapshot.addresses)


def certificate_entry(fact: CertFact, warn_days: float, now: float, source: str = "") -> dict[str, Any]:
    """One certificate as every view shows it (/status, `reconciler status`, `check` and `apply`, via
    `output.certificate_text`): state (`CertFact.state`: ok, expiring, expired, missing, unreadable), days left,
    end date, subject. Days left are cut (not rounded) to 0.1 day, so the whole days shown never round up
    past `warnDays`: 29.96 days left is `expiring` and shows 29 days, never 30."""
    days = fact.days_left(now)
    return {
        "state": fact.state(now, warn_days),
        "days_left": None if days is None else math.floor(days * 10) / 10,
        "not_after": fact.not_after,
        "subject": fact.subject,
        "error": fact.error,
        "warn_days": warn_days,
        "source": source,
    }


def certificate_report(host: DesiredHost, snapshot: HostSnapshot | None, now: float) -> dict[str, dict[str, Any]]:
    """Per declared certificate that was observed, in the spec's order: `certificate_entry`."""
    if snapshot is None or not snapshot.certificates:
        return {}
    report: dict[str, dict[str, Any]] = {}
    for cert in host.certificates:
        fact = snapshot.certificates.get(cert.path)
        if fact is None:
            continue
        report[cert.path] = certificate_entry(fact, cert.warn_days, now, cert.source)
    return report


def status_document(
    *, ready: bool, spec: dict[str, Any], hosts: dict[str, HostRecord], queue_depth: int, in_flight: list[str]
) -> dict[str, Any]:
    converged = sum(1 for r in hosts.values() if r.status == "converged")
    return {
        "ready": ready,
        "spec": spec,
        "summary": {
            "hosts": len(hosts),
            "converged": converged,
            "queue_depth": queue_depth,
            "in_flight": sorted(in_flight),
        },
        "hosts": {name: asdict(record) for name, record in sorted(hosts.items())},
        "virtual_ips": virtual_ips(hosts),
    }


def virtual_ips(hosts: dict[str, HostRecord]) -> dict[str, dict[str, list[str]]]:
    """Each VirtualIP: the hosts that hold it and those last seen without it (a host whose pass failed is in
    neither: unknown). Exactly one holder is the healthy state."""
    out: dict[str, dict[str, list[str]]] = {}
    for name, record in sorted(hosts.items()):
        for vip, held in sorted(record.addresses.items()):
            entry = out.setdefault(vip, {"holders": [], "not_holding": []})
            entry["holders" if held else "not_holding"].append(name)
    return out
