"""The executor's write, attrs and restore scripts (apply.executor), attacked: run here with bash on this machine (as
sshd runs them on a host), on files in temp directories: symlinked parent directories, links, fifos and directories
at the managed path, unknown owners, special bits, races (the hostile-host review of b861037 and c08d5ce; the
attacks the observe script meets are in observe/test_observe_sh_attacks.py).

A plain test asserts the safe behaviour an attack failed to break (a broken one would be marked
xfail(strict=True): see observe/test_observe_sh_attacks.py). The letter in a test's name (A..J) matches the
review report.

Some attacks need a won race; those simulate the winner deterministically with a PATH shim (as
test_executor_hostile.py does with a fake mktemp): the shim does what a local user with write access to the
managed file's directory could do in that window.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.apply import executor
from reconciler.apply.executor import ATTRS_SCRIPT
from tests.support.hostile_files import SECRET, mode_of, needs_root, with_secret, write
from tests.support.scripts import GROUP, USER

pytestmark = pytest.mark.host


def attrs(path: Path, mode: str = "0644", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", "-c", ATTRS_SCRIPT, "attrs", f"{USER}:{GROUP}", mode, str(path)],
        capture_output=True,
        timeout=30,
        env=env,
    )


def shim(bindir: Path, name: str, body: str) -> dict[str, str]:
    """A fake `name` first on PATH (what a racing local user achieves); returns the environment to use."""
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text("#!/bin/sh\n" + body)
    (bindir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    return with_secret(tmp_path / "host")


def test_A_write_never_writes_through_a_symlinked_parent_directory(host_dir: Path) -> None:
    elsewhere = host_dir / "root-kube"
    elsewhere.mkdir()
    (elsewhere / "config").write_bytes(SECRET)
    os.symlink(elsewhere, host_dir / "kubernetes")
    result = write(host_dir / "kubernetes" / "config", b"declared\n", bak=host_dir / "bak")
    assert (elsewhere / "config").read_bytes() == SECRET, result.stderr


def test_A_attrs_never_change_a_file_behind_a_symlinked_parent_directory(host_dir: Path) -> None:
    elsewhere = host_dir / "root-kube"
    elsewhere.mkdir()
    (elsewhere / "config").write_bytes(SECRET)
    (elsewhere / "config").chmod(0o600)
    os.symlink(elsewhere, host_dir / "kubernetes")
    attrs(host_dir / "kubernetes" / "config", "0644")
    assert mode_of(elsewhere / "config") == 0o600


# ------------------------------------------------------------------------- write / attrs / restore


def test_write_replaces_a_symlink_to_a_directory_and_leaves_the_directory_alone(host_dir: Path) -> None:
    (host_dir / "d").mkdir()
    (host_dir / "d" / "keep").write_bytes(SECRET)
    path = host_dir / "conf"
    os.symlink(host_dir / "d", path)
    result = write(path, b"new\n", bak=host_dir / "bak")
    assert result.returncode == 0, result.stderr
    assert not path.is_symlink() and path.read_bytes() == b"new\n"
    assert sorted(os.listdir(host_dir / "d")) == ["keep"] and (host_dir / "d" / "keep").read_bytes() == SECRET
    assert not (host_dir / "bak").exists()


def test_write_replaces_a_dangling_symlink_without_creating_its_target(host_dir: Path) -> None:
    path = host_dir / "conf"
    os.symlink(host_dir / "nowhere" / "x", path)
    assert write(path, b"new\n").returncode == 0
    assert path.read_bytes() == b"new\n" and not (host_dir / "nowhere").exists()


def test_write_with_an_unknown_owner_installs_nothing_and_leaves_no_temp_file(host_dir: Path) -> None:
    path = host_dir / "conf"
    path.write_bytes(b"old\n")
    result = write(path, b"new\n", owner="no-such-user-xyz")
    assert result.returncode != 0
    assert path.read_bytes() == b"old\n" and sorted(os.listdir(host_dir)) == ["conf", "secret"]


@needs_root
def test_write_sets_special_bits_after_the_owner_so_chown_cannot_clear_them(host_dir: Path) -> None:
    path = host_dir / "tool"
    result = write(path, b"#!/bin/sh\n", mode="4755", owner="root", group="root")
    assert result.returncode == 0, result.stderr
    assert mode_of(path) == 0o4755 and path.stat().st_uid == 0


def test_write_under_a_regular_file_fails_cleanly(host_dir: Path) -> None:
    (host_dir / "file").write_bytes(b"x")
    assert write(host_dir / "file" / "conf", b"new\n").returncode != 0
    assert (host_dir / "file").read_bytes() == b"x"


def test_write_creates_missing_parent_directories_traversable(host_dir: Path) -> None:
    path = host_dir / "etcd" / "sub" / "etcd.conf"
    assert write(path, b"new\n").returncode == 0
    assert mode_of(host_dir / "etcd") & 0o055 == 0o055 and mode_of(host_dir / "etcd" / "sub") & 0o055 == 0o055


def test_H_write_mode_change_never_follows_a_link_swapped_in_for_the_temp_file(host_dir: Path, tmp_path: Path) -> None:
    content = b"new\n"
    env = shim(
        tmp_path / "bin",
        "sha256sum",  # the racing user's move, then the real digest line
        f'rm -f -- "$2"; ln -s {host_dir / "secret"} "$2"; echo "{hashlib.sha256(content).hexdigest()}  $2"\n',
    )
    write(host_dir / "conf", content, mode="0644", env=env)
    assert mode_of(host_dir / "secret") == 0o600


def test_H_attrs_never_follow_a_link_swapped_in_after_the_check(host_dir: Path, tmp_path: Path) -> None:
    path = host_dir / "conf"
    path.write_bytes(b"want\n")
    real_chown = shutil.which("chown")
    env = shim(tmp_path / "bin", "chown", f'rm -f -- "$4"; ln -s {host_dir / "secret"} "$4"; exec {real_chown} "$@"\n')
    attrs(path, "0644", env=env)
    assert mode_of(host_dir / "secret") == 0o600


def test_attrs_refuse_directories_fifos_and_symlinks(host_dir: Path) -> None:
    (host_dir / "d").mkdir()
    os.mkfifo(host_dir / "f")
    os.symlink(host_dir / "secret", host_dir / "l")
    for name in ("d", "f", "l"):
        result = attrs(host_dir / name, "0644")
        assert result.returncode == 4 and b"not a regular file" in result.stderr
    assert mode_of(host_dir / "secret") == 0o600


def test_restore_never_reads_a_linked_backup_nor_writes_through_a_link(host_dir: Path) -> None:
    script = getattr(executor, "RESTORE_SCRIPT", None)
    if script is None:
        pytest.skip("no RESTORE_SCRIPT in this tree")
    path, backup = host_dir / "conf", host_dir / "backup"
    os.symlink(host_dir / "secret", backup)
    result = subprocess.run(["bash", "-c", script, "r", str(path), str(backup)], capture_output=True, timeout=30)
    assert result.returncode == 4 and not path.exists()
    backup.unlink()
    backup.write_bytes(b"old\n")
    os.symlink(host_dir / "secret", path)
    result = subprocess.run(["bash", "-c", script, "r", str(path), str(backup)], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert not path.is_symlink() and path.read_bytes() == b"old\n" and (host_dir / "secret").read_bytes() == SECRET
