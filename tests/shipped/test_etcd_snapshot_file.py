"""A real etcd snapshot (Debian's 3.4, `etcdctl snapshot save` from a member on loopback) is whole by
backup.snapshot_file's check, and the same file cut short is not: the trailer is etcd's own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.backup.snapshot_file import Trailer
from tests.support.etcd import etcdctl, local_etcd

pytestmark = pytest.mark.host


def check(data: bytes) -> str | None:
    trailer = Trailer()
    for i in range(0, len(data), 65536):
        trailer.feed(data[i : i + 65536])
    return trailer.problem()


def test_a_real_snapshot_is_whole_and_a_cut_one_is_not(tmp_path: Path) -> None:
    with local_etcd(tmp_path / "data") as url:
        for i in range(50):
            etcdctl(url, "put", f"/k/{i}", "v" * 100)
        saved = tmp_path / "snap.db"
        subprocess.run(
            ["etcdctl", f"--endpoints={url}", "snapshot", "save", str(saved)],
            check=True,
            capture_output=True,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )
    data = saved.read_bytes()
    assert check(data) is None
    assert check(data[:-1]) is not None and check(data[: len(data) // 2]) is not None
    assert check(data[:-32]) is not None  # the database alone: no trailer
