"""With leader election, a replica changes hosts only while it leads: a follower's pass observes and plans,
applies nothing, and is not retried as a failure; a leader that loses the key stops before its next action."""

from __future__ import annotations

from pathlib import Path

from reconciler.engine.converge import FOLLOWER, reconcile_host
from reconciler.engine.rollouts import Rollouts
from reconciler.leader.leadership import etcd_access
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session

SPECS = Path(__file__).resolve().parents[3] / "specs"


async def test_a_follower_applies_nothing() -> None:
    desired = load_desired(SPECS)
    hosts = {n: SimHost(n) for n in desired.hosts}
    rollouts = Rollouts()

    async def never() -> bool:
        return False

    rollouts.fence = never
    outcome = await reconcile_host(desired, "master-1", Session(fake_connector(hosts)), rollouts, wait=0.1)
    assert outcome.status == "pending" and outcome.error == FOLLOWER
    assert outcome.plan is not None and outcome.plan.actions and not outcome.applied
    assert not hosts["master-1"].files and hosts["master-1"].commands == 1  # one observation, nothing else


async def test_a_leader_that_loses_the_key_stops_before_its_next_action() -> None:
    desired = load_desired(SPECS)
    hosts = {n: SimHost(n) for n in desired.hosts}
    rollouts = Rollouts()
    asked = 0

    async def three_times() -> bool:  # leads for the pass's first look and two actions, then not any more
        nonlocal asked
        asked += 1
        return asked <= 3

    rollouts.fence = three_times
    outcome = await reconcile_host(desired, "master-1", Session(fake_connector(hosts)), rollouts, wait=0.1)
    assert outcome.status == "failed" and "stopped before" in outcome.error and "no longer leads" in outcome.error
    assert len(outcome.applied) == 2 and len(hosts["master-1"].files) == 2


async def test_a_converged_host_is_converged_for_a_follower_too() -> None:
    desired = load_desired(SPECS)
    hosts = {n: SimHost(n) for n in desired.hosts}
    session = Session(fake_connector(hosts))
    assert (
        await reconcile_host(desired, "master-1", session, Rollouts(), wait=1.0, interval=0.01)
    ).status == "converged"
    follower = Rollouts()

    async def never() -> bool:
        raise AssertionError("a pass with nothing to do must not ask etcd")

    follower.fence = never
    assert (await reconcile_host(desired, "master-1", session, follower, wait=0.1)).status == "converged"


def test_the_election_goes_to_the_etcd_members_with_the_health_checks_tls_files() -> None:
    access = etcd_access(load_desired(SPECS))
    assert access is not None
    assert access.endpoints == [f"https://198.18.0.{i}:2379" for i in (11, 12, 13)]
    assert (access.ca_file, access.cert_file, access.key_file) == (
        "/etc/kubernetes/ssl/ca.pem",
        "/etc/kubernetes/ssl/kubernetes.pem",
        "/etc/kubernetes/ssl/kubernetes-key.pem",
    )


async def test_a_leader_that_loses_the_key_before_a_start_rolls_nothing_back() -> None:
    """Without the key, the rollback (restore, daemon-reload, restart) would change the host too: it never runs."""
    desired = load_desired(SPECS)
    hosts = {n: SimHost(n) for n in desired.hosts}
    m1 = hosts["master-1"]
    rollouts = Rollouts()

    wanted = len(desired.hosts["master-1"].units)

    async def until_enabled() -> bool:  # the key is lost once every unit is enabled: just before the first start
        return sum(u.enabled for u in m1.units.values()) < wanted

    rollouts.fence = until_enabled
    outcome = await reconcile_host(desired, "master-1", Session(fake_connector(hosts)), rollouts, wait=0.1)
    assert outcome.status == "failed" and "stopped before + start" in outcome.error
    assert outcome.rollbacks == () and "rolling back" not in outcome.error
    assert not any(u.active for u in m1.units.values()) and m1.files  # written, not started, nothing restored
