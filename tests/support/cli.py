"""The `reconciler` command run as an operator would: a process of its own, from the repository."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from tests.support.specs import REPO


@dataclass
class CLIResult:
    code: int
    out: str
    err: str


def reconciler(*args: str, timeout: float = 600) -> CLIResult:
    """Run the `reconciler` command as an operator would (a separate process)."""
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    return CLIResult(proc.returncode, proc.stdout, proc.stderr)
