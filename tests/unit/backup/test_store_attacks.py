"""The snapshot directory and a hostile member, attacked (a review's findings, each kept as a test): a record that
lies (a time that is not a number, NaN, a year ahead, a revision that is a bool or 3000 digits, too large), a
directory or a link where a snapshot or record should be: none is listed, none crashes listing or pruning; a
schedule whose newest snapshot is stamped ahead of the clock still takes the next one; a member that says a
3000-digit revision keeps nothing and leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from reconciler.backup import store
from reconciler.backup.schedule import Snapshots
from reconciler.backup.take import SnapshotFailed, take
from reconciler.spec.isolate import load_desired
from reconciler.status.metrics import Metrics
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session

GOOD = {"member": "master-1", "revision": 5, "keys": 1, "size": 64, "sha256": "ab", "taken_at": 1000.0, "seconds": 0.1}


def put(directory: Path, name: str, record: object, raw: bytes | None = None) -> Path:
    path = directory / name
    path.write_bytes(b"x" * 64)
    Path(f"{path}.json").write_bytes(raw if raw is not None else json.dumps(record).encode())
    return path


@pytest.mark.parametrize(
    "lie",
    [
        {"taken_at": "x"},
        {"taken_at": float("nan")},
        {"taken_at": time.time() + 365 * 86400},
        {"revision": True},
        {"revision": 10**3000},
        {"revision": -1},
        {"keys": 1.5},
        {"member": None},
        {"cluster": "master-1=https://10.0.0.1:2380"},
        {"cluster": ["m=https://10.0.0.1:2380"] * 17},
        {"cluster": [7]},
        {"cluster": ["x" * 301]},
    ],
    ids=[
        "time-text",
        "time-nan",
        "time-a-year-ahead",
        "revision-bool",
        "revision-3000-digits",
        "negative",
        "float",
        "no-member",
        "cluster-not-a-list",
        "cluster-of-17",
        "cluster-member-a-number",
        "cluster-member-too-long",
    ],
)
def test_a_lying_record_is_not_listed_and_breaks_nothing(tmp_path: Path, lie: dict[str, object]) -> None:
    put(tmp_path, "etcd-good-r5.db", GOOD)
    raw = (
        json.dumps({**GOOD, **lie}, allow_nan=True).encode()
        if "revision" not in lie or lie["revision"] != 10**3000
        else (json.dumps(GOOD).replace('"revision": 5', '"revision": ' + "9" * 3000).encode())
    )
    put(tmp_path, "etcd-bad-r6.db", None, raw)
    assert [Path(k.path).name for k in store.listed(tmp_path)] == ["etcd-good-r5.db"]
    store.prune(tmp_path, keep_count=1, max_age=None, now=2000.0)


def test_links_directories_and_huge_records_are_not_snapshots(tmp_path: Path) -> None:
    put(tmp_path, "etcd-good-r5.db", GOOD)
    (tmp_path / "etcd-dir-r7.db").mkdir()
    Path(tmp_path / "etcd-dir-r7.db.json").write_text(json.dumps(GOOD))
    outside = tmp_path.parent / "outside.db"
    outside.write_bytes(b"secret")
    (tmp_path / "etcd-link-r8.db").symlink_to(outside)
    Path(tmp_path / "etcd-link-r8.db.json").write_text(json.dumps(GOOD))
    real = put(tmp_path, "etcd-recordlink-r9.db", GOOD)
    Path(f"{real}.json").unlink()
    Path(f"{real}.json").symlink_to(tmp_path / "etcd-good-r5.db.json")
    put(tmp_path, "etcd-huge-r10.db", None, json.dumps({**GOOD, "member": "m" * 10000}).encode())
    assert [Path(k.path).name for k in store.listed(tmp_path)] == ["etcd-good-r5.db"]
    store.prune(tmp_path, keep_count=1, max_age=0.001, now=10**9)
    assert outside.read_bytes() == b"secret" and (tmp_path / "etcd-dir-r7.db").is_dir()


async def test_a_newest_snapshot_stamped_ahead_of_the_clock_does_not_stop_the_schedule(
    specs: Path, tmp_path: Path
) -> None:
    where = tmp_path / "snaps"
    where.mkdir()
    put(where, "etcd-ahead-r1.db", {**GOOD, "taken_at": time.time() + 3600})  # taken while the clock ran ahead
    (specs / "backup.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: EtcdBackup\nmetadata: {name: etcd}\n"
        f"spec: {{encryption: {{unencrypted: true}}, intervalSeconds: 60, directory: {where}}}\n"
    )
    hosts = {n: SimHost(n) for n in ("master-1", "master-2", "master-3")}
    db = os.urandom(4096)
    for i, h in enumerate(hosts.values()):
        h.etcd_status = {"header": {"member_id": i}, "leader": 0}
        h.etcd_snapshot = (db + hashlib.sha256(db).digest(), {"revision": 3, "totalKey": 1, "totalSize": len(db)})
    snapshots = Snapshots(Metrics(), fake_connector(hosts), leading=None)
    desired = load_desired(specs)
    await snapshots.step(desired)
    assert len(store.listed(where)) == 1  # counted as taken now: the next one an interval from now ...
    await snapshots.step(desired, time.time() + 61)
    assert len(store.listed(where)) == 2  # ... and taken then, not an hour later


async def test_a_member_saying_a_3000_digit_revision_keeps_nothing(specs: Path, tmp_path: Path) -> None:
    hosts = {n: SimHost(n) for n in ("master-1", "master-2", "master-3")}
    db = os.urandom(4096)
    for i, h in enumerate(hosts.values()):
        h.etcd_status = {"header": {"member_id": i}, "leader": 0}
        h.etcd_snapshot = (db + hashlib.sha256(db).digest(), {"revision": 10**3000, "totalKey": 1})
    where = tmp_path / "snaps"
    with pytest.raises(SnapshotFailed, match="did not say the snapshot's revision"):
        await take(Session(fake_connector(hosts)), load_desired(specs), where)
    assert not list(where.iterdir())
