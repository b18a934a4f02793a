"""A host's root filesystem: an overlay over `/`, customised before boot.

Owns mounting (tmpfs at the host dir, overlay with lowerdir=/ at root/) and unmounting, and everything
written into a root before its first boot: unwanted service links removed, old etcd/kubernetes state
removed, hostname and machine-id, a fresh ssh host key, root's authorized key and shell files, the
network unit, the PKI and the Kubernetes binaries (testbed.kube: the stand-ins or the real ones). Called by Testbed.start().
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from testbed import kube, pki
from testbed.layout import PREFIX_LEN
from testbed.system import is_mounted, run, unmount

KEEP_SERVICES = {"ssh.service"}
NET_UNIT = "tb-net.service"

_NET_UNIT_TEXT = """\
[Unit]
Description=Testbed network address on host0
Before=network.target ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/ip addr add {address}/{prefix} dev host0
ExecStart=/usr/sbin/ip link set host0 up

[Install]
WantedBy=multi-user.target
"""


def mount(host_dir: Path) -> Path:
    """Mount a tmpfs at `host_dir` and an overlay (lower layer `/`) at host_dir/root; return the root."""
    host_dir.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(host_dir)])
    upper, work, root = (host_dir / d for d in ("upper", "work", "root"))
    for directory in (upper, work, root):
        directory.mkdir()
    run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir=/,upperdir={upper},workdir={work}", str(root)])
    return root


def umount(host_dir: Path) -> None:
    """Unmount the overlay and the tmpfs of a host (whatever of them is mounted)."""
    for path in (host_dir / "root", host_dir):
        if path.exists() and is_mounted(path):
            unmount(path)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def disable_services(root: Path) -> None:
    """Remove every enabled service and timer of the image except ssh, and aliases of removed services."""
    system = root / "etc/systemd/system"
    removed_targets: set[str] = set()
    for wants in system.glob("*.wants"):
        for link in wants.iterdir():
            unwanted = (
                wants.name == "multi-user.target.wants"
                and link.name.endswith(".service")
                and link.name not in KEEP_SERVICES
            ) or wants.name == "timers.target.wants"
            if unwanted and link.is_symlink():
                removed_targets.add(os.readlink(link))
                link.unlink()
    for alias in system.iterdir():
        if alias.is_symlink() and alias.suffix == ".service" and os.readlink(alias) in removed_targets:
            alias.unlink()


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def prepare(
    root: Path, *, name: str, address: str, authorized_key: str, pki_dir: Path, kube_kind: str = "standins"
) -> str:
    """Customise a freshly mounted root for host `name`; return its public ed25519 host key line."""
    disable_services(root)
    for stale in ("etc/etcd", "var/lib/etcd", "etc/kubernetes"):
        _remove(root / stale)
    _write(root / "etc/hostname", f"{name}\n", 0o644)
    _write(root / "etc/machine-id", os.urandom(16).hex() + "\n", 0o444)
    _write(root / "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost\n", 0o644)

    ssh_dir = root / "etc/ssh"
    for old in ssh_dir.glob("ssh_host_*"):
        old.unlink()
    key = ssh_dir / "ssh_host_ed25519_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(key)])

    home = root / "root"
    (home / ".ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / ".ssh").chmod(0o700)
    _write(home / ".ssh/authorized_keys", authorized_key.strip() + "\n", 0o600)
    for dotfile in (".bashrc", ".profile"):
        shutil.copyfile(Path("/etc/skel") / dotfile, home / dotfile)

    system = root / "etc/systemd/system"
    _write(system / NET_UNIT, _NET_UNIT_TEXT.format(address=address, prefix=PREFIX_LEN), 0o644)
    wants = system / "multi-user.target.wants" / NET_UNIT
    wants.parent.mkdir(parents=True, exist_ok=True)
    wants.symlink_to(f"/etc/systemd/system/{NET_UNIT}")

    pki.install(pki_dir, root)
    kube.install(root, kube_kind)
    key_type, key_blob = Path(f"{key}.pub").read_text().split()[:2]
    return f"{key_type} {key_blob}"
