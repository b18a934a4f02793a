"""`etcd restore` (engine.restore) on in-memory hosts: a snapshot that is not whole is refused before anything is
touched; a cluster that may be up is refused unless forced; forced, every kube component and every member is
stopped, each member rebuilt from the same snapshot with one token, and everything started again (etcd first);
run again, each member is left as it is."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from reconciler.backup import store
from reconciler.engine.converge import converge
from reconciler.engine.restore import RestoreRefused, members, restore
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session

SPECS = Path(__file__).resolve().parents[3] / "specs"


def snapshot_file(tmp_path: Path, whole: bool = True) -> Path:
    db = os.urandom(4096 * 4)
    path = tmp_path / "etcd-20261207T000000.000Z-r9.db"
    path.write_bytes(db + (hashlib.sha256(db).digest() if whole else b"x" * 32))
    return path


async def converged() -> tuple[dict[str, SimHost], Session]:
    hosts = {n: SimHost(n) for n in ("master-1", "master-2", "master-3")}
    session = Session(fake_connector(hosts))
    result = await converge(load_desired(SPECS), session, wait=1.0, interval=0.01)
    assert {o.status for o in result.outcomes.values()} == {"converged"}
    return hosts, session


def test_the_members_are_read_from_the_specs() -> None:
    found = members(load_desired(SPECS))
    assert [(m.host.name, m.name, m.data_dir) for m in found] == [
        (f"master-{i}", f"master-{i}", "/var/lib/etcd/default.etcd") for i in (1, 2, 3)
    ]
    assert found[0].peer_urls == "https://198.18.0.11:2380" and found[0].initial_cluster.count("=https://") == 3
    assert found[0].binary_dir == "/usr/bin"


async def test_a_snapshot_that_is_not_whole_or_a_cluster_that_may_be_up_is_refused(tmp_path: Path) -> None:
    hosts, session = await converged()
    changes = {n: h.changes for n, h in hosts.items()}
    with pytest.raises(RestoreRefused, match="not a whole etcd snapshot"):
        await restore(session, load_desired(SPECS), snapshot_file(tmp_path, whole=False), force=True, say=print)
    with pytest.raises(RestoreRefused, match="may be up"):  # the in-memory members answer no curl: unclear
        await restore(session, load_desired(SPECS), snapshot_file(tmp_path), force=False, say=print)
    assert {n: h.changes for n, h in hosts.items()} == changes  # nothing touched


async def test_forced_every_member_is_rebuilt_from_one_snapshot_and_again_left_as_it_is(tmp_path: Path) -> None:
    hosts, session = await converged()
    said: list[str] = []
    path = snapshot_file(tmp_path)
    await restore(session, load_desired(SPECS), path, force=True, say=said.append)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert [h.etcd_rebuilds for h in hosts.values()] == [[sha]] * 3
    assert {h.etcd_restored for h in hosts.values()} == {None}  # over: the marker gone, it may be restored again
    order = [line.split(" on ")[0] for line in said if line.startswith(("stopping", "starting"))]
    assert order == [
        "stopping kube-scheduler",
        "stopping kube-controller-manager",
        "stopping kube-apiserver",
        "stopping etcd",
        "starting etcd",
        "starting kube-apiserver",
        "starting kube-controller-manager",
        "starting kube-scheduler",
    ]
    for h in hosts.values():
        assert all(u.active for u in h.units.values())
    assert sum("not bumped" in line for line in said) == 6  # said before (check) and after (rebuild)


async def test_a_planned_restore_checks_everything_says_each_step_and_changes_nothing(tmp_path: Path) -> None:
    hosts, session = await converged()
    changes = {n: h.changes for n, h in hosts.items()}
    said: list[str] = []
    await restore(session, load_desired(SPECS), snapshot_file(tmp_path), force=True, say=said.append, plan_only=True)
    assert sum("can be rebuilt" in line for line in said) == 3  # each member's data dir checked
    steps = [line.split(" on ")[0].split(" (")[0] for line in said if line.startswith("would ")]
    assert steps[:4] == [
        "would stop kube-scheduler",
        "would stop kube-controller-manager",
        "would stop kube-apiserver",
        "would stop etcd",
    ]
    assert sum(line.startswith("would rebuild master-") for line in said) == 3
    assert steps[-4:] == [
        "would start etcd",
        "would start kube-apiserver",
        "would start kube-controller-manager",
        "would start kube-scheduler",
    ]
    assert {n: h.changes for n, h in hosts.items()} == changes and [h.etcd_rebuilds for h in hosts.values()] == [[]] * 3
    with pytest.raises(RestoreRefused, match="may be up"):  # planned or not, the same refusals
        await restore(session, load_desired(SPECS), snapshot_file(tmp_path), force=False, say=print, plan_only=True)


async def test_a_restore_stopped_midway_goes_on_where_it_stopped_and_a_later_one_restores_again(
    tmp_path: Path,
) -> None:
    hosts, session = await converged()
    path = snapshot_file(tmp_path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    hosts["master-1"].etcd_restored = (sha, f"restored-{sha[:16]}")  # rebuilt before the restore stopped
    hosts["master-1"].etcd_rebuilds.append(sha)
    again: list[str] = []
    await restore(session, load_desired(SPECS), path, force=True, say=again.append)
    assert sum("already rebuilt from this snapshot" in line for line in again) == 1
    assert [len(h.etcd_rebuilds) for h in hosts.values()] == [1, 1, 1]
    await restore(session, load_desired(SPECS), path, force=True, say=again.append)  # days later, the same file
    assert [len(h.etcd_rebuilds) for h in hosts.values()] == [2, 2, 2]


@pytest.mark.parametrize("data_dir", ["/var/lib", "/", "relative/etcd", "/var/lib/etcd/../..", "/etc"])
def test_a_data_dir_that_is_no_etcd_directory_of_its_own_is_refused(tmp_path: Path, data_dir: str) -> None:
    specs = tmp_path / "specs"
    shutil.copytree(SPECS, specs)
    etcd = specs / "etcd.yaml"
    etcd.write_text(etcd.read_text().replace("ETCD_DATA_DIR: /var/lib/etcd/default.etcd", f"ETCD_DATA_DIR: {data_dir}"))
    with pytest.raises(RestoreRefused, match="data-dir"):
        members(load_desired(specs))


def record(path: Path, taken_at: float, cluster: list[str]) -> None:
    """The record the snapshot command keeps beside a snapshot."""
    kept = store.Kept(str(path), "master-2", 9, 3, path.stat().st_size, "0" * 64, taken_at, 0.1, tuple(cluster))
    Path(f"{path}.json").write_text(json.dumps(asdict(kept)))


async def test_another_clusters_snapshot_is_refused_unless_said_so(tmp_path: Path) -> None:
    """The 3 a.m. mistakes: staging's snapshot, or the right snapshot with another cluster's spec directory."""
    hosts, session = await converged()
    path = snapshot_file(tmp_path)
    record(path, 1000.0, [f"master-{i}=https://10.9.0.{i}:2380" for i in (1, 2, 3)])
    changes = {n: h.changes for n, h in hosts.items()}
    with pytest.raises(
        RestoreRefused, match=r"of another cluster: its members were https://10\.9\.0\.1:2380.*--any-cluster"
    ):
        await restore(session, load_desired(SPECS), path, force=True, say=print)
    assert {n: h.changes for n, h in hosts.items()} == changes  # nothing touched
    said: list[str] = []
    await restore(session, load_desired(SPECS), path, force=True, any_cluster=True, say=said.append)
    assert any(line.startswith("note: restoring it anyway: the snapshot is of another cluster") for line in said)
    assert all(h.etcd_rebuilds for h in hosts.values())


async def test_a_snapshot_of_this_cluster_goes_ahead_and_newer_ones_beside_it_are_said(tmp_path: Path) -> None:
    hosts, session = await converged()
    ours = [f"master-{i}=https://198.18.0.1{i}:2380" for i in (1, 2, 3)]
    older, newer = snapshot_file(tmp_path), tmp_path / "etcd-20261207T010000.000Z-r20.db"
    shutil.copy(older, newer)
    record(older, 1000.0, ours[:2] + ["master-3=https://198.18.0.99:2380"])  # a member replaced since: still ours
    record(newer, 1000.0 + 3600, ours)
    kept = store.beside(older)
    assert kept is not None
    Path(f"{older}.json").write_text(json.dumps({**asdict(kept), "needs": ["/etc/k/ca.pem (the CA)"]}))
    said: list[str] = []
    await restore(session, load_desired(SPECS), older, force=True, say=said.append)
    assert any("note: 1 newer snapshot(s) kept beside it" in line and "60 min later" in line for line in said), said
    assert "note: a restored cluster needs besides it: /etc/k/ca.pem (the CA)" in said
    assert not any("another cluster" in line for line in said)


async def test_a_snapshot_without_a_record_is_restored_with_a_note(tmp_path: Path) -> None:
    hosts, session = await converged()
    said: list[str] = []
    await restore(session, load_desired(SPECS), snapshot_file(tmp_path), force=True, say=said.append)
    assert any("has no record beside it" in line for line in said)
