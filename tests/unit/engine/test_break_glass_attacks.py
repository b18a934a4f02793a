"""engine.break_glass, attacked (issue 26, item 3): `--break-glass` asks etcd itself, through `curl` on the members
(tests.support.simhosts.EtcdOverCurl): refused on a healthy etcd whatever URL its check names, refused while some
members answer, broken only when none does. In-process hosts.

Each test confirms something that held under attack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from reconciler.engine.break_glass import refusal
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.simhosts import EtcdOverCurl, converged_fleet
from tests.support.specs import copy_specs, replace_once


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    return copy_specs(tmp_path / "specs", ha=False)  # the HA front is not under attack here


# ---------------------------------------------------------------------------------------------------------------
# Item 3: --break-glass asks etcd itself


def etcd_answering(
    metrics_port_404: bool = False,
) -> Callable[[SimHost, str, bytes], tuple[int, bytes, bytes]]:
    """A healthy etcd: the client port answers a quorum read; etcd's metrics listener (2381, kubeadm's liveness
    probe's URL) serves /health and /metrics but not the KV API."""

    def answer(host: SimHost, url: str, body: bytes) -> tuple[int, bytes, bytes]:
        if urlsplit(url).port == 2381:
            return 0, b"404 page not found\n\n404", b""
        return 0, b'{"header":{"cluster_id":"1","member_id":"2","revision":"5","raft_term":"3"}}\n200', b""

    return answer


async def test_break_glass_is_refused_when_the_check_url_is_not_etcds_client_api(specs: Path) -> None:
    etcd_yaml = specs / "etcd.yaml"
    replace_once(etcd_yaml, 'url: "https://{{ host.address }}:2379/health"', 'url: "http://127.0.0.1:2381/health"')
    desired = load_desired(specs)
    hosts: dict[str, SimHost] = {n: EtcdOverCurl(n, etcd_answering()) for n in desired.hosts}
    await converged_fleet(specs, hosts)  # all three members up and healthy (their /health answers)
    why = await refusal(Session(fake_connector(hosts)), desired)
    assert why != "", "the glass was broken on a healthy etcd: its KV API was never asked"


async def test_break_glass_with_a_partly_reachable_etcd_is_refused(specs: Path) -> None:
    """Holds: master-1 unreachable over SSH, the other two answer a quorum read: refused, and says who answered."""
    desired = load_desired(specs)
    hosts: dict[str, SimHost] = {n: EtcdOverCurl(n, etcd_answering()) for n in desired.hosts}
    await converged_fleet(specs, hosts)
    why = await refusal(Session(fake_connector(hosts, down={"master-1"})), desired)
    assert "etcd answers through master-2" in why, why


async def test_break_glass_with_no_member_answering_breaks_it_and_only_for_etcd(specs: Path) -> None:
    """Holds: no member's curl connects: the glass breaks (""), and a garbage 200 answer does not count as an answer
    of etcd either way (it is not a JSON object)."""
    desired = load_desired(specs)
    refused: dict[str, SimHost] = {n: EtcdOverCurl(n, lambda h, u, b: (7, b"\n000", b"")) for n in desired.hosts}
    assert await refusal(Session(fake_connector(refused)), desired) == ""
