"""A master's files in a temp directory of this machine, as a hostile host or a local user leaves them, and the host
scripts run on them as sshd runs them: a secret that links point at, the write script with every argument, a run
bounded in time (its whole process group killed), the declared host to plan against. Used by the attack tests of
the observe script, the observation parser, the executor's scripts, the plan and the SSH transport (and, for the
secret and the declared host, by the *_hostile tests)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconciler.spec.desired import DesiredFile, DesiredHost, Target
from tests.support import scripts
from tests.support.scripts import GROUP, USER

CANARY = "attack-canary"
SECRET = f"root:$6${CANARY}-hash:19000:0:99999:7:::\n".encode()  # what a link at a managed path may point at
SHADOW = b"root:$6$s3cret-canary-hash:19000:0:99999:7:::\n"  # the *_hostile tests' secret: "s3cret" must never show
IS_ROOT = os.getuid() == 0

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (chown, setpriv, mknod)")


def with_secret(directory: Path, secret: bytes = SECRET) -> Path:
    """`directory` (made if missing) holding `secret` in an owner-only file named "secret"."""
    directory.mkdir(exist_ok=True)
    (directory / "secret").write_bytes(secret)
    (directory / "secret").chmod(0o600)
    return directory


def desired(paths: list[str], content: bytes = b"want\n", mode: int = 0o644) -> DesiredHost:
    """Host "h" declaring each of `paths` with `content` and `mode`, owned by this process's user and group."""
    return DesiredHost(
        Target("h", "127.0.0.1"),
        {p: DesiredFile(p, content, mode, USER, GROUP, False, f"File/{i}") for i, p in enumerate(paths)},
    )


def write(path: Path, content: bytes, **given: Any) -> subprocess.CompletedProcess[bytes]:
    """`tests.support.scripts.write`, mode 0644 unless given: the hostile-host tests' files are world-readable."""
    return scripts.write(path, content, **{"mode": "0644", **given})


def run_bounded(argv: list[str], timeout: float, **kw: Any) -> tuple[int | None, bytes, bytes]:
    """Run argv in its own process group; on timeout kill that group (openssl and friends included).
    The exit status is None when it did not finish in time."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err


def mode_of(path: Path) -> int:
    """The permission bits of `path` itself (a link is not followed)."""
    return path.lstat().st_mode & 0o7777
