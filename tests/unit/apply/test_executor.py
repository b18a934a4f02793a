"""The atomic write script itself, run with bash on this machine: all or nothing, whatever goes wrong."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from reconciler.apply.executor import WRITE_SCRIPT
from tests.support.scripts import GROUP, USER, write

pytestmark = pytest.mark.host


def test_complete_content_is_installed_with_mode_and_a_backup(tmp_path: Path) -> None:
    target = tmp_path / "etc/app.conf"
    target.parent.mkdir()
    target.write_bytes(b"old\n")
    result = write(target, b"new\n")
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"new\n" and oct(target.stat().st_mode & 0o777) == "0o640"
    assert (tmp_path / "etc/bak" / str(target).lstrip("/") / "20261127T000000.1").read_bytes() == b"old\n"


def test_content_cut_short_is_never_installed(tmp_path: Path) -> None:
    """What a connection dropped mid-transfer looks like to the script: stdin ends early."""
    target = tmp_path / "app.conf"
    target.write_bytes(b"old\n")
    content = os.urandom(256 * 1024)
    result = write(target, content, sent=content[: len(content) // 2])
    assert result.returncode == 3 and b"arrived incomplete" in result.stderr
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.conf"]  # no temp file left behind


def test_a_cut_session_still_removes_the_temp_file(tmp_path: Path) -> None:
    """A killed SSH session closes the script's stderr too: its "arrived incomplete" message then raises
    SIGPIPE, which ends the shell without its EXIT trap unless the script traps the signal itself."""
    target = tmp_path / "app.conf"
    target.write_bytes(b"old\n")
    content = os.urandom(64 * 1024)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads the script's stderr any more
    try:
        result = subprocess.run(
            ["sh", "-c", WRITE_SCRIPT, "w", str(target), "0640", USER, GROUP, str(tmp_path / "bak"), "1", "5"]
            + [hashlib.sha256(content).hexdigest()],
            input=content[:1000],
            stdout=subprocess.DEVNULL,
            stderr=write_end,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert result.returncode != 0
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.conf"]  # no temp file left behind
