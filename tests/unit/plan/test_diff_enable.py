"""plan.diff's enable, attacked (issue 26, item 12): whether a unit must be enabled is decided on what the host will
be after this pass's writes: a disabled etcd whose unit file is rewritten is enabled in the same pass, and the
re-enable after a rewritten unit file (Debian's etcd.service underneath ours) is planned once. In-process hosts,
driven by engine.converge.

Each test confirms something that held under attack."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.engine.converge import converge
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import fake_connector
from reconciler.transport.session import Session
from tests.support.simhosts import converged_fleet
from tests.support.specs import copy_specs, replace_once

ETCD = "etcd.service"


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    return copy_specs(tmp_path / "specs", ha=False)  # the HA front is not under attack here


# ---------------------------------------------------------------------------------------------------------------
# Item 12: enable decided on what the host will be after this pass's writes


async def test_a_disabled_etcd_whose_unit_file_is_rewritten_is_enabled_in_the_same_pass(specs: Path) -> None:
    hosts = await converged_fleet(specs)
    for host in hosts.values():
        host.units[ETCD].enabled = False  # someone ran `systemctl disable etcd`; etcd still runs
    replace_once(specs / "etcd.yaml", "    LimitNOFILE=65536\n", "    LimitNOFILE=65537\n")
    result = await converge(load_desired(specs), Session(fake_connector(hosts)), wait=0.5, interval=0.01)
    assert {n: o.status for n, o in result.outcomes.items()} == dict.fromkeys(hosts, "converged"), [
        o.error for o in result.outcomes.values()
    ]


async def test_the_re_enable_after_a_rewritten_unit_file_is_planned_once(specs: Path) -> None:
    """Holds: Debian's etcd.service in /usr/lib (enabled), ours written to /etc: enabled after the reload, and
    the next passes plan nothing."""
    hosts = await converged_fleet(specs)
    path = "/etc/systemd/system/etcd.service"
    for host in hosts.values():
        host.hand_edit(path, host.files[path].content.replace(b"[Install]", b"[Install]\nAlias=etcd2.service"))
    session = Session(fake_connector(hosts))
    desired = load_desired(specs)
    first = await converge(desired, session, wait=1.0, interval=0.01)
    assert {o.status for o in first.outcomes.values()} == {"converged"}, [o.error for o in first.outcomes.values()]
    assert any(a.kind.value == "enable" for o in first.outcomes.values() for a in o.applied)
    again = await converge(desired, session, wait=1.0, interval=0.01)
    assert all(o.applied == () for o in again.outcomes.values())
