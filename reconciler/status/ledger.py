"""The daemon's bookkeeping: what it knows about the specs and each host, for /status, /metrics and systemd.

The daemon hands it values (a spec load's result, a finished pass's HostOutcome, a backoff decision) and it
keeps the records (`HostRecord`, `SpecState`) and the metrics in step; it calls nothing back. Read by the
HTTP routes (`status.routes`: `status_document`) and the watchdog line (`summary`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from reconciler.components.etcd import ELECTION_KEY, HEARTBEAT_KEY
from reconciler.components.systemd import Setting, parse_environment_file
from reconciler.outcome import HostOutcome
from reconciler.spec.desired import DesiredState
from reconciler.status.metrics import Metrics
from reconciler.status.report import HostRecord, certificate_report, status_document


@dataclass
class SpecState:
    """The specs in force: /status "spec"."""

    dir: str
    valid: bool = False
    errors: list[str] = field(default_factory=list)
    loaded_at: float | None = None
    generation: int = 0  # good loads so far; each host's record names the one its last pass used
    last_attempt_at: float | None = None


class Ledger:
    def __init__(self, spec_dir: str, metrics: Metrics):
        self.metrics = metrics
        self.spec = SpecState(spec_dir)
        self.records: dict[str, HostRecord] = {}

    # -- specs ---------------------------------------------------------------------------------
    def spec_attempted(self) -> None:
        self.spec.last_attempt_at = time.time()

    def spec_refused(self, errors: list[str]) -> None:
        self.spec.valid, self.spec.errors = False, errors
        self.metrics.spec_reloads.labels("error").inc()
        self.metrics.spec_valid.set(0)

    def spec_loaded(self, hosts: Iterable[str], removed: Iterable[str]) -> None:
        """A good load: a record for every host, none for the hosts that left (their metrics go too)."""
        for name in removed:
            record = self.records.pop(name, None)
            self.metrics.forget_host(name, list(record.components) if record else [])
        for name in hosts:
            self.records.setdefault(name, HostRecord())
        self.spec.valid, self.spec.errors, self.spec.loaded_at = True, [], time.time()
        self.spec.generation += 1
        self.metrics.spec_reloads.labels("success").inc()
        self.metrics.spec_valid.set(1)

    # -- passes --------------------------------------------------------------------------------
    def pass_done(
        self, desired: DesiredState, outcome: HostOutcome, *, seconds: float, reconcile_id: str, generation: int
    ) -> HostRecord:
        host = outcome.host
        record = self.records.setdefault(host, HostRecord())
        record.update(outcome, finished=time.time(), seconds=seconds, reconcile_id=reconcile_id, generation=generation)
        self.metrics.record_pass(outcome, seconds, outcome.ssh_error)
        self.metrics.record_components(host, {n: bool(c["healthy"]) for n, c in record.components.items()})
        self.metrics.record_addresses(host, record.addresses)
        snapshot = outcome.snapshot
        if snapshot is not None and snapshot.certificates:
            record.certificates = certificate_report(desired.hosts[host], snapshot, time.time())
            self.metrics.record_certificates(host, snapshot.certificates)
        tuning = desired.tuning
        fact = snapshot.files.get(tuning.path) if tuning and snapshot else None
        if fact is not None and fact.complete:  # the etcd timings the member's file holds now
            env = parse_environment_file(fact.content.decode(errors="replace"))
            self.metrics.record_etcd_values(host, _number(env.get(HEARTBEAT_KEY)), _number(env.get(ELECTION_KEY)))
        return record

    def converged(self, host: str) -> None:
        record = self.records.setdefault(host, HostRecord())
        record.failures, record.retry_in_seconds = 0, None
        self.metrics.backoff.labels(host).set(0)

    def backing_off(self, host: str, failures: int, delay: float) -> None:
        self.metrics.retries.labels(host).inc()
        self.metrics.backoff.labels(host).set(delay)
        record = self.records.setdefault(host, HostRecord())
        record.failures, record.retry_in_seconds = failures, round(delay, 3)

    # -- views ---------------------------------------------------------------------------------
    def rollout_of(self, host: str) -> str:
        """A host's word on a rollout from its last pass: applied (converged), why not (its error), or pending."""
        record = self.records.get(host)
        if record is not None and record.status == "converged":
            return "applied"
        return (record.error if record is not None else "") or "pending"

    def status_document(
        self, *, ready: bool, queue_depth: int, in_flight: list[str], retry_in: Mapping[str, float | None]
    ) -> dict[str, Any]:
        """/status; `retry_in`: the hosts backing off, and when their next pass is due."""
        for host, record in self.records.items():
            due = retry_in.get(host)
            record.retry_in_seconds = round(due, 3) if due is not None else None
        return status_document(
            ready=ready, spec=asdict(self.spec), hosts=self.records, queue_depth=queue_depth, in_flight=in_flight
        )

    def summary(self, queue_depth: int) -> str:
        """One line for systemd's STATUS=."""
        converged = sum(1 for r in self.records.values() if r.status == "converged")
        spec = "" if self.spec.valid else ", spec INVALID (running on last good)"
        return f"{converged}/{len(self.records)} hosts converged, {queue_depth} queued{spec}"


def _number(setting: Setting | None) -> int | None:
    try:
        return int(setting.value) if setting is not None else None
    except ValueError:
        return None
