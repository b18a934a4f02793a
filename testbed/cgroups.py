"""One cgroup per testbed host, so that the hosts' systemd instances do not share one cgroup tree.

Without a systemd on this machine, `systemd-nspawn --keep-unit` puts every container under the cgroup the
caller is in (here "/payload"), so on cgroup v1/hybrid all hosts share /payload/system.slice/...: one host
stopping a unit empties, kills or removes the cgroup another host's unit lives in, and a host's shutdown
hangs waiting for a cgroup that never empties. This module gives each host its own parent cgroup
(/reconciler-testbed/NAME in the name=systemd and unified hierarchies, or in the single v2 hierarchy),
builds the command prefix that moves systemd-nspawn there before it execs, and kills whatever is left in
those cgroups (e.g. a container orphaned by a SIGKILLed nspawn). Called by hosts and cleanup.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
PARENT = "reconciler-testbed"

# Moves this shell into every cgroup.procs file given before "--", then execs the command after it.
_ENTER_AND_EXEC = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 1; shift; done; shift; exec "$@"'


def hierarchies() -> list[Path]:
    """Roots of the hierarchies systemd tracks processes in (v2 alone, or name=systemd + unified)."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]
    return [p for p in (CGROUP_FS / "systemd", CGROUP_FS / "unified") if (p / "cgroup.procs").exists()]


def host_cgroups(name: str) -> list[Path]:
    return [root / PARENT / name for root in hierarchies()]


def all_host_cgroups() -> list[Path]:
    """Every host cgroup present, from any testbed run."""
    return [d for root in hierarchies() if (root / PARENT).is_dir() for d in (root / PARENT).iterdir() if d.is_dir()]


def spawn_prefix(name: str) -> list[str]:
    """Create the host's cgroups; return a prefix that runs the following command inside them."""
    procs = []
    for cgroup in host_cgroups(name):
        cgroup.mkdir(parents=True, exist_ok=True)
        procs.append(str(cgroup / "cgroup.procs"))
    return ["sh", "-c", _ENTER_AND_EXEC, "sh", *procs, "--"]


def _pids(cgroup: Path) -> set[int]:
    pids: set[int] = set()
    for procs in cgroup.rglob("cgroup.procs"):
        try:
            pids.update(int(line) for line in procs.read_text().split() if line != "0")
        except OSError:
            pass
    return pids


def _remove_tree(cgroup: Path) -> None:
    for directory in sorted((d for d in cgroup.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True) + [
        cgroup
    ]:
        try:
            directory.rmdir()
        except OSError:
            pass


def kill_and_remove(cgroups: list[Path], timeout: float = 10) -> None:
    """SIGKILL every process left in `cgroups` (recursively), wait until they are gone, remove the dirs."""
    deadline = time.monotonic() + timeout
    while True:
        pids = set().union(*(_pids(c) for c in cgroups if c.is_dir()))
        if not pids or time.monotonic() >= deadline:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    for cgroup in cgroups:
        if cgroup.is_dir():
            _remove_tree(cgroup)
        try:  # the shared parent, once no host is left in it
            cgroup.parent.rmdir()
        except OSError:
            pass
