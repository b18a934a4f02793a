"""`reconciler etcd snapshot` on the testbed's real 3-member etcd: taken from a follower through its host (the client
key stays there), checked, kept with its record; etcd's own tool (etcdutl, scripts/fetch-etcd) reads the kept file
and agrees on its revision and key count; the writes made before it are in it; `etcd snapshots` lists it. The daemon
takes them itself on an EtcdBackup document's schedule, encrypted at rest to an age key, and says so in /status and
its metrics."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.backup import store
from testbed import Testbed
from tests.support.cli import reconciler
from tests.support.daemon import RunningDaemon, wait_for
from tests.support.specs import BUNDLED as SPECS
from tests.support.tuning import etcdctl, leader

pytestmark = pytest.mark.testbed

ETCDUTL = Path("/var/cache/reconciler/etcd/v3.5/bin/etcdutl")


def etcdutl(*args: str) -> str:
    return subprocess.run([str(ETCDUTL), *args], check=True, capture_output=True, text=True, timeout=60).stdout


def test_a_snapshot_is_taken_from_a_follower_checked_and_kept(converged: Testbed, tmp_path: Path) -> None:
    for i in range(20):
        assert etcdctl(converged, "put", f"/snapshot-test/{i:02d}", f"value-{i}").returncode == 0
    revision = int(
        json.loads(etcdctl(converged, "endpoint", "status", "-w", "json").stdout)[0]["Status"]["header"]["revision"]
    )
    where = tmp_path / "snapshots"
    taken = reconciler("etcd", "snapshot", str(SPECS), "--dir", str(where), "--json")
    assert taken.code == 0, taken.out + taken.err
    kept = store.listed(where)
    assert len(kept) == 1 and json.loads(taken.out)["path"] == kept[0].path
    snap = kept[0]
    assert snap.member != leader(converged, converged.hosts).name and snap.revision >= revision
    assert snap.cluster == tuple(f"{h.name}=https://{h.address}:2380" for h in converged.hosts)  # which cluster
    assert oct(Path(snap.path).stat().st_mode)[-3:] == "600" and oct(where.stat().st_mode)[-3:] == "700"
    said = json.loads(etcdutl("snapshot", "status", snap.path, "-w", "json"))
    assert said["revision"] == snap.revision and said["totalKey"] == snap.keys
    restored = tmp_path / "restored"
    etcdutl("snapshot", "restore", snap.path, "--data-dir", str(restored), "--skip-hash-check=false")
    assert (restored / "member" / "snap" / "db").stat().st_size > 0
    listed = reconciler("etcd", "snapshots", "--dir", str(where))
    assert listed.code == 0 and snap.path in listed.out and f"revision {snap.revision}" in listed.out
    assert not any(p.name.startswith(".receiving-") for p in where.iterdir())
    for h in converged.hosts:  # nothing left on the masters
        assert h.ssh("ls /var/tmp | grep -c reconciler-etcd-snapshot", check=False).stdout.strip() == "0"


def test_the_daemon_takes_them_on_the_etcd_backup_schedule(
    converged: Testbed, spec_copy: Path, tmp_path: Path, run_daemon: Callable[..., RunningDaemon]
) -> None:
    where = tmp_path / "scheduled"
    identity = tmp_path / "backup.key"  # the operator's: the daemon is given its public half only
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True).stdout
    (spec_copy / "backup.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: EtcdBackup\nmetadata: {name: etcd}\n"
        f"spec: {{encryption: {{ageRecipients: [{public.strip()}]}}, intervalSeconds: 60, keep: 3, directory: {where}}}\n"
    )
    daemon = run_daemon(spec_copy, "--resync", "600")

    def kept_one() -> dict[str, Any] | None:
        entry: dict[str, Any] = daemon.status()["etcd_snapshots"]
        return entry if entry.get("last") else None

    status = wait_for("the first scheduled snapshot", kept_one, daemon=daemon, timeout=90)
    assert status is not None
    assert status["enabled"] and status["failures"] == 0 and status["interval_seconds"] == 60
    kept = store.listed(where)
    assert [k.path for k in kept] == [status["last"]["path"]]
    assert daemon.sample("reconciler_etcd_snapshot_last_success_timestamp_seconds") == kept[0].taken_at
    assert daemon.sample("reconciler_etcd_snapshot_interval_seconds") == 60
    assert status["next_at"] == kept[0].taken_at + 60
    assert kept[0].path.endswith(".db.age")  # encrypted at rest; decrypted with the identity, etcd's tool reads it
    plain = tmp_path / "decrypted.db"
    subprocess.run(["age", "--decrypt", "--identity", str(identity), "-o", str(plain), kept[0].path], check=True)
    assert json.loads(etcdutl("snapshot", "status", "-w", "json", str(plain)))["revision"] == kept[0].revision
