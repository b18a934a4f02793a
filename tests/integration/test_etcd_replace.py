"""`reconciler etcd replace-member` on the testbed, a client writing through every endpoint and a read that needs the
quorum sampled the whole time: refused while the member answers; master-3's machine "destroyed" (etcd stopped, its
data gone) and replaced by one whose etcd never starts: the learner is removed again after the bounded wait; the
machine fixed, the same command replaces the member: a learner first, promoted once in sync, a new member ID, the
data there. No write fails, no acknowledged write is lost, no moment without quorum."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed import Testbed, TestHost, moved_address
from tests.support.cli import CLIResult, reconciler
from tests.support.serving import Quorum
from tests.support.specs import BUNDLED as SPECS
from tests.support.specs import copy_specs
from tests.support.tuning import Writer, etcdctl, pad

pytestmark = pytest.mark.testbed

DATA_DIR = "/var/lib/etcd/default.etcd"
BROKEN = "/run/systemd/system/etcd.service.d/10-test-broken.conf"
PADDING = 60  # keys of 100 kB: a database of ~6 MB for the learner to catch up on


def members(bed: Testbed) -> dict[str, tuple[str, bool]]:
    """name (or the ID of one not started) -> (ID, learner), as the members serving say it."""
    out = etcdctl(bed, "member", "list", "-w", "simple", endpoints=bed.hosts[:2])
    assert out.returncode == 0, out.stderr
    rows = [[f.strip() for f in line.split(",")] for line in out.stdout.splitlines()]
    return {(r[2] or r[0]): (r[0], r[5] == "true") for r in rows}


def test_a_dead_member_is_replaced_through_a_learner_with_no_write_lost(converged: Testbed) -> None:
    bed, m3 = converged, converged.hosts[2]
    pad(bed, "/replace-test/pad-", PADDING)
    before = members(bed)
    assert set(before) == {"master-1", "master-2", "master-3"}, before

    alive = reconciler("etcd", "replace-member", "master-3", str(SPECS))
    assert alive.code == 1 and "it is not dead" in alive.err, alive.out + alive.err
    assert members(bed) == before  # nothing changed

    writer, quorum = Writer(bed), Quorum(bed, bed.hosts[:2])
    quorum.start()
    try:
        # the machine destroyed; its successor's etcd cannot start (a broken install)
        m3.ssh(f"systemctl stop etcd && rm -rf {DATA_DIR}")
        # the writer starts once the member is dead: a put that master-3 received as it stopped fails in etcd 3.4
        # ("missing content-type field"); that is the death's doing, not the replacement's, which is measured here
        writer.start()
        m3.ssh(f"mkdir -p {BROKEN.rpartition('/')[0]} && printf '[Service]\\nExecStartPre=/bin/false\\n' > {BROKEN}")
        m3.ssh("systemctl daemon-reload")
        fresh = reconciler("apply", str(SPECS), "--host", "master-3")  # the new machine converged as any master
        print("apply on the new machine:", fresh.code, (fresh.out + fresh.err)[-800:])
        never = reconciler("etcd", "replace-member", "master-3", str(SPECS), "--start-timeout", "10")
        said = never.out + never.err
        assert never.code == 1 and "did not start as a learner within 10 s" in said, said
        assert "removing it again" in said
        assert set(members(bed)) == {"master-1", "master-2"}  # the learner gone, the dead member gone: 2 voters

        m3.ssh(f"rm -f {BROKEN} && systemctl daemon-reload")  # the machine fixed
        replaced = reconciler("etcd", "replace-member", "master-3", str(SPECS))
        said = replaced.out + replaced.err
        assert replaced.code == 0, said
        assert "as a learner" in said and "promoted to a voting member" in said
    finally:
        writer.stop()
        quorum.stop()
        m3.ssh(f"rm -f {BROKEN} && systemctl daemon-reload", check=False)

    after = members(bed)
    assert set(after) == {"master-1", "master-2", "master-3"}, after
    assert not any(learner for _, learner in after.values())
    assert after["master-3"][0] != before["master-3"][0]  # a new member, not the old one back
    assert after["master-1"] == before["master-1"] and after["master-2"] == before["master-2"]
    # the new member has the data: a serializable read answered by it alone
    got = etcdctl(bed, "get", "--consistency=s", "--keys-only", "--prefix", "/replace-test/", endpoints=[m3])
    assert got.returncode == 0 and len(got.stdout.split()) == PADDING, got.stderr
    last = writer.acked[-1]
    assert etcdctl(bed, "get", "--consistency=s", last, endpoints=[m3]).stdout.split()[:1] == [last]
    # every acknowledged write there, none failed, never a moment without quorum
    assert writer.failed == 0 and len(writer.acked) >= 20, (writer.failed, len(writer.acked), writer.errors)
    stored = etcdctl(bed, "get", "--prefix", "--keys-only", "/tuning-test/").stdout.split()
    assert set(writer.acked) <= set(stored)
    assert quorum.samples >= 20 and quorum.without == 0, (quorum.samples, quorum.without)
    assert m3.ssh("systemctl show -p DropInPaths --value etcd").stdout.strip() == ""  # the join drop-in gone
    assert not (m3.root / "run/reconciler-etcd-join").exists()
    checked = reconciler("check", str(SPECS))
    assert checked.code == 0, checked.out + checked.err
    timing = re.search(r"started ([0-9.]+) s and promoted ([0-9.]+) s", replaced.out)
    assert timing, replaced.out
    print(
        f"etcd member replaced (~{PADDING * 100} kB of data): learner started {timing[1]} s, promoted {timing[2]} s "
        f"after its start; {len(writer.acked)} writes acknowledged, 0 failed; {quorum.samples} quorum samples, 0 without"
    )
    assert etcdctl(bed, "del", "--prefix", "/replace-test/").returncode == 0


def _moved_specs(bed: Testbed, dest: Path, address: str) -> Path:
    """The bundled specs with master-3 at `address` (its host key pinned there too, as an operator adds it)."""
    specs = copy_specs(dest)
    known = dest.parent / f"known_hosts-{address}"
    m3 = bed.hosts[2]
    pinned = [line.split(" ", 1) for line in bed.known_hosts_path.read_text().splitlines() if line.strip()]
    key = next(k for a, k in pinned if a == m3.address)
    known.write_text(bed.known_hosts_path.read_text() + f"{address} {key}\n")
    inventory = specs / "inventory.yaml"
    at = inventory.read_text().index("name: master-3")
    text = inventory.read_text()
    tail = text[at:].replace(f"address: {m3.address}", f"address: {address}", 1)
    tail = tail.replace(f"knownHosts: {bed.known_hosts_path}", f"knownHosts: {known}", 1)
    inventory.write_text(text[:at] + tail)
    return specs


def _apiserver_names(host: TestHost, address: str) -> bool:
    return address in host.ssh("cat /etc/kubernetes/apiserver").stdout


def _peer_of(bed: Testbed, name: str) -> str:
    out = etcdctl(bed, "member", "list", "-w", "simple", endpoints=bed.hosts[:2])
    rows = [[f.strip() for f in line.split(",")] for line in out.stdout.splitlines()]
    return next(r[3] for r in rows if r[2] == name)


def _move(bed: Testbed, specs: Path, to: str) -> tuple[CLIResult, CLIResult, CLIResult]:
    """master-3's machine destroyed, the specs give it `to`: apply, replace-member, apply."""
    m3 = bed.hosts[2]
    m3.ssh(f"systemctl stop etcd && rm -rf {DATA_DIR}")
    first = reconciler("apply", str(specs))
    replaced = reconciler("etcd", "replace-member", "master-3", str(specs))
    then = reconciler("apply", str(specs))
    return first, replaced, then


