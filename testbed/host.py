"""One testbed host: reach it over ssh, power it off and boot it again.

Owns a single host's systemd-nspawn process (started in the host's own cgroup, pid recorded in the state
dir so another process can stop it), readiness (ssh answers with strict host-key checking and systemd
finished booting) and the ssh command line. Testbed (hosts.py) creates the hosts and their overlays.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from testbed import cgroups
from testbed.cleanup import read_pid_file, stop_recorded
from testbed.layout import BRIDGE, StateLayout, host_address, host_name
from testbed.system import is_alive, process_start_time

BOOT_TIMEOUT = 90.0
POLL_INTERVAL = 0.25


def _outside_root_fs() -> list[str]:
    """This checkout and its Python, when a host would not see them through its overlay of `/`: on another
    filesystem, or under /tmp (systemd-nspawn mounts a fresh tmpfs there; CI may clone into /tmp).

    Hosts see them at the same paths, so a test can run the reconciler itself as a unit on a host.
    """
    repo = Path(__file__).resolve().parents[1]
    root_dev = os.stat("/").st_dev
    return [
        str(p)
        for p in (repo, Path(sys.base_prefix).resolve())
        if os.stat(p).st_dev != root_dev or p.is_relative_to("/tmp")
    ]


class SSHCommandError(subprocess.CalledProcessError):
    """A command run over ssh exited non-zero; its output is part of the message."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout!r}\nstderr: {self.stderr!r}"


class TestHost:
    """One booted master host: name, address and the merged overlay root seen from this machine."""

    __test__ = False  # not a pytest test class

    def __init__(self, index: int, layout: StateLayout) -> None:
        self.index = index
        self.name = host_name(index)
        self.address = host_address(index)
        self.layout = layout
        self.root: Path = layout.host_root(self.name)
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"TestHost({self.name}, {self.address}, running={self.is_running})"

    # --- commands ----------------------------------------------------------------------------------

    def ssh_args(self) -> list[str]:
        """The ssh command line (without the remote command) that reaches this host."""
        return [
            "ssh",
            "-F",
            "none",
            "-i",
            str(self.layout.key_path),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.layout.known_hosts_path}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
            f"root@{self.address}",
        ]

    def ssh(self, cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `cmd` through root's shell on the host; raise SSHCommandError on non-zero exit if check."""
        args = [*self.ssh_args(), cmd]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise SSHCommandError(proc.returncode, args, proc.stdout, proc.stderr)
        return proc

    # --- power -------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of this host's systemd-nspawn while it runs."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        record = read_pid_file(self.layout.pid_file(self.name))
        return record[0] if record and is_alive(*record) else None

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    def boot(self) -> None:
        """Start systemd-nspawn on the (already prepared and mounted) root; do not wait."""
        if self.is_running:
            raise RuntimeError(f"{self.name} is already running")
        log_path = self.layout.log_file(self.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        veth = f"vb-{self.name}"
        if Path("/sys/class/net", veth).exists():  # an earlier container's link the kernel has not removed yet
            subprocess.run(["ip", "link", "delete", veth], capture_output=True, check=False)
        args = [
            *cgroups.spawn_prefix(self.name),
            "systemd-nspawn",
            "-D",
            str(self.root),
            f"--machine={self.name}",
            "-b",
            f"--network-bridge={BRIDGE}",
            "--register=no",
            "--keep-unit",
            "--link-journal=no",
            "--console=passive",
            *(f"--bind-ro={p}" for p in _outside_root_fs()),
        ]
        with open(log_path, "ab") as log:
            log.write(f"--- boot {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        pid_file = self.layout.pid_file(self.name)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{self._proc.pid} {process_start_time(self._proc.pid) or ''}\n")

    def port_open(self, port: int, timeout: float = 0.5) -> bool:
        """Whether a TCP connect to the host's `port` succeeds (cheap probe before spawning ssh)."""
        try:
            with socket.create_connection((self.address, port), timeout=timeout):
                return True
        except OSError:
            return False

    def wait_ready(self, deadline: float) -> None:
        """Wait until ssh answers and `systemctl is-system-running --wait` is running or degraded."""
        while True:
            if not self.is_running:
                raise RuntimeError(f"{self.name}: systemd-nspawn exited during boot\n{self.log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name} did not answer ssh in time\n{self.log_tail()}")
            try:
                if self.port_open(22) and self.ssh("true", check=False, timeout=min(10.0, remaining)).returncode == 0:
                    break
            except subprocess.TimeoutExpired:
                pass
            time.sleep(POLL_INTERVAL)
        remaining = max(1.0, deadline - time.monotonic())
        state = self.ssh("systemctl is-system-running --wait", check=False, timeout=remaining).stdout.strip()
        if state not in ("running", "degraded"):
            raise RuntimeError(f"{self.name}: system state {state!r} after boot")

    def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Boot this host again from its overlay and wait until it is ready."""
        self.boot()
        self.wait_ready(time.monotonic() + timeout)

    def stop(self, timeout: float = 30) -> None:
        """Power this host off (SIGTERM to systemd-nspawn, wait); the overlay stays mounted."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(10)
            self._proc = None
            self.layout.pid_file(self.name).unlink(missing_ok=True)
        else:
            stop_recorded(self.layout.pid_file(self.name), self.name, timeout)
        cgroups.kill_and_remove(cgroups.host_cgroups(self.name))  # a container orphaned by a killed nspawn

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.layout.log_file(self.name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
