"""The daemon's snapshot schedule (backup.schedule) on in-memory hosts: nothing without an EtcdBackup or while
another replica leads; the first snapshot at once, the next when the newest is an interval old; a failed attempt
counted, said in /status and retried with backoff, never later than the interval; old ones pruned."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from reconciler.backup import store
from reconciler.backup.schedule import IDLE_S, Snapshots
from reconciler.spec.isolate import load_desired
from reconciler.status.metrics import Metrics
from reconciler.transport.fake import SimHost, fake_connector

IDS = {"master-1": 11, "master-2": 12, "master-3": 13}


def fleet() -> dict[str, SimHost]:
    hosts = {n: SimHost(n) for n in IDS}
    db = os.urandom(4096 * 4)
    data = db + hashlib.sha256(db).digest()
    for name, h in hosts.items():
        h.etcd_status = {"header": {"member_id": IDS[name]}, "leader": 11}
        h.etcd_snapshot = (data, {"revision": 7, "totalKey": 3, "totalSize": len(db)})
    return hosts


def with_backup(specs: Path, directory: Path, keep: int = 2) -> Path:
    (specs / "backup.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: EtcdBackup\nmetadata: {name: etcd}\n"
        f"spec: {{encryption: {{unencrypted: true}}, intervalSeconds: 300, keep: {keep}, directory: {directory}}}\n"
    )
    return specs


def sample(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def test_nothing_without_an_etcd_backup_document(specs: Path) -> None:
    snapshots = Snapshots(Metrics(), fake_connector(fleet()), leading=None)
    assert await snapshots.step(load_desired(specs)) == IDLE_S
    assert snapshots.status() == {"enabled": False}


async def test_taken_at_once_then_when_an_interval_old_and_pruned(specs: Path, tmp_path: Path) -> None:
    where = tmp_path / "snaps"
    desired = load_desired(with_backup(specs, where))
    metrics = Metrics()
    snapshots = Snapshots(metrics, fake_connector(fleet()), leading=None)
    base = time.time()
    await snapshots.step(desired, base)
    first = store.listed(where)
    assert snapshots.status()["next_at"] == first[0].taken_at + 300  # said at once, before the next look
    assert len(first) == 1 and first[0].member == "master-2"
    assert sample(metrics, "reconciler_etcd_snapshot_last_success_timestamp_seconds") == first[0].taken_at
    assert sample(metrics, "reconciler_etcd_snapshot_interval_seconds") == 300
    taken = first[0].taken_at
    assert await snapshots.step(desired, taken + 100) == IDLE_S and len(store.listed(where)) == 1  # not due yet
    status = snapshots.status()
    assert status["enabled"] and status["last"]["revision"] == 7 and status["next_at"] == taken + 300
    for k in (1, 2, 3):  # each an interval after the newest: due, taken; keep 2
        await snapshots.step(desired, base + 301 * k)
    kept = store.listed(where)
    assert len(kept) == 2 and first[0].path not in {k.path for k in kept}
    assert kept[0].taken_at > kept[1].taken_at > taken


async def test_a_failure_is_counted_said_and_retried_with_backoff(specs: Path, tmp_path: Path) -> None:
    where = tmp_path / "snaps"
    desired = load_desired(with_backup(specs, where))
    hosts = fleet()
    for h in hosts.values():
        h.etcd_snapshot = None  # etcdctl fails everywhere
    metrics = Metrics()
    snapshots = Snapshots(metrics, fake_connector(hosts), leading=None)
    await snapshots.step(desired)
    assert snapshots.failures == 1 and "master-2: " in snapshots.status()["error"] and not store.listed(where)
    assert sample(metrics, "reconciler_etcd_snapshot_failures_total") == 1
    await snapshots.step(desired)  # within the backoff: not tried again
    assert snapshots.failures == 1 and sample(metrics, "reconciler_etcd_snapshot_failures_total") == 1


async def test_a_replica_that_does_not_lead_takes_none(specs: Path, tmp_path: Path) -> None:
    where = tmp_path / "snaps"
    desired = load_desired(with_backup(specs, where))

    async def follower() -> bool:
        return False

    snapshots = Snapshots(Metrics(), fake_connector(fleet()), leading=follower)
    assert await snapshots.step(desired) == IDLE_S and not store.listed(where)


async def test_a_failed_attempt_is_tried_again_within_the_interval_however_long_the_backoff(
    specs: Path, tmp_path: Path
) -> None:
    where = tmp_path / "snaps"
    (specs / "backup.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: EtcdBackup\nmetadata: {name: etcd}\n"
        f"spec: {{encryption: {{unencrypted: true}}, intervalSeconds: 60, directory: {where}}}\n"
    )
    desired = load_desired(specs)
    hosts = fleet()
    saved = {n: h.etcd_snapshot for n, h in hosts.items()}
    for h in hosts.values():
        h.etcd_snapshot = None
    snapshots = Snapshots(Metrics(), fake_connector(hosts), leading=None)
    for _ in range(6):  # six failures in a row: the backoff alone would be minutes
        await snapshots.step(desired, (snapshots.next_at or time.time()) + 0.01)
    assert snapshots.failures == 6 and snapshots.next_at is not None and snapshots.next_at <= time.time() + 60
    for name, h in hosts.items():
        h.etcd_snapshot = saved[name]
    await snapshots.step(desired, snapshots.next_at + 0.01)
    assert snapshots.failures == 0 and len(store.listed(where)) == 1
