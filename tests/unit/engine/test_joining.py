"""engine.joining: a master moved to a new address, and what waits for its etcd member to vote there. The pure rules
(who is joining on etcd's evidence, which files name an address, what is held on which host), then a pass over
in-process masters whose curl reaches an etcd cluster in memory (tests.support.fake_etcd): the other masters'
apiserver and etcd files keep the old address and nothing is restarted until etcd lists the new member as a voter;
then they follow. The real thing: tests/integration/test_etcd_replace.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.engine.converge import converge
from reconciler.engine.joining import Joining, Member, hold_back, joining, may_hold, names_address
from reconciler.leader.membership import Entry
from reconciler.plan.actions import Action, Kind
from reconciler.spec.desired import DesiredFile, DesiredHost, Target
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.fake_etcd import FakeMember, Master, three_members
from tests.support.simhosts import converged_fleet, restarts
from tests.support.specs import copy_specs

OLD, NEW = "198.18.0.13", "198.18.0.99"
M3 = Member("master-3", "master-3", NEW, "etcd.service", frozenset({f"https|{NEW}|2380"}))


def entry(id: int, name: str, peer: str, learner: bool = False) -> Entry:
    return Entry(id, name, (peer,), (peer.replace("2380", "2379"),) if name else (), learner)


VOTERS = [entry(0x11, "master-1", "https://198.18.0.11:2380"), entry(0x22, "master-2", "https://198.18.0.12:2380")]


# -- who is joining: only on etcd's evidence ------------------------------------------------------------------------


def test_a_member_listed_under_its_name_at_its_old_address_is_joining() -> None:
    said = joining([M3], [*VOTERS, entry(0x33, "master-3", f"https://{OLD}:2380")])
    assert said == [Joining("master-3", NEW, "etcd.service", f"etcd lists it at https://{OLD}:2380")]


def test_a_learner_at_its_peer_url_is_joining_until_promoted() -> None:
    learner = entry(0xA1, "master-3", f"https://{NEW}:2380", learner=True)
    assert [j.why for j in joining([M3], [*VOTERS, learner])] == [f"a learner at https|{NEW}|2380"]
    voter = entry(0xA1, "master-3", f"https://{NEW}:2380")
    assert joining([M3], [*VOTERS, voter]) == []


def test_a_voter_at_its_peer_url_spelled_otherwise_is_not_joining() -> None:
    """etcd writes the URL it was given; the specs may spell the host in capitals or end it with a slash."""
    assert joining([M3], [*VOTERS, entry(0x33, "master-3", f"HTTPS://{NEW}:2380/")]) == []


def test_a_member_etcd_does_not_list_at_all_is_not_held_for() -> None:
    """No evidence that it moved (a cluster growing, a member removed by hand): nothing waits, as before."""
    assert joining([M3], VOTERS) == []
    assert joining([M3], [*VOTERS, entry(0x44, "", "https://198.18.0.50:2380")]) == []  # another, never started


def test_names_address_takes_the_address_whole() -> None:
    assert names_address(b"--etcd-servers=https://198.18.0.99:2379", NEW)
    assert names_address(b"server master-3 198.18.0.99:6443 check", NEW)
    assert not names_address(b"https://198.18.0.9:2379", NEW)
    assert not names_address(b"https://198.18.0.199:2379 and 1198.18.0.99", NEW)
    assert not names_address(b"198.18.0.99.5", NEW)
    assert names_address(b"m3.example,", "m3.example") and not names_address(b"m3.example.org", "m3.example")
    assert not names_address(b"anything", "")


def _host(name: str, files: dict[str, bytes]) -> DesiredHost:
    return DesiredHost(
        Target(name, "198.18.0.11"),
        {p: DesiredFile(p, c, 0o644, "root", "root", False, "File/x") for p, c in files.items()},
    )


APISERVER = "/etc/kubernetes/apiserver"
ETCD_CONF = "/etc/etcd/etcd.conf"


def test_on_another_host_the_writes_naming_the_address_wait_and_what_they_alone_bring() -> None:
    host = _host(
        "master-1", {APISERVER: f"--etcd-servers=https://{NEW}:2379".encode(), "/etc/kubernetes/config": b"--v=2"}
    )
    actions = (
        Action(Kind.WRITE, APISERVER, "content differs"),
        Action(Kind.WRITE, "/etc/kubernetes/config", "content differs"),
        Action(Kind.RESTART, "kube-apiserver.service", "changed", rollout=True, because=(APISERVER,)),
        Action(Kind.RESTART, "kube-scheduler.service", "changed", because=(APISERVER, "/etc/kubernetes/config")),
    )
    j = joining([M3], [*VOTERS, entry(0x33, "master-3", f"https://{OLD}:2380")])
    assert may_hold(host, actions, [M3])
    kept, why = hold_back(host, actions, j)
    assert [a.target for a in kept] == ["/etc/kubernetes/config", "kube-scheduler.service"]
    assert len(why) == 1 and f"{APISERVER} not written yet: each names {NEW}" in why[0]
    assert "reconciler etcd replace-member master-3" in why[0]


def test_on_the_joining_host_only_its_etcd_start_waits() -> None:
    host = _host("master-3", {ETCD_CONF: f"ETCD_INITIAL_ADVERTISE_PEER_URLS=https://{NEW}:2380".encode()})
    actions = (
        Action(Kind.WRITE, ETCD_CONF, "absent"),
        Action(Kind.ENABLE, "etcd.service", "is disabled"),
        Action(Kind.START, "etcd.service", "is inactive"),
        Action(Kind.START, "kube-apiserver.service", "is inactive"),
    )
    j = joining([M3], [*VOTERS, entry(0x33, "master-3", f"https://{OLD}:2380")])
    kept, why = hold_back(host, actions, j)
    assert [a.short() for a in kept] == [
        f"write {ETCD_CONF}",
        "enable etcd.service",
        "start kube-apiserver.service",
    ]  # its files are there for replace-member; etcd itself is started by it, as a learner
    assert why and why[0].startswith("etcd.service not started")


def test_nothing_is_asked_of_etcd_when_no_action_could_wait() -> None:
    host = _host("master-1", {"/etc/kubernetes/config": b"--v=2"})
    actions = (Action(Kind.WRITE, "/etc/kubernetes/config", "content differs"),)
    assert not may_hold(host, actions, [M3])


# -- a pass over in-process masters -----------------------------------------------------------------------------


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    return copy_specs(tmp_path / "specs", ha=False)


async def test_a_moved_master_is_named_by_the_others_only_once_its_member_votes(specs: Path) -> None:
    cluster = three_members()
    hosts = {n: Master(n, cluster) for n in ("master-1", "master-2", "master-3")}
    await converged_fleet(specs, dict[str, SimHost](hosts))
    inventory = specs / "inventory.yaml"
    inventory.write_text(inventory.read_text().replace(f"address: {OLD}", f"address: {NEW}"))
    desired = load_desired(specs)
    session = Session(fake_connector(dict[str, SimHost](hosts)))
    before = {n: restarts(h, "kube-apiserver.service") for n, h in hosts.items()}

    result = await converge(desired, session, wait=0.2, interval=0.01)  # etcd lists master-3 at its old address
    for name in ("master-1", "master-2"):
        outcome = result.outcomes[name]
        assert outcome.status == "pending", outcome.error
        assert f"names {NEW}" in outcome.error and "replace-member master-3" in outcome.error
        assert NEW.encode() not in hosts[name].files[APISERVER].content
        assert NEW.encode() not in hosts[name].files[ETCD_CONF].content
        assert restarts(hosts[name], "kube-apiserver.service") == before[name]
        assert restarts(hosts[name], "etcd.service") == 0
    assert result.outcomes["master-3"].status == "pending"
    assert "etcd.service not started" in result.outcomes["master-3"].error
    assert "pending: " in result.outcomes["master-1"].summary()

    cluster.members[2] = FakeMember(0xA1, "master-3", f"https://{NEW}:2380", f"https://{NEW}:2379")  # promoted
    result = await converge(desired, session, wait=0.2, interval=0.01)
    for name in ("master-1", "master-2"):
        assert f"https://{NEW}:2379".encode() in hosts[name].files[APISERVER].content, result.outcomes[name].error
        assert restarts(hosts[name], "kube-apiserver.service") == before[name] + 1
        assert "names" not in result.outcomes[name].error
