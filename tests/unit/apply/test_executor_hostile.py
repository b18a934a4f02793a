"""A host is as untrusted as a spec: the write and attrs scripts (apply.executor) replace a link at a managed path and
never touch or back up what it points at, refuse to replace a directory, never write through a name planted at their
temp file, never follow a link.

The scripts run here with bash on this machine, on files in a temp directory, exactly as sshd runs them on a host.
(test_executor_attacks.py attacks them harder.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.apply.executor import ATTRS_SCRIPT
from tests.support.hostile_files import SHADOW, with_secret
from tests.support.scripts import GROUP, USER, write

pytestmark = pytest.mark.host


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    return with_secret(tmp_path, SHADOW)


def test_write_replaces_a_symlink_and_never_touches_or_backs_up_its_target(host_dir: Path) -> None:
    path = host_dir / "scheduler"
    os.symlink(host_dir / "secret", path)
    result = write(path, b"new\n")
    assert result.returncode == 0, result.stderr
    assert not path.is_symlink() and path.read_bytes() == b"new\n"
    assert (host_dir / "secret").read_bytes() == SHADOW and oct((host_dir / "secret").stat().st_mode & 0o777) == "0o600"
    backups = list((host_dir / "bak").rglob("*")) if (host_dir / "bak").exists() else []
    assert not any(b.is_file() and SHADOW in b.read_bytes() for b in backups)


def test_write_refuses_to_replace_a_directory(host_dir: Path) -> None:
    path = host_dir / "conf"
    path.mkdir()
    (path / "keep").write_text("data")
    result = write(path, b"new\n")
    assert result.returncode == 4 and b"is a directory" in result.stderr
    assert (path / "keep").read_text() == "data"
    assert sorted(p.name for p in host_dir.iterdir()) == ["conf", "secret"]  # no temp file left


def test_write_never_writes_through_a_name_planted_at_its_temp_file(
    host_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The temp name is random; a host that could guess it finds the file created exclusively (O_EXCL)."""
    path = host_dir / "conf"
    planted = host_dir / ".conf.reconciler.planted"
    os.symlink(host_dir / "secret", planted)
    fake = tmp_path_factory.mktemp("fakebin")
    (fake / "mktemp").write_text(f"#!/bin/sh\necho {planted}\n")  # "guesses" the name mktemp would choose
    (fake / "mktemp").chmod(0o755)
    result = write(path, b"new\n", env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert result.returncode != 0
    assert (host_dir / "secret").read_bytes() == SHADOW and not path.exists()


def test_attrs_never_follow_a_symlink(host_dir: Path) -> None:
    path = host_dir / "conf"
    os.symlink(host_dir / "secret", path)
    result = subprocess.run(
        ["sh", "-c", ATTRS_SCRIPT, "attrs", f"{USER}:{GROUP}", "0644", str(path)], capture_output=True, timeout=30
    )
    assert result.returncode == 4 and b"not a regular file" in result.stderr
    assert oct((host_dir / "secret").stat().st_mode & 0o777) == "0o600"
