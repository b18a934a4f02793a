"""Three replicas of the daemon, one per master as the shipped unit, with `--leader-election` on the cluster's own
etcd: exactly one leads and the others say who; when the leader's host dies, another replica takes over and
converges an edit the dead leader never saw."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from testbed import Testbed, TestHost

from .conftest import SPECS, reconciler
from .test_daemon import wait_for
from .test_systemd_unit import UNIT, install_unit, uninstall_unit

pytestmark = pytest.mark.testbed


def status(host: TestHost) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{host.address}:9479/status", timeout=3) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc
    except (OSError, ValueError):
        return None


def metrics(host: TestHost) -> str:
    with urllib.request.urlopen(f"http://{host.address}:9479/metrics", timeout=3) as resp:
        return str(resp.read().decode())


def leaders(hosts: list[TestHost]) -> list[str]:
    return [h.name for h in hosts if (s := status(h)) is not None and s["leader"].get("this_replica_leads")]


def one_leader(hosts: list[TestHost]) -> str:
    def one() -> str:
        found = leaders(hosts)
        return found[0] if len(found) == 1 else ""

    return str(wait_for("exactly one replica leading", one, timeout=120))


@pytest.fixture(scope="module")
def replicas(converged: Testbed) -> Iterator[Testbed]:
    for h in converged.hosts:
        install_unit(h, converged, f"--listen 0.0.0.0:9479 --resync 3 --leader-election --name {h.name}")
    for h in converged.hosts:
        h.ssh(f"systemctl start {UNIT}")
    try:
        yield converged
    finally:
        for h in converged.hosts:
            if not h.is_running:
                h.start()
            uninstall_unit(h)
        result = reconciler("apply", str(SPECS))
        assert result.code == 0, result.out + result.err


def test_one_replica_leads_and_the_others_say_which(replicas: Testbed) -> None:
    leader = one_leader(replicas.hosts)
    for h in replicas.hosts:
        doc = wait_for(
            f"{h.name} to see the leader", lambda h=h: (s := status(h)) and s["leader"]["leader"] == leader and s
        )
        assert doc["leader"]["this_replica_leads"] == (h.name == leader)
        line = f'reconciler_leader{{replica="{h.name}"}} {1.0 if h.name == leader else 0.0}'
        wait_for(f"{h.name}'s metric", lambda h=h, line=line: line in metrics(h), timeout=30)
    time.sleep(4)  # a few renewals later: still the same one, and only one
    assert leaders(replicas.hosts) == [leader]


def test_when_the_leaders_host_dies_another_replica_leads_and_converges_a_pending_edit(replicas: Testbed) -> None:
    old = replicas.host(one_leader(replicas.hosts))
    others = [h for h in replicas.hosts if h is not old]
    old.stop()  # the whole host: its replica, its etcd member (two of three keep quorum)
    killed = time.monotonic()
    path = "/etc/kubernetes/scheduler"
    for h in others:  # an edit only the survivors' specs carry (the dead leader never saw it)
        spec = h.root / "etc/reconciler/specs/kubernetes.yaml"
        spec.write_text(
            spec.read_text().replace(
                '"--leader-elect=true --address=127.0.0.1"', '"--leader-elect=true --address=127.0.0.1 --v=2"'
            )
        )
    new = one_leader(others)
    took = time.monotonic() - killed
    assert new != old.name
    wait_for(
        "the new leader to converge the edit on the hosts that are up",
        lambda: all(b"--v=2" in (h.root / path.lstrip("/")).read_bytes() for h in others),
        timeout=120,
    )
    follower = next(h for h in others if h.name != new)
    doc = wait_for(  # the follower reads the agreed digest on its next renewal: agreement comes a moment later
        f"{follower.name} to see {new} lead with the specs it holds too",
        lambda: (s := status(follower)) and s["leader"]["leader"] == new and s["leader"]["specs_agree"] and s["leader"],
        timeout=30,
    )
    assert not doc["this_replica_leads"] and doc["transitions"] >= 1
    print(f"leader {old.name} killed; {new} led after {took:.1f} s")
