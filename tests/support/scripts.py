"""The write script run on this machine as a master would run it, and who runs it. Used by the write-script,
format-only and hostile-host tests."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import subprocess
from pathlib import Path

from reconciler.apply.executor import WRITE_SCRIPT

USER = pwd.getpwuid(os.getuid()).pw_name


GROUP = grp.getgrgid(os.getgid()).gr_name


def write(
    path: Path,
    content: bytes,
    sent: bytes | None = None,
    env: dict[str, str] | None = None,
    *,
    mode: str = "0640",
    owner: str = USER,
    group: str = GROUP,
    bak: Path | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[bytes]:
    """WRITE_SCRIPT on this machine, installing `content` at `path` (`sent`: what actually arrives on stdin;
    backups under `bak`, beside the file by default, stamped 20261127T000000.1)."""
    digest = hashlib.sha256(content).hexdigest()
    return subprocess.run(
        [
            "bash",
            "-c",
            WRITE_SCRIPT,
            "w",
            str(path),
            mode,
            owner,
            group,
            str(bak if bak is not None else path.parent / "bak"),
            "20261127T000000.1",
            "5",
            digest,
        ],
        input=content if sent is None else sent,
        capture_output=True,
        timeout=timeout,
        env=env,
    )
