"""`reconciler etcd restore` on the testbed: refused while etcd answers; after every member's data directory is
deleted (etcd stopped), one command rebuilds all three from a kept snapshot: every write the snapshot holds is
back, the writes made after it are not, the revision is bumped and marked compacted (a watcher or a read at an old
revision is told so, and re-lists), every component healthy; a restore stopped by Ctrl-C after the second member is
rebuilt goes on where it stopped when run again; the same file restored again later is restored again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.backup import store
from testbed import Testbed
from tests.support.cli import CLIResult, reconciler
from tests.support.specs import BUNDLED as SPECS
from tests.support.specs import REPO
from tests.support.tuning import etcdctl

pytestmark = pytest.mark.testbed

ETCDUTL = "/var/cache/reconciler/etcd/v3.5/bin/etcdutl"  # scripts/fetch-etcd; the hosts see this machine's /
DATA_DIR = "/var/lib/etcd/default.etcd"


def keys(bed: Testbed, prefix: str) -> set[str]:
    got = etcdctl(bed, "get", "--prefix", "--keys-only", prefix)
    assert got.returncode == 0, got.stderr
    return set(got.stdout.split())


def watching(bed: Testbed, prefix: str, out: Path) -> subprocess.Popen[bytes]:
    """`etcdctl watch` on `prefix` through every member, from the next revision on, its output to `out`."""
    pki = bed.pki_dir
    status = etcdctl(bed, "endpoint", "status", "-w", "json", endpoints=bed.hosts[:1]).stdout
    revision = int(status.split('"revision":')[1].split(",")[0])
    eps = ",".join(f"https://{h.address}:2379" for h in bed.hosts)
    with out.open("wb") as sink:
        return subprocess.Popen(
            ["etcdctl", f"--endpoints={eps}", f"--cacert={pki}/ca.pem", f"--cert={pki}/kubernetes.pem",
             f"--key={pki}/kubernetes-key.pem", "watch", "--prefix", f"--rev={revision + 1}", prefix],
            stdout=sink, stderr=subprocess.STDOUT, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip


def ctrl_c_after(args: list[str], line: str) -> CLIResult:
    """The command run as an operator would, interrupted (SIGINT, as Ctrl-C) once it prints a line starting `line`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    seen = []
    for said in proc.stdout:
        seen.append(said)
        if said.startswith(line):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    return CLIResult(proc.returncode, "".join(seen) + out, err)


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

    watch = watching(converged, "/restore-test/", tmp_path / "watch.out")  # a client's watch, open across it all
    for h in converged.hosts:  # the disaster: every member's data gone
        h.ssh(f"systemctl stop etcd && rm -rf {DATA_DIR}")
    planned = reconciler("etcd", "restore", snap.path, str(SPECS), "--plan")  # the runbook's step 4: plan first
    assert planned.code == 0 and planned.out.count("would rebuild master-") == 3, planned.out + planned.err
    assert all(not (h.root / DATA_DIR.lstrip("/")).exists() for h in converged.hosts)  # nothing changed
    interrupted = ctrl_c_after(["etcd", "restore", snap.path, str(SPECS)], "master-2: rebuilt")
    assert interrupted.code == 130, interrupted.out + interrupted.err  # Ctrl-C, said as such: no traceback
    began = time.monotonic()
    restored = reconciler("etcd", "restore", snap.path, str(SPECS))  # the same command again
    seconds = time.monotonic() - began
    said = restored.out + restored.err
    assert restored.code == 0, said
    assert said.count("already rebuilt from this snapshot: left as it is") >= 2, said  # master-1 and master-2
    assert "not bumped" not in said
    assert keys(converged, "/restore-test/") == before  # what the snapshot holds, and only that
    status = etcdctl(converged, "endpoint", "status", "-w", "json")
    assert '"revision":' in status.stdout
    revision = int(status.stdout.split('"revision":')[1].split(",")[0])
    assert revision >= snap.revision + 1_000_000_000  # bumped: a watcher's old revision is behind it
    stale = etcdctl(converged, "get", f"--rev={snap.revision}", "/restore-test/before-00")
    assert stale.returncode != 0 and "compacted" in stale.stderr, stale.stderr  # told, not served stale data
    try:  # the watch held open across the restore: told it was compacted (its client re-lists), never fed stale data
        watch.wait(timeout=60)
    finally:
        watch.kill()
    told = (tmp_path / "watch.out").read_text()
    # told it was compacted; or, when the test's own disaster stopped the watch's member under it, cancelled there by
    # etcd 3.4's hard stop under TLS ("missing content-type field", an answer etcdctl does not retry): seen once in
    # CI, before the restore began; either way never fed stale data (below)
    assert "compacted" in told or "missing content-type field" in told, told
    assert "PUT" not in told, told  # no key put since the watch began: nothing replayed from the restored data
    checked = reconciler("check", str(SPECS))
    assert checked.code == 0, checked.out + checked.err  # every component healthy
    print(f"etcd restore of 3 members from a {snap.size} byte snapshot, after a Ctrl-C: {seconds:.1f} s")

    began = time.monotonic()
    again = reconciler("etcd", "restore", snap.path, str(SPECS), "--force")  # the same file, a later day
    assert again.code == 0, again.out + again.err
    print(f"etcd restore of 3 members, whole, over a running cluster: {time.monotonic() - began:.1f} s")
    assert again.out.count("rebuilt, the old data directory kept beside it") == 3
    assert keys(converged, "/restore-test/") == before
    assert reconciler("apply", str(SPECS)).code == 0  # the testbed as the bundled specs have it
