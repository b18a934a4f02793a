"""backup/etcd_restore.sh run with bash here, an etcdutl written for the purpose beside it (it makes a data dir as
etcdutl's restore does): `check` refuses a data dir that is a link and a missing parent; `rebuild` checks the
snapshot's sha256, builds the new dir beside the old, moves the old aside to a name of its own (twice in one second
too: never one inside the other), writes the marker last; the same snapshot and token again is left alone; `done`
removes the marker; a marker that is a link is not written through."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from reconciler.engine.restore import SCRIPT

pytestmark = pytest.mark.host

FAKE_ETCDUTL = """#!/bin/sh
# as etcdutl snapshot restore: the data dir it is given, with member/snap/db in it
while [ $# -gt 0 ]; do
  if [ "$1" = --data-dir ]; then mkdir -p "$2/member/snap" && echo restored > "$2/member/snap/db"; fi
  shift
done
"""


def run(*args: str, data: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", SCRIPT, "reconciler-etcd-restore", *args],
        input=data.decode("latin-1"),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    b = tmp_path / "bin"
    b.mkdir()
    (b / "etcdutl").write_text(FAKE_ETCDUTL)
    (b / "etcdutl").chmod(0o755)
    return b


def test_check_refuses_a_link_and_a_missing_parent(tmp_path: Path, bindir: Path) -> None:
    data = tmp_path / "etcd" / "default.etcd"
    data.parent.mkdir()
    assert run("check", str(data), str(bindir)).stdout.strip() == "@@OK etcdutl"
    data.symlink_to(tmp_path)
    assert "is a symbolic link" in run("check", str(data), str(bindir)).stdout
    assert "is not a directory" in run("check", str(tmp_path / "nowhere" / "d"), str(bindir)).stdout


def test_rebuild_is_checked_kept_aside_and_marked(tmp_path: Path, bindir: Path) -> None:
    snapshot = b"a snapshot's bytes"
    sha = hashlib.sha256(snapshot).hexdigest()
    data = tmp_path / "etcd" / "default.etcd"
    (data / "member").mkdir(parents=True)
    (data / "member" / "old").write_text("old data")
    args = ("rebuild", sha, "m1", str(data), "m1=https://a:2380", "https://a:2380", "tok", str(bindir))
    bad = run(*args, data=b"another file")
    assert bad.returncode != 0 and "arrived changed" in bad.stderr and (data / "member" / "old").exists()
    first = run(*args, data=snapshot)
    assert first.returncode == 0 and "@@RESTORED" in first.stdout, first.stderr
    assert (data / "member" / "snap" / "db").read_text() == "restored\n"
    aside = sorted(tmp_path.joinpath("etcd").glob("default.etcd.before-restore-*"))
    assert len(aside) == 1 and (aside[0] / "member" / "old").read_text() == "old data"
    assert Path(f"{data}.reconciler-restored").read_text() == f"{sha} tok\n"
    assert "@@ALREADY" in run(*args, data=snapshot).stdout  # stopped and run again: left alone
    assert "@@DONE" in run("done", str(data)).stdout and not Path(f"{data}.reconciler-restored").exists()
    again = run(*args, data=snapshot)  # the same file restored again (at once: the same second)
    assert "@@RESTORED" in again.stdout
    aside = sorted(tmp_path.joinpath("etcd").glob("default.etcd.before-restore-*"))
    assert len(aside) == 2 and not [p for a in aside for p in a.glob("*before-restore*")]  # side by side, not nested
    assert not list(tmp_path.joinpath("etcd").glob(".reconciler-*"))  # no work dir or temp marker left


def test_a_marker_that_is_a_link_is_not_trusted_nor_written_through(tmp_path: Path, bindir: Path) -> None:
    snapshot = b"bytes"
    sha = hashlib.sha256(snapshot).hexdigest()
    data = tmp_path / "etcd" / "default.etcd"
    (data / "member").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text(f"{sha} tok\n")
    Path(f"{data}.reconciler-restored").symlink_to(victim)
    args = ("rebuild", sha, "m1", str(data), "m1=https://a:2380", "https://a:2380", "tok", str(bindir))
    said = run(*args, data=snapshot)
    assert "@@RESTORED" in said.stdout, said.stderr  # not taken for "already": rebuilt
    assert victim.read_text() == f"{sha} tok\n" and not Path(f"{data}.reconciler-restored").is_symlink()
