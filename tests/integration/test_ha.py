"""The seed's HA front (specs/ha/) on the testbed: HAProxy on every master, keepalived holding 198.18.0.100, a client
sending requests through the VIP the whole time (testbed.traffic): an apiserver whose etcd stops is taken out
without a failed request, the VIP moves when its holder's HAProxy dies or the holder is cut off, exactly one host
holds it afterwards, and an edit to HAProxy's config rolls out (reloads) without a failed request."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import Testbed, TestHost
from testbed.ha import Traffic, enable_ha, holders

from .conftest import SPECS, reconciler
from .test_daemon import wait_for

pytestmark = pytest.mark.testbed


def holder(bed: Testbed) -> TestHost:
    def one() -> list[str]:
        found = holders(bed)
        return found if len(found) == 1 else []

    return bed.host(wait_for("exactly one VIP holder", one)[0])


def all_healthy(spec_dir: Path) -> bool:
    return reconciler("check", str(spec_dir), timeout=120).code == 0


@pytest.fixture(scope="module")
def front(converged: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    spec_dir = tmp_path_factory.mktemp("ha") / "specs"
    shutil.copytree(SPECS, spec_dir)
    enable_ha(spec_dir)
    result = reconciler("apply", str(spec_dir))
    assert result.code == 0, result.out + result.err
    assert "vip   apiserver" in result.out and "held here" in result.out
    holder(converged)
    yield spec_dir
    for h in converged.hosts:  # the HA front off again; the bundled specs do not manage it
        h.ssh("systemctl disable --now keepalived haproxy", check=False)
    result = reconciler("apply", str(SPECS))
    assert result.code == 0, result.out + result.err


def test_an_apiserver_whose_etcd_stops_is_taken_out_without_a_failed_request(front: Path, converged: Testbed) -> None:
    victim = next(h for h in converged.hosts if h.name != holder(converged).name)
    at = holder(converged)
    with Traffic() as traffic:
        wait_for("traffic through the VIP", lambda: traffic.sent() > 5)
        began = time.monotonic()
        victim.ssh("systemctl stop etcd")
        wait_for(
            f"HAProxy on {at.name} to mark {victim.name}'s apiserver down",
            lambda: (
                f"{victim.name} is DOWN" in at.ssh("journalctl -u haproxy -o cat --no-pager -n 50", check=False).stdout
            ),
        )
        time.sleep(1)  # requests keep flowing past the moment it went down
    try:
        assert traffic.sent(began) > 20 and traffic.failed(began) == [], traffic.failed(began)[:5]
    finally:
        victim.ssh("systemctl start etcd")
        wait_for("every check healthy again", lambda: all_healthy(front), timeout=180)


def test_the_vip_moves_when_its_holders_haproxy_dies_and_is_not_taken_back(front: Path, converged: Testbed) -> None:
    old = holder(converged)
    with Traffic() as traffic:
        wait_for("traffic through the VIP", lambda: traffic.sent() > 5)
        began = time.monotonic()
        old.ssh("systemctl stop haproxy")
        moved = wait_for("the VIP on another host", lambda: [h for h in holders(converged) if h != old.name])
        assert traffic.wait_success_after(began) is not None
    assert moved != [old.name]
    old.ssh("systemctl start haproxy")  # healthy again: it does not take the VIP back (nopreempt)
    wait_for("every check healthy again", lambda: all_healthy(front), timeout=180)
    assert holders(converged) == moved


def test_the_vip_moves_when_its_holder_is_cut_off_and_one_host_holds_it_after(front: Path, converged: Testbed) -> None:
    old = holder(converged)
    with Traffic() as traffic:
        wait_for("traffic through the VIP", lambda: traffic.sent() > 5)
        began = time.monotonic()
        old.ssh("nohup sh -c 'ip link set host0 down; sleep 6; ip link set host0 up' >/dev/null 2>&1 &")
        wait_for("the VIP on another host", lambda: [h for h in holders(converged) if h != old.name])
        assert traffic.wait_success_after(began) is not None
    wait_for(f"{old.name} back on the network", lambda: old.port_open(22), timeout=60)
    wait_for("every check healthy again", lambda: all_healthy(front), timeout=180)
    for _ in range(3):  # exactly one holder, seen on every host, and staying so
        assert len(holders(converged)) == 1, holders(converged)
        time.sleep(1)


def test_an_haproxy_edit_rolls_out_by_reload_without_a_failed_request(front: Path, converged: Testbed) -> None:
    cfg = front / "ha" / "haproxy.yaml"
    cfg.write_text(cfg.read_text().replace("timeout client 60s", "timeout client 90s"))
    with Traffic() as traffic:
        wait_for("traffic through the VIP", lambda: traffic.sent() > 5)
        began = time.monotonic()
        result = reconciler("apply", str(front))
        time.sleep(1)
    assert result.code == 0, result.out + result.err
    assert result.out.count("reload haproxy.service") == 3 and "restart haproxy" not in result.out
    assert traffic.sent(began) > 20 and traffic.failed(began) == [], traffic.failed(began)[:5]
    assert all("timeout client 90s" in (h.root / "etc/haproxy/haproxy.cfg").read_text() for h in converged.hosts)
