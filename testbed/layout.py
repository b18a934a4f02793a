"""Names, addresses and on-disk layout of the testbed.

Owns the fixed network plan (bridge, gateway, per-host addresses and names) and where every file of a
testbed lives under its state directory. Pure values: nothing here touches the system.
Used by every other testbed module and by tests that need to know the addresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BRIDGE = "rcbr0"
GATEWAY = "198.18.0.1"
VIP = "198.18.0.100"  # the HA front's virtual IP (testbed.ha), named by the apiserver certificate too
PREFIX_LEN = 24
DEFAULT_STATE_DIR = Path("/run/reconciler-testbed")


def host_name(index: int) -> str:
    """Name of host `index` (1-based): master-1, master-2, ..."""
    if index < 1:
        raise ValueError(f"host index is 1-based, got {index}")
    return f"master-{index}"


def host_address(index: int) -> str:
    """IPv4 address of host `index` (1-based) on the testbed bridge."""
    if not 1 <= index <= 200:
        raise ValueError(f"host index out of range: {index}")
    return f"198.18.0.{10 + index}"


def moved_address(index: int) -> str:
    """A second address for host `index` (1-based, at most 20): where a test moves a master's "new machine" (the
    kubernetes certificate names it too)."""
    if not 1 <= index <= 20:
        raise ValueError(f"host index out of range for a moved address: {index}")
    return f"198.18.0.{230 + index}"


@dataclass(frozen=True)
class StateLayout:
    """Paths of one testbed's state directory.

    state_dir/
      ssh/id_ed25519{,.pub}, ssh/known_hosts   client key and pinned host keys
      pki/                                     CA and kubernetes certificate (copy of what hosts get)
      hosts/NAME/                              tmpfs mount point holding upper/ work/ root/
      run/NAME.pid                             "pid starttime" of the host's systemd-nspawn
      logs/NAME.log                            systemd-nspawn console output
    """

    state_dir: Path

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def key_path(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def hosts_dir(self) -> Path:
        return self.state_dir / "hosts"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def host_dir(self, name: str) -> Path:
        return self.hosts_dir / name

    def host_root(self, name: str) -> Path:
        return self.host_dir(name) / "root"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"
