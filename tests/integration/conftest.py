"""Integration fixtures: one 3-host testbed for the session, the testbed after a first apply, a copy of the specs,
the daemon in a process of its own. What tests build on lives in tests/support."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed import Testbed
from tests.support.cli import reconciler
from tests.support.daemon import RunningDaemon
from tests.support.specs import BUNDLED as SPECS

# The CLI and daemons started by tests keep their etcd tuning overlay here, never in /var/lib/reconciler;
# tests that tune pass a --state-dir of their own.
os.environ["RECONCILER_STATE_DIR"] = tempfile.mkdtemp(prefix="reconciler-state-")


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


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[..., RunningDaemon]]:
    started: list[RunningDaemon] = []

    def start(spec_dir: Path, *args: str) -> RunningDaemon:
        daemon = RunningDaemon(spec_dir, tmp_path / f"daemon-{len(started)}.log", *args)
        started.append(daemon)
        # glibc's malloc thresholds pinned at start (reconciler/engine/memory.py; RELIABILITY.md, the soak)
        assert daemon.started is not None
        assert daemon.started["malloc_thresholds_pinned"] is (platform.libc_ver()[0] == "glibc"), daemon.started
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
