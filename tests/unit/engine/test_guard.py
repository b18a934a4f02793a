"""engine.guard: the quorum guard of one-at-a-time rollouts, on in-process hosts (reconciler.transport.fake).

etcd's guard refuses a member's turn while another member is unhealthy (tests/unit/engine/test_converge.py). A unit
that is not etcd (HAProxy on the HA front, kube-apiserver with a rollout) goes ahead on a member that fails its own
check: restarting it takes nothing away. Without that, a front whose every HAProxy still runs Debian's default
config never came up: each turn was refused for the others' failing checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.engine.converge import converge
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.specs import copy_specs

REPO = Path(__file__).resolve().parents[3]
APISERVER = "kube-apiserver.service"


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    """The bundled specs with kube-apiserver rolled out one host at a time behind its health check."""
    d = copy_specs(tmp_path / "specs")
    kube = d / "kubernetes.yaml"
    anchor = "  restartOn: [kube-config, kube-apiserver-env, token-csv]\n"
    text = kube.read_text()
    assert text.count(anchor) == 1
    rollout = "  rollout: {strategy: OneAtATime, healthCheck: kube-apiserver, timeoutSeconds: 1}\n"
    kube.write_text(text.replace(anchor, anchor + rollout))
    return d


def edit_apiserver(specs: Path) -> None:
    kube = specs / "kubernetes.yaml"
    text = kube.read_text()
    assert text.count("--service-node-port-range=") == 1
    kube.write_text(text.replace("--service-node-port-range=", "--v=2 --service-node-port-range="))


async def converged_fleet(specs: Path) -> dict[str, SimHost]:
    desired = load_desired(specs)
    hosts = {name: SimHost(name) for name in desired.hosts}
    result = await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert {o.status for o in result.outcomes.values()} == {"converged"}
    return hosts


def apiserver_restarts(hosts: dict[str, SimHost]) -> list[str]:
    return sorted(n for n, h in hosts.items() for _, unit in h.restarted if unit == APISERVER)


async def test_a_first_rollout_on_members_that_all_fail_their_check_goes_ahead(specs: Path) -> None:
    hosts = await converged_fleet(specs)
    for host in hosts.values():  # running, but on a config that answers no check (Debian's default HAProxy)
        host.unhealthy.add(APISERVER)
    edit_apiserver(specs)
    result = await converge(load_desired(specs), Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert {n: o.status for n, o in result.outcomes.items()} == dict.fromkeys(hosts, "converged"), [
        o.error for o in result.outcomes.values()
    ]
    assert apiserver_restarts(hosts) == sorted(hosts)
    restart = next(a for a in result.outcomes["master-1"].applied if a.target == APISERVER)
    assert "restarting it takes nothing away" in restart.reason  # why the turn went ahead, where it is shown


async def test_a_healthy_member_still_waits_for_an_unhealthy_peer(specs: Path) -> None:
    hosts = await converged_fleet(specs)
    hosts["master-2"].unhealthy.add(APISERVER)
    edit_apiserver(specs)
    result = await converge(load_desired(specs), Session(fake_connector(hosts)), wait=0.1, interval=0.01)
    statuses = {n: o.status for n, o in result.outcomes.items()}
    # master-2 serves nothing: its turn goes ahead; then it is healthy and the others follow (or were refused
    # while it was not): never a healthy member restarted while another one failed its check
    assert statuses["master-2"] == "converged"
    for name in ("master-1", "master-3"):
        o = result.outcomes[name]
        assert o.status == "converged" or "other member(s) unhealthy: master-2" in o.error, o.error


async def test_etcd_members_that_all_fail_their_check_are_never_restarted(specs: Path) -> None:
    hosts = await converged_fleet(specs)
    for host in hosts.values():
        host.unhealthy.add("etcd.service")
    conf = specs / "etcd.yaml"
    conf.write_text(conf.read_text().replace("ETCD_HEARTBEAT_INTERVAL: 100", "ETCD_HEARTBEAT_INTERVAL: 150"))
    result = await converge(load_desired(specs), Session(fake_connector(hosts)), wait=0.1, interval=0.01)
    assert all("a restart now could lose quorum" in o.error for o in result.outcomes.values())
    assert not any(unit == "etcd.service" for h in hosts.values() for _, unit in h.restarted)
