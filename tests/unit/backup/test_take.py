"""An etcd snapshot taken and kept (backup.take, backup.store) on in-memory hosts: from a follower before the
leader, never from a learner; a copy that is not whole (cut short, or not what the member saved) is removed and
never counts, and the next member is tried; what is kept is named by its revision with its record beside it;
retention keeps the newest."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from reconciler.backup import store
from reconciler.backup.take import SnapshotFailed, take
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.etcd_members import fleet

SPECS = Path(__file__).resolve().parents[3] / "specs"


async def taken(hosts: dict[str, SimHost], directory: Path) -> store.Kept:
    return await take(Session(fake_connector(hosts)), load_desired(SPECS), directory)


async def test_taken_from_a_follower_checked_and_named_by_its_revision(tmp_path: Path) -> None:
    hosts = fleet(leader="master-1")
    kept = await taken(hosts, tmp_path)
    assert kept.member == "master-2" and kept.revision == 42 and kept.keys == 7
    data = hosts["master-2"].etcd_snapshot[0]  # type: ignore[index]
    assert Path(kept.path).read_bytes() == data and kept.sha256 == hashlib.sha256(data).hexdigest()
    assert Path(kept.path).name.endswith("-r42.db") and oct(Path(kept.path).stat().st_mode)[-3:] == "600"
    assert json.loads(kept.record.read_text())["revision"] == 42
    assert kept.needs == ("/etc/kubernetes/ssl/ca.pem (the CA etcd's members trust)",)  # named beside it
    assert store.listed(tmp_path) == [kept] and not list(tmp_path.glob(".receiving-*"))


async def test_never_from_a_learner_and_the_leader_last(tmp_path: Path) -> None:
    hosts = fleet(leader="master-2", learner="master-1")
    hosts["master-3"].etcd_snapshot = None  # its etcdctl fails
    kept = await taken(hosts, tmp_path)
    assert kept.member == "master-2"  # the leader, since the only follower failed and master-1 is a learner


@pytest.mark.parametrize("cut", [1, 32, 4096])
async def test_a_copy_that_is_not_whole_is_removed_and_the_next_member_tried(tmp_path: Path, cut: int) -> None:
    hosts = fleet(leader="master-1")
    data, status = hosts["master-2"].etcd_snapshot  # type: ignore[misc]
    hosts["master-2"].etcd_snapshot = (data[:-cut], status)
    kept = await taken(hosts, tmp_path)
    assert kept.member == "master-3" and [k.member for k in store.listed(tmp_path)] == ["master-3"]
    assert len(list(tmp_path.iterdir())) == 2  # the snapshot and its record: nothing of the cut copy


async def test_no_whole_copy_anywhere_keeps_nothing_and_says_why_per_member(tmp_path: Path) -> None:
    hosts = fleet()
    for h in hosts.values():
        data, status = h.etcd_snapshot  # type: ignore[misc]
        h.etcd_snapshot = (data, {**status, "totalSize": status["totalSize"] + 4096})  # not what the member saved
    with pytest.raises(SnapshotFailed) as failed:
        await taken(hosts, tmp_path)
    assert "master-2: " in str(failed.value) and "the member's snapshot has" in str(failed.value)
    assert not list(tmp_path.iterdir())


def test_retention_keeps_the_newest_and_removes_by_count_and_age(tmp_path: Path) -> None:
    now = 1_000_000.0
    for i in range(5):
        fd, partial = store.receiving(tmp_path)
        os.close(fd)
        taken_at = now - i * 3600
        path = str(tmp_path / store.name(taken_at, 100 - i))
        store.keep(partial, store.Kept(path, "master-1", 100 - i, 1, 0, "", taken_at, 0.1))
    gone = store.prune(tmp_path, keep_count=3, max_age=None, now=now)
    assert [k.revision for k in gone] == [97, 96] and [k.revision for k in store.listed(tmp_path)] == [100, 99, 98]
    assert [k.revision for k in store.prune(tmp_path, keep_count=10, max_age=1800, now=now + 7200)] == [99, 98]
    assert [k.revision for k in store.listed(tmp_path)] == [100]  # the newest stays, however old


def with_backup(specs: Path, directory: Path) -> None:
    (specs / "backup.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: EtcdBackup\nmetadata: {name: etcd}\n"
        f"spec: {{encryption: {{unencrypted: true}}, intervalSeconds: 3600, directory: {directory}}}\n"
    )


async def test_each_etcd_rollout_turn_is_preceded_by_a_snapshot_and_not_taken_without_one(
    specs: Path, tmp_path: Path
) -> None:
    from reconciler.engine.converge import converge
    from tests.support.specs import replace_once

    where = tmp_path / "snaps"
    with_backup(specs, where)
    hosts = fleet(leader="master-1")
    session = Session(fake_connector(hosts))
    first = await converge(load_desired(specs), session, wait=1.0, interval=0.01)
    assert {o.status for o in first.outcomes.values()} == {"converged"}
    before = where / "before-rollout"
    assert not before.exists()  # a first start is no restart onto new config: no turn, no snapshot
    replace_once(specs / "etcd.yaml", "ETCD_HEARTBEAT_INTERVAL: 100", "ETCD_HEARTBEAT_INTERVAL: 150")
    replace_once(specs / "etcd.yaml", "ETCD_ELECTION_TIMEOUT: 1000", "ETCD_ELECTION_TIMEOUT: 1500")
    changed = await converge(load_desired(specs), session, wait=1.0, interval=0.01)
    assert {o.status for o in changed.outcomes.values()} == {"converged"}, changed.outcomes
    assert len(store.listed(before)) == 3  # one before each member's turn
    for h in hosts.values():
        h.etcd_snapshot = None  # no member gives one now
    replace_once(specs / "etcd.yaml", "ETCD_HEARTBEAT_INTERVAL: 150", "ETCD_HEARTBEAT_INTERVAL: 200")
    replace_once(specs / "etcd.yaml", "ETCD_ELECTION_TIMEOUT: 1500", "ETCD_ELECTION_TIMEOUT: 2000")
    restarts = {n: len(h.restarted) for n, h in hosts.items()}
    refused = await converge(load_desired(specs), session, wait=1.0, interval=0.01)
    for name, outcome in refused.outcomes.items():
        assert outcome.status == "failed" and "no etcd snapshot could be kept before restarting" in outcome.error
        assert b"=200" not in hosts[name].files["/etc/etcd/etcd.conf"].content  # its turn wrote nothing
    assert {n: len(h.restarted) for n, h in hosts.items()} == restarts
