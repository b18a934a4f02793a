"""`reconciler etcd restore` on the testbed: refused while etcd answers; after every member's data directory is
deleted (etcd stopped), one command rebuilds all three from a kept snapshot: every write the snapshot holds is
back, the writes made after it are not, the revision is bumped and marked compacted (a watcher or a read at an old
revision is told so, and re-lists), every component healthy; the same file restored again later is restored again
(a restore stopped midway goes on where it stopped: tests/unit/engine/test_restore.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reconciler.backup import store
from testbed import Testbed
from tests.support.cli import reconciler
from tests.support.specs import BUNDLED as SPECS
from tests.support.tuning import etcdctl

pytestmark = pytest.mark.testbed

ETCDUTL = "/var/cache/reconciler/etcd/v3.5/bin/etcdutl"  # scripts/fetch-etcd; the hosts see this machine's /
DATA_DIR = "/var/lib/etcd/default.etcd"


def keys(bed: Testbed, prefix: str) -> set[str]:
    got = etcdctl(bed, "get", "--prefix", "--keys-only", prefix)
    assert got.returncode == 0, got.stderr
    return set(got.stdout.split())


def test_every_member_is_rebuilt_from_one_snapshot(converged: Testbed, tmp_path: Path) -> None:
    for h in converged.hosts:  # as an operator installs etcd's offline tool (etcd >= 3.5) on the masters
        h.ssh(f"install -m 0755 {ETCDUTL} /usr/local/bin/etcdutl")
    before = {f"/restore-test/before-{i:02d}" for i in range(20)}
    for key in sorted(before):
        assert etcdctl(converged, "put", key, "kept").returncode == 0
    where = tmp_path / "snapshots"
    taken = reconciler("etcd", "snapshot", str(SPECS), "--dir", str(where))
    assert taken.code == 0, taken.out + taken.err
    snap = store.listed(where)[0]
    after = {f"/restore-test/after-{i:02d}" for i in range(5)}
    for key in sorted(after):
        assert etcdctl(converged, "put", key, "lost").returncode == 0

    refused = reconciler("etcd", "restore", snap.path, str(SPECS))
    assert refused.code == 1 and "refusing to restore: etcd answers through" in refused.err, refused.err
    assert keys(converged, "/restore-test/") == before | after  # nothing touched

    for h in converged.hosts:  # the disaster: every member's data gone
        h.ssh(f"systemctl stop etcd && rm -rf {DATA_DIR}")
    began = time.monotonic()
    restored = reconciler("etcd", "restore", snap.path, str(SPECS))
    seconds = time.monotonic() - began
    said = restored.out + restored.err
    assert restored.code == 0, said
    assert said.count("rebuilt, the old data directory kept beside it") == 3 and "not bumped" not in said
    assert keys(converged, "/restore-test/") == before  # what the snapshot holds, and only that
    status = etcdctl(converged, "endpoint", "status", "-w", "json")
    assert '"revision":' in status.stdout
    revision = int(status.stdout.split('"revision":')[1].split(",")[0])
    assert revision >= snap.revision + 1_000_000_000  # bumped: a watcher's old revision is behind it
    stale = etcdctl(converged, "get", f"--rev={snap.revision}", "/restore-test/before-00")
    assert stale.returncode != 0 and "compacted" in stale.stderr, stale.stderr  # told, not served stale data
    checked = reconciler("check", str(SPECS))
    assert checked.code == 0, checked.out + checked.err  # every component healthy
    print(f"etcd restore of 3 members from a {snap.size} byte snapshot: {seconds:.1f} s")

    again = reconciler("etcd", "restore", snap.path, str(SPECS), "--force")  # the same file, a later day
    assert again.code == 0, again.out + again.err
    assert again.out.count("rebuilt, the old data directory kept beside it") == 3
    assert keys(converged, "/restore-test/") == before
    assert reconciler("apply", str(SPECS)).code == 0  # the testbed as the bundled specs have it
