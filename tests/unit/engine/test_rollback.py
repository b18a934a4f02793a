"""Rollback on in-process hosts (reconciler.transport.fake): what a rolled-back config leaves behind.

A file that several units read, edited so that only one of them fails on it: the failed unit is rolled back,
and from then on the host sees no action at all for that content (no write, no restart of any reader) pass
after pass, until the specs change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.engine.converge import reconcile_host
from reconciler.engine.held import Held
from reconciler.engine.rollouts import Rollouts
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session

REPO = Path(__file__).resolve().parents[3]
APISERVER = "kube-apiserver.service"
SHARED = "/etc/kubernetes/config"


def breaking(specs: Path, value: str) -> None:
    """An edit of the file every kube component reads (that only kube-apiserver cannot start with)."""
    kube = specs / "kubernetes.yaml"
    kube.write_text(re.sub(r'KUBE_LOG_LEVEL="--v=\d+"', f'KUBE_LOG_LEVEL="--v={value}"', kube.read_text()))


def apiserver_fails_on(value: str) -> Callable[[SimHost], bool]:
    return lambda host: f"--v={value}".encode() in host.files[SHARED].content


async def test_a_rolled_back_shared_file_brings_no_action_on_later_passes(specs: Path) -> None:
    desired = load_desired(specs)
    host = SimHost("master-1")
    session = Session(fake_connector({"master-1": host}))
    rollouts = Rollouts()
    first = await reconcile_host(desired, "master-1", session, rollouts, wait=1.0, interval=0.01)
    assert first.status == "converged", first.error

    breaking(specs, "7")
    host.fails[APISERVER] = apiserver_fails_on("7")
    changed = load_desired(specs)
    rolled = await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01, changed=True)
    assert rolled.status == "rolled-back", rolled.error
    assert b"--v=0" in host.files[SHARED].content and host.units[APISERVER].active

    changes, restarts = host.changes, list(host.restarted)
    for _ in range(5):
        again = await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01)
        assert again.status == "rolled-back" and "held" in again.error, again.error
        assert again.applied == ()
    assert host.changes == changes, "a held file made a later pass act on the host"
    assert host.restarted == restarts  # kube-controller-manager and kube-scheduler included

    breaking(specs, "2")  # new specs: the new content gets its chance, every reader restarts once
    fixed = load_desired(specs)
    done = await reconcile_host(fixed, "master-1", session, rollouts, wait=1.0, interval=0.01, changed=True)
    assert done.status == "converged", done.error
    assert sorted(u for _, u in host.restarted[len(restarts) :]) == [
        "kube-apiserver.service",
        "kube-controller-manager.service",
        "kube-scheduler.service",
    ]


async def test_a_rolled_back_unit_file_brings_no_daemon_reload_on_later_passes(specs: Path) -> None:
    unit_file = "/usr/lib/systemd/system/kube-apiserver.service"
    desired = load_desired(specs)
    host = SimHost("master-1")
    session = Session(fake_connector({"master-1": host}))
    rollouts = Rollouts()
    assert (await reconcile_host(desired, "master-1", session, rollouts, wait=1.0, interval=0.01)).status == "converged"

    kube = specs / "kubernetes.yaml"
    text = kube.read_text()
    anchor = "    EnvironmentFile=-/etc/kubernetes/apiserver\n"
    assert text.count(anchor) == 1
    kube.write_text(text.replace(anchor, anchor + "    Environment=BROKEN=1\n"))
    host.fails[APISERVER] = lambda h: b"BROKEN=1" in h.files[unit_file].content
    changed = load_desired(specs)
    rolled = await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01, changed=True)
    assert rolled.status == "rolled-back", rolled.error
    assert b"BROKEN" not in host.files[unit_file].content and host.units[APISERVER].active

    changes = host.changes
    for _ in range(3):
        again = await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01)
        assert again.status == "rolled-back" and again.applied == (), again.applied
    assert host.changes == changes


@pytest.mark.parametrize("unit", ["kube-apiserver.service", "etcd.service"])
async def test_a_rollback_whose_fence_is_lost_acts_no_more(specs: Path, unit: str) -> None:
    """The fence (leadership, restart lock) is lost, etcd showing another actor, while the restart on the new config
    fails: the rollback restores nothing, restarts nothing, and says what it left."""
    desired = load_desired(specs)
    hosts = {name: SimHost(name) for name in desired.hosts}
    session = Session(fake_connector(hosts))
    rollouts = Rollouts()
    for name in desired.hosts:
        assert (await reconcile_host(desired, name, session, rollouts, wait=1.0, interval=0.01)).status == "converged"

    lost = False

    async def fence() -> bool:
        return not lost

    async def deposed() -> bool:  # etcd answers: another actor leads, or holds the lock
        return lost

    def fails(host: SimHost) -> bool:
        nonlocal lost
        lost = b"=123" in host.files[path].content  # the fence is lost as the restart on the new config fails
        return lost

    if unit == "etcd.service":
        path, conf = "/etc/etcd/etcd.conf", specs / "etcd.yaml"
        conf.write_text(conf.read_text().replace("ETCD_HEARTBEAT_INTERVAL: 100", "ETCD_HEARTBEAT_INTERVAL: 123"))
    else:
        path, conf = SHARED, specs / "kubernetes.yaml"
        conf.write_text(conf.read_text().replace('KUBE_LOG_LEVEL="--v=0"', 'KUBE_LOG_LEVEL="--v=1234"'))
    host = hosts["master-1"]
    host.fails[unit] = fails
    rollouts.fence, rollouts.deposed = fence, deposed
    changed = load_desired(specs)
    restarts = list(host.restarted)
    outcome = await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01, changed=True)
    assert outcome.status == "failed", outcome.error
    assert f"rollback of {unit} not done: lock lost" in outcome.error and f"still new: {path}" in outcome.error
    assert b"=123" in host.files[path].content  # nothing restored
    assert [u for _, u in host.restarted[len(restarts) :]] == [unit]  # the failed restart only, none to roll back
    assert not host.units[unit].active


async def test_what_was_held_is_still_held_after_the_daemon_restarts(specs: Path, tmp_path: Path) -> None:
    desired = load_desired(specs)
    host = SimHost("master-1")
    session = Session(fake_connector({"master-1": host}))
    state = tmp_path / "state" / "held.json"
    rollouts = Rollouts(Held(state))
    assert (await reconcile_host(desired, "master-1", session, rollouts, wait=1.0, interval=0.01)).status == "converged"
    breaking(specs, "7")
    host.fails[APISERVER] = apiserver_fails_on("7")
    changed = load_desired(specs)
    rolled = await reconcile_host(changed, "master-1", session, rollouts, wait=0.2, interval=0.01, changed=True)
    assert rolled.status == "rolled-back", rolled.error

    changes = host.changes
    restarted = Rollouts(Held(state))  # a new daemon process on the same state dir
    again = await reconcile_host(changed, "master-1", session, restarted, wait=0.2, interval=0.01, changed=True)
    assert again.status == "rolled-back" and "held" in again.error, again.error
    assert host.changes == changes  # the bad config was not tried once more


async def test_a_rollback_reports_no_secret_its_unit_wrote_to_the_journal(specs: Path) -> None:
    """Issue 26: the message copied up to 300 characters of the unit's journal into /status and the logs."""
    desired = load_desired(specs)
    host = SimHost("master-1")
    session = Session(fake_connector({"master-1": host}))
    rollouts = Rollouts()
    assert (await reconcile_host(desired, "master-1", session, rollouts, wait=1.0, interval=0.01)).status == "converged"
    breaking(specs, "7")
    host.fails[APISERVER] = apiserver_fails_on("7")
    token = "0b3c2a7e5f1d4c6b9a8e7d6c5b4a3f2e"  # the bundled token.csv's, which kube-apiserver reads
    host.journal[APISERVER] = [
        "starting",
        f"error: cannot reach postgres://kube:pa55-w0rd-xyz@db:5432, token {token} refused, DB_PASSWORD=hunter22",
    ]
    rolled = await reconcile_host(load_desired(specs), "master-1", session, rollouts, wait=0.2, interval=0.01)
    assert rolled.status == "rolled-back" and "kube-apiserver.service said: error: cannot reach" in rolled.error
    for secret in ("pa55-w0rd-xyz", token, "hunter22"):
        assert secret not in rolled.error


async def test_a_unit_started_with_a_sensitive_file_has_its_journal_withheld(specs: Path) -> None:
    kube = specs / "kubernetes.yaml"
    text = kube.read_text()
    anchor = "  name: kube-apiserver-env\nspec:\n  path: /etc/kubernetes/apiserver\n"
    assert text.count(anchor) == 1
    kube.write_text(text.replace(anchor, anchor + "  sensitive: true\n"))  # its flags hold a secret
    desired = load_desired(specs)
    host = SimHost("master-1")
    session = Session(fake_connector({"master-1": host}))
    rollouts = Rollouts()
    assert (await reconcile_host(desired, "master-1", session, rollouts, wait=1.0, interval=0.01)).status == "converged"
    breaking(specs, "7")
    host.fails[APISERVER] = apiserver_fails_on("7")
    host.journal[APISERVER] = ["flags: --etcd-password=plain-and-simple"]
    rolled = await reconcile_host(load_desired(specs), "master-1", session, rollouts, wait=0.2, interval=0.01)
    assert rolled.status == "rolled-back" and "plain-and-simple" not in rolled.error
    assert "kube-apiserver.service said: (not shown: it is started with sensitive files" in rolled.error
