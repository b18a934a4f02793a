"""engine/etcd_join.sh's `prepare`, run with bash here: a data dir a failed first start left is moved aside to a name
of its own (twice in one second too), an empty or missing one is left as it is, a link, a file or a missing parent
is refused without anything moved, and so is a data dir whose unit runs again (started by another meanwhile). `join` and `joined` write under /run/systemd/system: the testbed's
(tests/integration/test_etcd_replace.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.engine.replace import SCRIPT

pytestmark = pytest.mark.host


def prepare(data: Path, running: bool = False) -> str:
    """`prepare etcd.service DATA`, with a systemctl of the test's: stops nothing; says the unit is `running`."""
    stub = data.parent.parent / "bin" / "systemctl"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(f'#!/bin/sh\ncase "$1" in is-active) exit {0 if running else 3} ;; esac\nexit 0\n')
    stub.chmod(0o755)
    done = subprocess.run(
        ["bash", "-c", SCRIPT, "reconciler-etcd-join", "prepare", "etcd.service", str(data)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{stub.parent}:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_what_a_failed_start_left_is_moved_aside_and_nothing_else(tmp_path: Path) -> None:
    data = tmp_path / "etcd" / "default.etcd"
    data.parent.mkdir()
    assert prepare(data) == "@@EMPTY" and not data.exists()
    data.mkdir()
    assert prepare(data) == "@@EMPTY" and data.is_dir()  # an empty one is etcd's to fill
    for _ in range(2):  # twice within a second: two names, never one inside the other
        (data / "member").mkdir(parents=True)
        said = prepare(data)
        assert said.startswith(f"@@ASIDE {data}.before-replace-"), said
        assert not data.exists() and Path(said.split(" ", 1)[1], "member").is_dir()
    assert len(list(data.parent.glob("default.etcd.before-replace-*"))) == 2
    (data / "member").mkdir(parents=True)
    assert prepare(data, running=True).startswith("@@ERR etcd.service is running again")  # started meanwhile
    assert (data / "member").is_dir()  # nothing moved from under it


def test_a_link_a_file_and_a_missing_parent_are_refused(tmp_path: Path) -> None:
    tmp_path = tmp_path / "etcd"
    tmp_path.mkdir()
    target = tmp_path / "elsewhere"
    (target / "member").mkdir(parents=True)
    link = tmp_path / "default.etcd"
    link.symlink_to(target)
    assert prepare(link).startswith("@@ERR ") and (target / "member").is_dir() and link.is_symlink()
    plain = tmp_path / "file.etcd"
    plain.write_text("x")
    assert prepare(plain).startswith("@@ERR ") and plain.read_text() == "x"
    assert prepare(tmp_path / "missing" / "default.etcd").startswith("@@ERR ")
