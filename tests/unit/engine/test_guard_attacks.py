"""engine.guard, attacked (issue 26, item 14, and apply from bare hosts): the guard's exception is for the cluster's
etcd alone (a second etcd cluster, as its own unit, keeps its quorum guard); on masters where the distribution's etcd
runs, the guard refuses, naming `--break-glass`, with which the members form the specs' cluster. In-process hosts.

Each test confirms something that held under attack."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.engine.converge import converge
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, SimUnit, fake_connector
from reconciler.transport.session import Session
from tests.support.simhosts import converged_fleet, restarts
from tests.support.specs import copy_specs, replace_once

ETCD = "etcd.service"


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    return copy_specs(tmp_path / "specs", ha=False)  # the HA front is not under attack here


# ---------------------------------------------------------------------------------------------------------------
# Item 14: the guard's exception, for units that are not etcd


def with_etcd_events(specs: Path) -> None:
    """A second etcd cluster (kops and older kube-up run etcd-events apart from the main one), as its own unit."""
    etcd_yaml = specs / "etcd.yaml"
    etcd_yaml.write_text(
        etcd_yaml.read_text()
        + """---
apiVersion: reconciler/v1
kind: File
metadata:
  name: etcd-events-conf
spec:
  path: /etc/etcd/etcd-events.conf
  hosts: {matchLabels: {etcd: member}}
  env:
    ETCD_NAME: "{{ host.name }}-events"
    ETCD_HEARTBEAT_INTERVAL: 100
---
apiVersion: reconciler/v1
kind: Unit
metadata:
  name: etcd-events
spec:
  hosts: {matchLabels: {etcd: member}}
  restartOn: [etcd-events-conf]
  rollout: {strategy: OneAtATime, healthCheck: etcd-events, timeoutSeconds: 1}
  content: |
    [Service]
    EnvironmentFile=/etc/etcd/etcd-events.conf
    ExecStart=/usr/bin/etcd

    [Install]
    WantedBy=multi-user.target
---
apiVersion: reconciler/v1
kind: HealthCheck
metadata:
  name: etcd-events
spec:
  hosts: {matchLabels: {etcd: member}}
  http:
    url: "https://{{ host.address }}:4002/health"
  timeoutSeconds: 3
"""
    )


async def test_a_second_etcd_cluster_keeps_its_quorum_guard(specs: Path) -> None:
    with_etcd_events(specs)
    desired = load_desired(specs)
    assert desired.etcd_unit == ETCD
    hosts = await converged_fleet(specs)
    hosts["master-2"].units["etcd-events.service"].active = False  # one member down
    hosts["master-1"].unhealthy.add("etcd-events.service")  # running, voting, but its /health fails
    replace_once(
        specs / "etcd.yaml",
        'ETCD_NAME: "{{ host.name }}-events"\n    ETCD_HEARTBEAT_INTERVAL: 100',
        'ETCD_NAME: "{{ host.name }}-events"\n    ETCD_HEARTBEAT_INTERVAL: 150',
    )
    result = await converge(
        load_desired(specs), Session(fake_connector(hosts)), wait=0.1, interval=0.01, only=["master-1"]
    )
    assert restarts(hosts["master-1"], "etcd-events.service") == 0, result.outcomes["master-1"].error


async def test_apply_from_bare_with_debians_etcd_running_points_at_break_glass_which_converges(specs: Path) -> None:
    """Decided: on masters where Debian's etcd-server runs as apt leaves it (its own single-node etcd on
    http://localhost, so the specs' https check fails everywhere), etcd's guard cannot tell a first formation from
    a lost quorum and refuses, naming `--break-glass`; with it, the members form the specs' cluster."""
    desired = load_desired(specs)
    hosts = {}
    for name in desired.hosts:
        host = SimHost(name)
        host.units[ETCD] = SimUnit(active=True, enabled=True, active_enter=1.0, pid=5)  # Debian's etcd, running
        host.unhealthy.add(ETCD)  # it answers on http://localhost:2379 only: the specs' https check fails
        hosts[name] = host
    result = await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert all("see `reconciler apply --break-glass`" in o.error for o in result.outcomes.values())
    result = await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01, break_glass=True)
    assert {o.status for o in result.outcomes.values()} == {"converged"}, [o.error for o in result.outcomes.values()]
