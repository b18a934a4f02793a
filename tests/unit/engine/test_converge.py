"""The engine's logic on in-process hosts (reconciler.transport.fake), in milliseconds: a host that is down
fails alone, the quorum guard refuses a turn while a peer is unhealthy and the rollout then restarts one
member at a time, and the daemon converges the fleet, backs a down host off and converges it once it is up.

The testbed tests prove the same against real systemd hosts; these pin the logic around them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from reconciler.apply.executor import action_argv
from reconciler.engine.converge import converge
from reconciler.engine.daemon import Daemon
from reconciler.plan.actions import Kind
from reconciler.settings import DaemonSettings
from reconciler.spec.desired import DesiredState
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session

REPO = Path(__file__).resolve().parents[3]
ETCD = "etcd.service"


def fleet(desired: DesiredState) -> dict[str, SimHost]:
    return {name: SimHost(name) for name in desired.hosts}


def restarts(hosts: dict[str, SimHost]) -> list[str]:
    """The hosts whose etcd was restarted, in order."""
    return [name for _, name in sorted((t, n) for n, h in hosts.items() for t, unit in h.restarted if unit == ETCD)]


async def test_a_host_that_is_down_fails_alone(specs: Path) -> None:
    desired = load_desired(specs)
    hosts = fleet(desired)
    result = await converge(desired, Session(fake_connector(hosts, down={"master-2"})), wait=1.0, interval=0.01)
    status = {n: o.status for n, o in result.outcomes.items()}
    assert status == {"master-1": "converged", "master-2": "failed", "master-3": "converged"}
    assert result.outcomes["master-2"].ssh_error and "connection refused" in result.outcomes["master-2"].error
    assert not hosts["master-2"].files and hosts["master-1"].units[ETCD].active


async def test_the_guard_refuses_a_turn_while_a_peer_is_down_then_members_restart_one_at_a_time(specs: Path) -> None:
    desired = load_desired(specs)
    hosts = fleet(desired)
    assert {
        o.status
        for o in (await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)).outcomes.values()
    } == {"converged"}
    conf = specs / "etcd.yaml"
    conf.write_text(conf.read_text().replace("ETCD_HEARTBEAT_INTERVAL: 100", "ETCD_HEARTBEAT_INTERVAL: 150"))
    changed = load_desired(specs)
    before = hosts["master-1"].files["/etc/etcd/etcd.conf"].content

    hosts["master-2"].units[ETCD].active = False  # a peer's etcd is down: master-1's turn must not begin
    result = await converge(changed, Session(fake_connector(hosts)), wait=1.0, interval=0.01, only=["master-1"])
    outcome = result.outcomes["master-1"]
    assert outcome.status == "failed" and "other member(s) unhealthy: master-2" in outcome.error, outcome.error
    assert hosts["master-1"].files["/etc/etcd/etcd.conf"].content == before  # the staged write waited too
    assert restarts(hosts) == []

    hosts["master-2"].units[ETCD].active = True
    result = await converge(changed, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert {n: o.status for n, o in result.outcomes.items()} == dict.fromkeys(hosts, "converged")
    assert sorted(restarts(hosts)) == sorted(hosts)  # each member exactly once, one after the other
    assert all(b"ETCD_HEARTBEAT_INTERVAL=150" in h.files["/etc/etcd/etcd.conf"].content for h in hosts.values())


async def test_breaking_the_glass_restarts_without_the_guard_or_a_wait(specs: Path) -> None:
    desired = load_desired(specs)
    hosts = fleet(desired)
    await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    conf = specs / "etcd.yaml"
    conf.write_text(conf.read_text().replace("ETCD_HEARTBEAT_INTERVAL: 100", "ETCD_HEARTBEAT_INTERVAL: 150"))
    changed = load_desired(specs)
    for peer in ("master-2", "master-3"):  # etcd has lost quorum: the guard would refuse every turn
        hosts[peer].units[ETCD].active = False
    session = Session(fake_connector(hosts))
    result = await converge(changed, session, wait=0.1, interval=0.01, only=["master-1"], break_glass=True)
    assert restarts(hosts) == ["master-1"], result.outcomes["master-1"].error
    assert b"ETCD_HEARTBEAT_INTERVAL=150" in hosts["master-1"].files["/etc/etcd/etcd.conf"].content
    restart = next(a for a in result.outcomes["master-1"].applied if a.kind is Kind.RESTART)
    assert restart.no_block and action_argv(restart, changed.hosts["master-1"], "x")[0] == [
        "systemctl",
        "restart",
        "--no-block",
        "--",
        ETCD,
    ]  # queued: a member without quorum never becomes ready, and the next must not wait for it


async def test_the_daemon_converges_the_fleet_backs_off_a_down_host_and_converges_it_when_up(
    specs: Path, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = DaemonSettings(
        spec_dir=specs,
        state_dir=tmp_path / "state",
        listen_port=port,
        resync_interval=3600,
        backoff_base=0.05,
        backoff_cap=0.2,
        verify_wait=1.0,
        shutdown_timeout=5,
    )
    hosts = fleet(load_desired(specs))
    down = {"master-3"}
    daemon = Daemon(settings, connector=fake_connector(hosts, down))
    task = asyncio.create_task(daemon.run())

    async def until(what: str, condition) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {daemon.ledger.records}"
            assert not task.done(), task
            await asyncio.sleep(0.01)

    records = daemon.ledger.records
    try:
        await until(
            "master-1 and master-2 to converge and master-3 to back off a few times",
            lambda: (
                all(n in records and records[n].status == "converged" for n in ("master-1", "master-2"))
                and "master-3" in records
                and records["master-3"].failures >= 3
            ),
        )
        assert records["master-3"].status == "failed" and records["master-3"].retry_in_seconds is not None
        assert hosts["master-1"].units[ETCD].active and not hosts["master-3"].files
        down.clear()
        await until("master-3 to converge once it is up", lambda: records["master-3"].status == "converged")
        assert records["master-3"].failures == 0 and hosts["master-3"].units[ETCD].active
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 30) == 0


async def test_a_format_only_spec_edit_is_written_and_restarts_nothing_then_or_later(specs: Path) -> None:
    desired = load_desired(specs)
    hosts = fleet(desired)
    await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    started = {n: list(h.restarted) for n, h in hosts.items()}
    kube = specs / "kubernetes.yaml"
    old = '    KUBE_SCHEDULER_ARGS="--leader-elect=true --address=127.0.0.1"'
    assert old in kube.read_text()
    kube.write_text(kube.read_text().replace(old, "    # reformatted\n" + old.replace('"', "'")))
    result = await converge(load_desired(specs), Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    for outcome in result.outcomes.values():
        assert [a.headline() for a in outcome.applied] == [
            "~ write /etc/kubernetes/scheduler: format only, no restart: kube-scheduler.service read(s) the same "
            "(File/kube-scheduler-env)"
        ]
    assert all(b"# reformatted" in h.files["/etc/kubernetes/scheduler"].content for h in hosts.values())
    again = await converge(load_desired(specs), Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert all(not o.applied and o.status == "converged" for o in again.outcomes.values())
    assert {n: list(h.restarted) for n, h in hosts.items()} == started


async def test_a_pass_after_a_spec_change_looks_at_the_checks_after_applying_only(specs: Path) -> None:
    """A host whose desired state changed observes without its checks first (it most likely has work, and the
    look after applying has them): on a converged host that is two looks, and it still ends converged with every
    check seen; an unchanged host's pass is one look, checks included."""
    from reconciler.engine.converge import reconcile_host
    from reconciler.engine.rollouts import Rollouts

    desired = load_desired(specs)
    hosts = fleet(desired)
    session = Session(fake_connector(hosts))
    await converge(desired, session, wait=1.0, interval=0.01)
    host = hosts["master-1"]
    for changed, looks in ((False, 1), (True, 2)):
        before = host.commands
        outcome = await reconcile_host(
            desired, "master-1", session, Rollouts(), wait=1.0, interval=0.01, changed=changed
        )
        assert outcome.status == "converged" and host.commands - before == looks, (changed, outcome)
        assert outcome.snapshot is not None and len(outcome.snapshot.checks) == len(desired.hosts["master-1"].checks)
