"""Host-side plumbing of the testbed: commands, processes, mounts and the bridge.

Owns every direct interaction with the machine that runs the testbed (not the booted hosts): running
commands with argument lists, running work in parallel threads, finding and stopping systemd-nspawn
processes by pid, listing and unmounting mounts, creating and deleting the bridge.
Called by rootfs, host, hosts and cleanup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from testbed.layout import BRIDGE, GATEWAY, PREFIX_LEN

T = TypeVar("T")
R = TypeVar("R")


def run(args: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; raise with its stderr in the message on failure."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def parallel(func: Callable[[T], R], items: list[T]) -> list[R]:
    """Run func over items in threads, return results in order; re-raise the first failure."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(func, items))


# --- processes ---------------------------------------------------------------------------------------


def process_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of `pid`, or None if it does not exist or is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # fields after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether `pid` runs (not a zombie), and, if given, is the process that started at `start_time`."""
    current = process_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def wait_gone(pid: int, start_time: int | None, timeout: float) -> bool:
    """Poll until the process is gone; True if it went away within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while is_alive(pid, start_time):
        if time.monotonic() >= deadline:
            return False
        try:  # reap it if it happens to be our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return True


def terminate(pid: int, start_time: int | None, timeout: float = 30) -> None:
    """SIGTERM a process, wait for it to exit, SIGKILL it if it does not within `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        if not is_alive(pid, start_time):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_gone(pid, start_time, wait):
            return
    raise RuntimeError(f"process {pid} did not exit after SIGKILL")


# --- mounts ------------------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below `directory`, deepest first."""
    base = os.path.realpath(directory)
    found: list[Path] = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = _unescape(line.split()[1])
        if target == base or target.startswith(base.rstrip("/") + "/"):
            found.append(Path(target))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def testbed_host_dirs() -> list[Path]:
    """Host dirs of every testbed overlay mounted on this machine, whatever its state dir.

    A testbed overlay is mounted at HOST/root with lowerdir=/ and upperdir=HOST/upper.
    """
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _source, target, fstype, options = line.split()[:4]
        target = _unescape(target)
        host_dir = os.path.dirname(target)
        opts = options.split(",")
        if (
            fstype == "overlay"
            and os.path.basename(target) == "root"
            and "lowerdir=/" in opts
            and f"upperdir={host_dir}/upper" in opts
        ):
            found.append(Path(host_dir))
    return found


def is_mounted(path: Path) -> bool:
    return Path(os.path.realpath(path)) in mounts_under(path)


def unmount(path: Path, timeout: float = 10) -> None:
    """Unmount `path` (all stacked mounts), retrying while busy, falling back to a lazy unmount."""
    deadline = time.monotonic() + timeout
    while is_mounted(path):
        proc = run(["umount", str(path)], check=False)
        if proc.returncode == 0:
            continue
        if time.monotonic() >= deadline:
            run(["umount", "-l", str(path)])
        else:
            time.sleep(0.1)


# --- bridge ------------------------------------------------------------------------------------------


def bridge_exists(name: str = BRIDGE) -> bool:
    return Path("/sys/class/net", name).exists()


def create_bridge(name: str = BRIDGE, address: str = GATEWAY) -> None:
    run(["ip", "link", "add", name, "type", "bridge"])
    run(["ip", "addr", "add", f"{address}/{PREFIX_LEN}", "dev", name])
    run(["ip", "link", "set", name, "up"])


def delete_bridge(name: str = BRIDGE) -> None:
    if bridge_exists(name):
        run(["ip", "link", "del", name])
