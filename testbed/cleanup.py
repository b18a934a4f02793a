"""Clean-up of whatever a testbed left behind under its state directory.

Owns the idempotent teardown used both before a start (an earlier run may have crashed or been left up
by `python -m testbed up`) and by `python -m testbed down`: stop every systemd-nspawn recorded in a pid
file, kill whatever is left in the hosts' cgroups, unmount every mount below the state directory,
delete the bridge.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed import cgroups
from testbed.layout import BRIDGE, StateLayout
from testbed.system import cmdline, delete_bridge, mounts_under, terminate, testbed_host_dirs, unmount


def read_pid_file(path: Path) -> tuple[int, int | None] | None:
    """(pid, start time) recorded in a pid file, or None if it is missing or unreadable."""
    try:
        fields = path.read_text().split()
        return int(fields[0]), int(fields[1]) if len(fields) > 1 else None
    except (OSError, ValueError, IndexError):
        return None


def _wait_reaped(pid: int, timeout: float = 3) -> None:
    """Give init a moment to reap an exited nspawn that is not our child (cosmetic: no zombies left)."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_recorded(pid_file: Path, machine: str, timeout: float = 30) -> None:
    """Stop the systemd-nspawn recorded in `pid_file` if it still runs as that machine; drop the file."""
    record = read_pid_file(pid_file)
    if record is not None:
        pid, start_time = record
        argv = cmdline(pid)
        if argv and "systemd-nspawn" in argv[0] and f"--machine={machine}" in argv:
            terminate(pid, start_time, timeout)
            _wait_reaped(pid)
    pid_file.unlink(missing_ok=True)


def cleanup(state_dir: Path, bridge: str = BRIDGE) -> None:
    """Tear down every leftover of a testbed under `state_dir`; safe to call when nothing is left.

    Only one testbed can run at a time (fixed bridge and addresses), so this also kills the hosts and
    unmounts the overlays of a testbed with another state dir (found through cgroups and /proc/mounts).
    """
    layout = StateLayout(state_dir)
    if layout.run_dir.is_dir():
        pid_files = sorted(layout.run_dir.glob("*.pid"))
        if pid_files:
            with ThreadPoolExecutor(max_workers=len(pid_files)) as pool:
                list(pool.map(lambda f: stop_recorded(f, f.stem), pid_files))
    cgroups.kill_and_remove(cgroups.all_host_cgroups())
    if state_dir.exists():
        for mount_point in mounts_under(state_dir):
            unmount(mount_point)
    for host_dir in testbed_host_dirs():  # hosts of a testbed with another state dir
        for mount_point in mounts_under(host_dir):
            unmount(mount_point)
    delete_bridge(bridge)
