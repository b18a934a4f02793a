"""A host is as untrusted as a spec: links, fifos and directories at managed paths and huge files are reported by
what they are, never read (observe.sh).

The observe script runs here with bash on this machine, on files in a temp directory, exactly as sshd runs it on a
host; what it prints is parsed and planned as the engine does. (test_observe_sh_attacks.py attacks it harder.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.observe.facts import observe_argv, parse_observation
from reconciler.plan.actions import Kind
from reconciler.plan.diff import plan_host
from tests.support.hostile_files import SHADOW, desired, with_secret

pytestmark = pytest.mark.host


def observe(limits: dict[str, int]) -> str:
    argv = observe_argv(limits, [], [])
    proc = subprocess.run(argv, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    return with_secret(tmp_path, SHADOW)


def test_links_fifos_directories_and_huge_files_are_reported_not_read(host_dir: Path) -> None:
    link, fifo, directory, big, dangling = (str(host_dir / n) for n in ("link", "fifo", "dir", "big", "dangling"))
    os.symlink(host_dir / "secret", link)
    os.symlink(host_dir / "nowhere", dangling)
    os.mkfifo(fifo)  # reading it would block the observation forever
    os.mkdir(directory)
    Path(big).write_bytes(b"x" * 300_000)
    limits = {link: 1024, fifo: 1024, directory: 1024, big: 1024, dangling: 1024}
    out = observe(limits)
    assert "s3cret" not in out and SHADOW.decode() not in out
    snap = parse_observation("h", out, paths=limits)
    facts = snap.files
    assert facts[link].kind == "symbolic link" and facts[link].target == str(host_dir / "secret")
    assert facts[link].content == b"" and not facts[link].regular
    assert facts[dangling].kind == "symbolic link"
    assert facts[fifo].kind == "fifo" and facts[directory].kind == "directory"
    assert facts[big].regular and facts[big].size == 300_000 and facts[big].content == b"" and not facts[big].complete
    assert len(out) < 4096  # the 300 kB file was not sent
    plan = plan_host(desired(list(limits)), snap)
    reasons = {a.target: a.reason for a in plan.actions}
    assert all(a.kind is Kind.WRITE for a in plan.actions) and set(reasons) == set(limits)
    assert "is a symlink to" in reasons[link] and "not followed" in reasons[link] and "replace" in reasons[link]
    assert "is a fifo" in reasons[fifo] and "is a directory" in reasons[directory]
    assert "s3cret" not in plan.render()
    assert "<300000 bytes, not read>" in plan.render()


def test_a_file_within_its_limit_is_read_whole(host_dir: Path) -> None:
    path = str(host_dir / "conf")
    Path(path).write_bytes(b"want\n")
    snap = parse_observation("h", observe({path: 1024}), paths=[path])
    assert snap.files[path].complete and snap.files[path].content == b"want\n"
    assert Kind.WRITE not in [a.kind for a in plan_host(desired([path]), snap).actions]  # mode may differ, content not
