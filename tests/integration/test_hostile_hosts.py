"""Hostile hosts on the testbed: a symlink planted at a managed path, a host answering garbage or a flood,
and enablement that survives a reboot with Debian's own etcd.service underneath ours.
RELIABILITY.md tabulates these.
"""

from __future__ import annotations

import time

import pytest

from testbed import Testbed, TestHost
from tests.support.cli import reconciler
from tests.support.specs import BUNDLED as SPECS

pytestmark = pytest.mark.testbed

SECRET = "root:$6$s3cret-canary-hash:19000:0:99999:7:::\n"
UNITS = ("etcd.service", "kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service")


def test_a_symlink_at_a_managed_path_is_named_never_followed_and_replaced(converged: Testbed) -> None:
    m2 = converged.hosts[1]
    m2.ssh(
        f"umask 077; printf %s '{SECRET}' > /root/secret; rm -f /etc/kubernetes/scheduler; "
        "ln -s /root/secret /etc/kubernetes/scheduler"
    )
    plan = reconciler("plan", "--host", "master-2", str(SPECS))
    assert plan.code == 2, plan.out + plan.err
    assert (
        "/etc/kubernetes/scheduler: is a symlink to '/root/secret' (not followed): replace with a regular file"
        in plan.out
    )
    assert "s3cret" not in plan.out + plan.err
    applied = reconciler("apply", "--host", "master-2", str(SPECS))
    assert applied.code == 0, applied.out + applied.err
    assert "s3cret" not in applied.out + applied.err
    state = m2.ssh("stat -c '%F %a' /etc/kubernetes/scheduler /root/secret; cat /root/secret").stdout
    assert state.startswith("regular file 644\nregular file 600\n") and SECRET in state  # the target untouched
    backups = m2.ssh("grep -rl s3cret /var/backups/reconciler || true").stdout
    assert backups == ""  # nothing was copied through the link
    assert reconciler("plan", "--host", "master-2", str(SPECS)).code == 0
    m2.ssh("rm -f /root/secret")


@pytest.mark.parametrize("answer", ["garbage", "flood"])
def test_a_host_answering_garbage_or_a_flood_fails_clearly_while_the_others_converge(
    converged: Testbed, answer: str
) -> None:
    """root's login shell (which sshd runs every command with) replaced by a script that ignores the command."""
    m3 = converged.hosts[2]
    script = {
        "garbage": "printf '@@F /etc/kubernetes/config\\n644 root root nope 5\\n@@H x\\n@@U\\nMainPID=x\\n@@END\\n'",
        "flood": "head -c 200000000 /dev/zero",
    }[answer]
    hostile = m3.root / "usr/local/bin/hostile"
    hostile.write_text(f"#!/bin/sh\n{script}\n")
    hostile.chmod(0o755)
    m3.ssh("chsh -s /usr/local/bin/hostile root")
    try:
        began = time.monotonic()
        result = reconciler("plan", "--connect-attempts", "1", str(SPECS))
        took = time.monotonic() - began
        assert result.code == 1, result.out + result.err
        assert "master-1: no changes" in result.out and "master-2: no changes" in result.out
        why = "answered more than" if answer == "flood" else "observation output is garbled"
        assert why in result.out + result.err, result.out + result.err
        assert took < 60  # not the daemon's timing goal: only that a flood is cut, not read to its end
    finally:
        m3.root.joinpath("etc/passwd").write_text(
            m3.root.joinpath("etc/passwd").read_text().replace(":/usr/local/bin/hostile", ":/bin/bash")
        )
    assert reconciler("plan", "--host", "master-3", str(SPECS)).code == 0


def active(host: TestHost) -> dict[str, str]:
    out = host.ssh("systemctl is-active " + " ".join(UNITS), check=False).stdout.split()
    return dict(zip(UNITS, out))


def test_enabled_units_start_at_boot_with_debians_etcd_unit_underneath(converged: Testbed) -> None:
    """Debian's etcd-server ships /lib/systemd/system/etcd.service (Alias=etcd2.service) and enables it on install;
    ours at /etc/systemd/system/etcd.service overrides it, but `systemctl is-enabled etcd` then says `indirect`
    (the alias carries the links), and an `indirect` unit is not started at boot."""
    m1 = converged.hosts[0]
    distro = m1.ssh("systemctl cat etcd.service | head -1; cat /lib/systemd/system/etcd.service").stdout
    assert distro.startswith("# /etc/systemd/system/etcd.service")  # ours, over Debian's ...
    assert "Alias=etcd2.service" in distro  # ... which is still there, with its alias
    m1.ssh(
        "systemctl disable -q etcd.service && ln -sf /lib/systemd/system/etcd.service /etc/systemd/system/etcd2.service"
        " && systemctl daemon-reload"
    )  # the links as the package's postinst leaves them
    assert m1.ssh("systemctl is-enabled etcd.service", check=False).stdout.strip() == "indirect"
    plan = reconciler("plan", "--host", "master-1", str(SPECS))
    assert plan.code == 2 and "+ enable etcd.service: is indirect" in plan.out, plan.out
    assert reconciler("apply", "--host", "master-1", str(SPECS)).code == 0
    states = m1.ssh("systemctl is-enabled " + " ".join(UNITS), check=False).stdout.split()
    assert states == ["enabled"] * 4, states
    m1.stop()  # power off; no reconciler runs until every unit is up again
    m1.start()
    deadline = time.monotonic() + 120
    while (states := active(m1)) != dict.fromkeys(UNITS, "active"):
        assert time.monotonic() < deadline, f"after boot: {states}"
        time.sleep(0.5)
    assert reconciler("plan", "--host", "master-1", str(SPECS)).code == 0
