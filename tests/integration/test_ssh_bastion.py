"""A master reached only through another master as its bastion (ProxyJump, issue 28 item 5): master-3 drops SSH
from this machine (a rule in its own network namespace; master-1 may still reach it), and `plan`/`apply` see and
remove its drift through master-1. The rule's counter shows that nothing tried the direct route meanwhile.
(Named to run after test_converge, whose first test needs the hosts bare: the testbed is one for the session.)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import Testbed, TestHost
from testbed.layout import GATEWAY
from tests.support.cli import reconciler

pytestmark = pytest.mark.testbed

RULE = ["INPUT", "-p", "tcp", "--dport", "22", "-s", GATEWAY, "-j", "DROP"]


def inside(host: TestHost) -> int:
    """A process of the host (the first of its nspawn's descendants in another network namespace)."""
    ours = os.readlink("/proc/self/ns/net")
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    pending = [host.pid]
    while pending:
        pid = pending.pop(0)
        try:
            if pid != host.pid and os.readlink(f"/proc/{pid}/ns/net") != ours:
                return pid
        except OSError:
            continue
        pending += sorted(children.get(pid or 0, []))
    raise AssertionError(f"no process of {host.name} found")


def iptables(host: TestHost, *args: str) -> str:
    """iptables in the host's network namespace (this machine's firewall is never touched)."""
    return subprocess.run(
        ["nsenter", "-t", str(inside(host)), "-n", "iptables", *args], check=True, capture_output=True, text=True
    ).stdout


def dropped(host: TestHost) -> int:
    """Packets the rule dropped so far."""
    for line in iptables(host, "-L", "INPUT", "-v", "-n", "-x").splitlines():
        if re.search(rf"DROP .* {re.escape(GATEWAY)} .* tcp dpt:22\b", line):
            return int(line.split()[0])
    raise AssertionError("the rule is gone")


@contextlib.contextmanager
def direct_route_dropped(host: TestHost) -> Iterator[None]:
    """SSH from this machine to `host` dropped in its own network namespace (from the other hosts allowed)."""
    iptables(host, "-I", *RULE)
    try:
        assert not host.port_open(22, timeout=2), "the direct route is still open"
        yield
    finally:
        iptables(host, "-D", *RULE)
    assert host.port_open(22, timeout=5)


def with_ssh_configs(spec_dir: Path, bed: Testbed, configs: dict[str, Path]) -> Path:
    """The spec directory with each Host's sshConfig set: `configs` by host name, `none` for the others (nothing of
    this machine's ~/.ssh/config is read)."""
    inventory = spec_dir / "inventory.yaml"
    text = inventory.read_text()
    for host in bed.hosts:
        via = configs.get(host.name, "none")
        text = text.replace(f"  address: {host.address}\n", f"  address: {host.address}\n  sshConfig: {via}\n")
    assert text.count("sshConfig:") == len(bed.hosts)
    inventory.write_text(text)
    return spec_dir


def test_a_master_behind_a_bastion_is_planned_and_converged_through_it(
    converged: Testbed, spec_copy: Path, tmp_path: Path
) -> None:
    m1, m3 = converged.hosts[0], converged.hosts[2]
    m3.ssh("sed -i 's/--v=0/--v=4/' /etc/kubernetes/config")  # drift, made while the direct route is open
    direct = with_ssh_configs(Path(shutil.copytree(spec_copy, tmp_path / "direct")), converged, {})
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {m3.address}\n  ProxyJump root@{m1.address}\n")
    via_bastion = with_ssh_configs(spec_copy, converged, {m3.name: config})

    with direct_route_dropped(m3):
        cut = reconciler("plan", str(direct), "--host", m3.name, "--connect-attempts", "1")
        assert cut.code == 1 and "master-3: FAILED: root@198.18.0.13:22: cannot connect: TimeoutError" in cut.out, (
            cut.out + cut.err
        )
        before = dropped(m3)
        plan = reconciler("plan", str(via_bastion))
        assert plan.code == 2, plan.out + plan.err
        assert "master-3" in plan.out and "/etc/kubernetes/config" in plan.out and "--v=4" in plan.out
        applied = reconciler("apply", str(via_bastion))
        assert applied.code == 0, applied.out + applied.err
        again = reconciler("plan", str(via_bastion))
        assert again.code == 0, again.out + again.err
        assert dropped(m3) == before  # every connection to master-3 went through master-1
    assert "--v=0" in m3.ssh("cat /etc/kubernetes/config").stdout
