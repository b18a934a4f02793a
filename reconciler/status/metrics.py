"""Every Prometheus metric the daemon exports, in one place, on a registry of its own (no globals).

The daemon records a finished pass with `record_pass`; the HTTP endpoint renders `exposition()`.
Names follow Prometheus conventions (base units, `_total` counters, `_seconds`, `_timestamp_seconds`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from reconciler.observe.snapshot import CertFact
from reconciler.outcome import HostOutcome

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        # `_created` series would double the families in the text format and carry nothing an operator reads
        # (prometheus_client's switch is process-wide; it is set before the first metric is made)
        disable_created_metrics()
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "reconciler_reconciles",
            "Reconcile passes by host and result (converged, unconverged, failed, rolled-back).",
            ["host", "result"],
            registry=r,
        )
        self.duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "Duration of one host's reconcile pass.",
            ["host"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.actions = Counter(
            "reconciler_actions_applied",
            "Actions applied, by host and kind (write, attrs, daemon-reload, enable, disable, start, stop, restart).",
            ["host", "kind"],
            registry=r,
        )
        self.drift = Gauge(
            "reconciler_drift_resources",
            "Actions the last pass found necessary on the host (0 = no drift).",
            ["host"],
            registry=r,
        )
        self.converged = Gauge(
            "reconciler_host_converged",
            "1 when the host's last pass ended with no drift and every health check passing.",
            ["host"],
            registry=r,
        )
        self.last_success = Gauge(
            "reconciler_last_success_timestamp_seconds",
            "Unix time of the host's last converged pass.",
            ["host"],
            registry=r,
        )
        self.queue_depth = Gauge("reconciler_queue_depth", "Hosts waiting in the work queue.", registry=r)
        self.retries = Counter(
            "reconciler_retries", "Passes re-queued with backoff after a failure.", ["host"], registry=r
        )
        self.backoff = Gauge(
            "reconciler_host_backoff_seconds",
            "Delay before the host's next retry (0 when not backing off).",
            ["host"],
            registry=r,
        )
        self.ssh_errors = Counter("reconciler_ssh_errors", "SSH connection or command failures.", ["host"], registry=r)
        self.spec_reloads = Counter(
            "reconciler_spec_reloads", "Spec directory reloads by result (success, error).", ["result"], registry=r
        )
        self.spec_valid = Gauge(
            "reconciler_spec_valid",
            "1 when the last spec load succeeded; 0 while the daemon runs on the last good specs.",
            registry=r,
        )
        self.rolled_back = Gauge(
            "reconciler_rolled_back",
            "1 while the host's last pass ended rolled back: a restart "
            "onto new config failed, the previous config was restored and is held until the "
            "specs change.",
            ["host"],
            registry=r,
        )
        self.rollbacks = Counter(
            "reconciler_rollbacks",
            "Rollbacks done: a unit restarted onto new config failed and was restarted on its previous config.",
            ["host", "unit"],
            registry=r,
        )
        self.leader = Gauge(
            "reconciler_leader",
            "1 while this replica leads (leader election on: `run --leader-election`), 0 while it follows.",
            ["replica"],
            registry=r,
        )
        self.leader_transitions = Counter(
            "reconciler_leader_transitions",
            "Times the leader this replica saw changed.",
            ["replica"],
            registry=r,
        )
        self.specs_agree = Gauge(
            "reconciler_specs_agree",
            "1 while this replica's specs are the ones the cluster agreed on (the leader's published digest).",
            ["replica"],
            registry=r,
        )
        self.vip_held = Gauge(
            "reconciler_vip_held",
            "1 when the host holds the VirtualIP (keepalived's VIP), 0 when it was seen without it. Exactly one "
            "holder per vip is healthy: alerts fire on none and on more than one.",
            ["vip", "host"],
            registry=r,
        )
        self._vips: dict[str, set[str]] = {}  # host -> the VirtualIPs it reported (to drop with the host)
        self.component_healthy = Gauge(
            "reconciler_component_healthy",
            "Health check result by host and component (HealthCheck name).",
            ["host", "component"],
            registry=r,
        )

        self.etcd_warnings = Counter(
            "reconciler_etcd_heartbeat_warnings",
            "etcd 'failed to send out heartbeat on "
            "time' warnings read from each member's journal; counted=false near restarts.",
            ["host", "counted"],
            registry=r,
        )
        self.etcd_heartbeat = Gauge(
            "reconciler_etcd_heartbeat_interval_seconds",
            "ETCD_HEARTBEAT_INTERVAL in the member's etcd.conf as last observed.",
            ["host"],
            registry=r,
        )
        self.etcd_election = Gauge(
            "reconciler_etcd_election_timeout_seconds",
            "ETCD_ELECTION_TIMEOUT in the member's etcd.conf as last observed.",
            ["host"],
            registry=r,
        )
        self.tuning_decisions = Counter(
            "reconciler_etcd_tuning_decisions",
            "Tuning decisions by outcome (raised, covered, cooldown, ceiling).",
            ["outcome"],
            registry=r,
        )
        self.tuning_cause = Gauge(
            "reconciler_etcd_tuning_suspected_cause",
            "1 for the suspected cause of the last raise (slow-disk, cpu-or-network).",
            ["cause"],
            registry=r,
        )
        self.etcd_fsync_p99 = Gauge(
            "reconciler_etcd_wal_fsync_p99_seconds",
            "WAL fsync p99 from the member's own /metrics (since it started), when reachable.",
            ["host"],
            registry=r,
        )

        self.snapshot_last_success = Gauge(
            "reconciler_etcd_snapshot_last_success_timestamp_seconds",
            "Unix time the newest kept, checked etcd snapshot was taken (kind: EtcdBackup).",
            registry=r,
        )
        self.snapshot_size = Gauge(
            "reconciler_etcd_snapshot_size_bytes", "Size of the newest kept etcd snapshot.", registry=r
        )
        self.snapshot_duration = Gauge(
            "reconciler_etcd_snapshot_duration_seconds",
            "How long the last kept etcd snapshot took: taken, streamed, checked.",
            registry=r,
        )
        self.snapshot_interval = Gauge(
            "reconciler_etcd_snapshot_interval_seconds",
            "The EtcdBackup schedule's interval (the alert compares the newest snapshot's age with it).",
            registry=r,
        )
        self.snapshot_failures = Counter(
            "reconciler_etcd_snapshot_failures",
            "Snapshot attempts that kept nothing (no member gave a whole, checked snapshot).",
            registry=r,
        )

        self.cert_renewals = Counter(
            "reconciler_certificate_renewals",
            "Certificate renewals the daemon made (kind: Certificate with renew), by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.cert_present = Gauge(
            "reconciler_certificate_present",
            "1 when a declared certificate exists on the host (kind: Certificate), 0 when it is missing.",
            ["host", "path"],
            registry=r,
        )
        self.cert_expiry = Gauge(
            "reconciler_certificate_expiry_timestamp_seconds",
            "Unix time a declared certificate expires (notAfter); days left = (this - time()) / 86400.",
            ["host", "path"],
            registry=r,
        )

    def record_certificates(self, host: str, certs: Mapping[str, CertFact]) -> None:
        for path, fact in certs.items():
            self.cert_present.labels(host, path).set(1 if fact.exists else 0)
            if fact.not_after is not None:
                self.cert_expiry.labels(host, path).set(fact.not_after)
            else:
                try:
                    self.cert_expiry.remove(host, path)
                except KeyError:
                    pass

    def etcd_warning(self, member: str, counted: bool) -> None:
        self.etcd_warnings.labels(member, "true" if counted else "false").inc()

    def tuning_decision(self, outcome: str) -> None:
        self.tuning_decisions.labels(outcome).inc()

    def etcd_fsync(self, member: str, seconds: float) -> None:
        self.etcd_fsync_p99.labels(member).set(seconds)

    def set_cause(self, cause: str) -> None:
        key = "slow-disk" if cause.startswith("slow disk") else "cpu-or-network"
        for name in ("slow-disk", "cpu-or-network"):
            self.tuning_cause.labels(name).set(1 if name == key else 0)

    def record_etcd_values(self, host: str, heartbeat_ms: int | None, election_ms: int | None) -> None:
        if heartbeat_ms is not None:
            self.etcd_heartbeat.labels(host).set(heartbeat_ms / 1000)
        if election_ms is not None:
            self.etcd_election.labels(host).set(election_ms / 1000)

    def record_pass(self, outcome: HostOutcome, seconds: float, ssh_error: bool) -> None:
        host = outcome.host
        self.reconciles.labels(host, outcome.status).inc()
        self.duration.labels(host).observe(seconds)
        for action in outcome.applied:
            self.actions.labels(host, action.kind.value).inc()
        if outcome.plan is not None:
            self.drift.labels(host).set(len(outcome.plan.actions))
        self.converged.labels(host).set(1 if outcome.status == "converged" else 0)
        self.rolled_back.labels(host).set(1 if outcome.status == "rolled-back" else 0)
        for unit in outcome.rollbacks:
            self.rollbacks.labels(host, unit).inc()
        if outcome.status == "converged":
            self.last_success.labels(host).set(time.time())
        if ssh_error:
            self.ssh_errors.labels(host).inc()

    def record_components(self, host: str, components: dict[str, bool]) -> None:
        for name, healthy in components.items():
            self.component_healthy.labels(host, name).set(1 if healthy else 0)

    def record_addresses(self, host: str, held: Mapping[str, bool]) -> None:
        """The host's VirtualIPs as last observed; a VIP it no longer reports (its pass failed: unknown) is dropped."""
        for vip in self._vips.get(host, set()) - set(held):
            self.vip_held.remove(vip, host)
        for vip, holds in held.items():
            self.vip_held.labels(vip, host).set(1 if holds else 0)
        self._vips[host] = set(held)

    def forget_host(self, host: str, components: list[str]) -> None:
        self.record_addresses(host, {})
        for metric in (self.drift, self.converged, self.last_success, self.backoff, self.rolled_back):
            try:
                metric.remove(host)
            except KeyError:
                pass
        for name in components:
            try:
                self.component_healthy.remove(host, name)
            except KeyError:
                pass

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
