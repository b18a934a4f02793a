"""`reconciler etcd replace-member` on the testbed, a client writing through every endpoint and a read that needs the
quorum sampled the whole time: refused while the member answers; master-3's machine "destroyed" (etcd stopped, its
data gone) and replaced by one whose etcd never starts: the learner is removed again after the bounded wait; the
machine fixed, the same command replaces the member: a learner first, promoted once in sync, a new member ID, the
data there. No write fails, no acknowledged write is lost, no moment without quorum."""

from __future__ import annotations

import re

import pytest

from testbed import Testbed
from tests.support.cli import reconciler
from tests.support.serving import Quorum
from tests.support.specs import BUNDLED as SPECS
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
    writer.start()
    quorum.start()
    try:
        # the machine destroyed; its successor's etcd cannot start (a broken install)
        m3.ssh(f"systemctl stop etcd && rm -rf {DATA_DIR}")
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
