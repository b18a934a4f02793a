"""Integration fixtures: one 3-host testbed for the session, and helpers to run the real CLI against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import Testbed

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "specs"
# The CLI and daemons started by tests keep their etcd tuning overlay here, never in /var/lib/reconciler;
# tests that tune pass a --state-dir of their own.
os.environ["RECONCILER_STATE_DIR"] = tempfile.mkdtemp(prefix="reconciler-state-")


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


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    if os.geteuid() != 0:
        pytest.fail("testbed tests need root (they boot systemd-nspawn hosts); deselect with -m 'not testbed'")
    bed = Testbed(n=3)
    bed.start()
    try:
        yield bed
    finally:
        bed.stop()


@pytest.fixture(scope="session")
def converged(testbed: Testbed) -> Testbed:
    """The testbed after a first apply of the bundled specs (asserted by test_converge_from_bare_hosts too)."""
    result = reconciler("apply", str(SPECS))
    assert result.code == 0, result.out + result.err
    return testbed


@pytest.fixture
def spec_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled specs, for tests that change desired state."""
    dest = tmp_path / "specs"
    shutil.copytree(SPECS, dest)
    return dest