def test_a_master_moved_to_a_new_address_is_named_by_the_others_only_once_its_member_votes(
    converged: Testbed, tmp_path: Path
) -> None:
    """The new machine at another address: the specs say so, and until `replace-member` has made its member a voter
    there, no other master's file names that address (the apiservers' --etcd-servers, the other members'
    ETCD_INITIAL_CLUSTER) and its own etcd is not started by a pass; then the next pass rolls them out. Moved back
    the same way at the end (the testbed is shared)."""
    bed, m1, m3 = converged, converged.hosts[0], converged.hosts[2]
    new = moved_address(3)
    device = m3.ssh(f"ip -o -4 addr show to {m3.address} | awk '{{print $2}}'").stdout.strip()
    m3.ssh(f"ip addr add {new}/24 dev {device}")  # the new machine's address (the same container: its old one idle)
    moved = _moved_specs(bed, tmp_path / "moved", new)
    back: tuple[CLIResult, ...] = ()
    try:
        writer, quorum = Writer(bed), Quorum(bed, bed.hosts[:2])
        writer.start()
        quorum.start()
        try:
            first, replaced, then = _move(bed, moved, new)
            said = first.out + first.err
            assert first.code == 0, said
            assert "master-1: " in said and f"names {new}" in said and "replace-member master-3" in said, said
            assert "etcd.service not started" in said, said
            assert replaced.code == 0 and "promoted to a voting member" in replaced.out, replaced.out + replaced.err
            assert "removing the old member" in replaced.out and f"https://{m3.address}:2380" in replaced.out
            assert then.code == 0 and "pending" not in then.out, then.out + then.err
        finally:
            writer.stop()
            quorum.stop()
        assert _peer_of(bed, "master-3") == f"https://{new}:2380"
        assert _apiserver_names(m1, f"https://{new}:2379") and not _apiserver_names(m1, f"https://{m3.address}:2379")
        # the last pass restarts etcd on master-1 and master-2 (their ETCD_INITIAL_CLUSTER named the new address):
        # etcdctl 3.4 can fail a put that reaches a member as it stops or is in flight at a leader change
        # (bench/etcd_restart_writes.py; docs/certificates.md, "Not yet"); the replacement itself lost none in any run
        assert writer.failed <= 2 and len(writer.acked) >= 20, (writer.failed, len(writer.acked), writer.errors)
        assert quorum.samples >= 10 and quorum.without == 0, (quorum.samples, quorum.without)
        checked = reconciler("check", str(moved))
        assert checked.code == 0, checked.out + checked.err

        back = _move(bed, SPECS, m3.address)  # the same way back, at the testbed's own address
        assert [r.code for r in back] == [0, 0, 0], [r.out[-1500:] + r.err[-1500:] for r in back]
        assert f"names {m3.address}" in back[0].out, back[0].out
    finally:
        if not back:  # stopped midway: put back all the same (the testbed is shared by the tests after this one)
            _move(bed, SPECS, m3.address)
        m3.ssh(f"ip addr del {new}/24 dev {device}", check=False)
    assert _peer_of(bed, "master-3") == f"https://{m3.address}:2380"
    assert not _apiserver_names(m1, new)
    checked = reconciler("check", str(SPECS))
    assert checked.code == 0, checked.out + checked.err
