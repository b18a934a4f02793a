"""engine.rollouts: the one rule for rolling back a failed restart, whichever path the restart took."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.apply.executor import ApplyLog
from reconciler.engine.rollouts import Rollouts
from reconciler.errors import HostError, NotLeader, TransientHostError
from reconciler.spec.isolate import load_desired

CONF = "/etc/etcd/etcd.conf"


def applied_with_backup() -> ApplyLog:
    applied = ApplyLog("master-1")
    applied.backups[CONF] = "/var/backups/reconciler/etc/etcd/etcd.conf/1"
    applied.backups["/etc/kubernetes/config"] = None  # written for another unit: not etcd's to put back
    return applied


@pytest.mark.parametrize(
    ("case", "failure", "restarted", "glass", "want"),
    [
        ("the restart failed", HostError("exit 1"), True, False, [CONF]),
        ("the health check failed after it", None, True, False, [CONF]),
        ("a write failed before it", HostError("no space"), False, False, []),
        ("the connection broke", TransientHostError("cut", ssh=True), True, False, []),
        ("the actor lost its lock or leadership", NotLeader("deposed"), True, False, []),
        ("the glass is broken for etcd", HostError("exit 1"), True, True, []),
    ],
)
def test_should_roll_back(
    specs: Path, case: str, failure: HostError | None, restarted: bool, glass: bool, want: list[str]
) -> None:
    desired = load_desired(specs)
    etcd = next(u for u in desired.hosts["master-1"].units if u.name == "etcd.service")
    rollouts = Rollouts(break_glass=glass)
    assert rollouts.should_roll_back(desired, etcd, applied_with_backup(), failure, restarted) == want, case


def test_a_unit_with_rollback_off_is_never_rolled_back(specs: Path) -> None:
    desired = load_desired(specs)
    etcd = next(u for u in desired.hosts["master-1"].units if u.name == "etcd.service")
    off = type(etcd)(**{**etcd.__dict__, "rollback": False})
    assert Rollouts().should_roll_back(desired, off, applied_with_backup(), HostError("exit 1"), True) == []


def test_the_glass_relaxes_etcd_only(specs: Path) -> None:
    desired = load_desired(specs)
    units = {u.name: u for u in desired.hosts["master-1"].units}
    glass = Rollouts(break_glass=True)
    assert glass.glass(desired, units["etcd.service"]) and not glass.glass(desired, units["kube-apiserver.service"])
