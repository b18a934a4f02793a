"""backup/etcd_snapshot.sh's room check, run with bash here: a member whose database would not fit in /var/tmp with
64 MiB to spare is refused before `etcdctl snapshot save` writes anything; a size that is not a number counts as
unknown (0), never as arithmetic."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.backup.take import SCRIPT

pytestmark = pytest.mark.host


def run(dbsize: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The script with an etcdctl of the test's that says the member refused (no etcd is asked)."""
    stub = tmp_path / "bin" / "etcdctl"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text("#!/bin/sh\necho 'connection refused' >&2\nexit 1\n")
    stub.chmod(0o755)
    return subprocess.run(
        ["bash", "-c", SCRIPT, "reconciler-etcd-snapshot", "http://127.0.0.1:9", "-", "-", "-", dbsize],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{stub.parent}:/usr/bin:/bin"},
    )


def test_a_database_that_would_not_fit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    before = set(Path("/var/tmp").glob("reconciler-etcd-snapshot.*"))
    said = run(str(10**17), tmp_path)  # 100 PB
    assert said.returncode == 4 and "@@ERR /var/tmp has" in said.stderr and "needs that and 64 MiB" in said.stderr
    assert set(Path("/var/tmp").glob("reconciler-etcd-snapshot.*")) == before


@pytest.mark.parametrize("dbsize", ["0", "a[$(touch /tmp/reconciler-pwned)]", ""])
def test_a_size_that_is_not_a_number_is_not_evaluated(dbsize: str, tmp_path: Path) -> None:
    said = run(dbsize, tmp_path)
    assert "@@ERR etcdctl snapshot save failed" in said.stderr  # got past the room check: the port is closed
    assert not Path("/tmp/reconciler-pwned").exists()
