"""leader.on_host, attacked (issue 26, item 6): `curl` on a member that never returns (a dripping etcd, a stuck SSH
channel) costs the deadline, no more.

Each test confirms something that held under attack."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec.isolate import load_desired
from reconciler.transport.session import Session
from tests.support.specs import copy_specs


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    return copy_specs(tmp_path / "specs", ha=False)  # the HA front is not under attack here


async def test_a_hanging_curl_on_every_member_ends_within_the_deadline(specs: Path) -> None:
    """Holds: curl on a member that never returns (a dripping etcd, a stuck SSH channel) costs the deadline."""
    import asyncio
    import time

    from reconciler.leader.gateway import EtcdUnavailable
    from reconciler.leader.on_host import EtcdOnHosts, etcd_members
    from reconciler.transport.base import CommandResult

    class Hanging:
        async def run(self, argv, *, input=None, timeout=None, max_output=0):  # type: ignore[no-untyped-def]
            await asyncio.sleep(3600)
            return CommandResult(tuple(argv), 0, b"", b"")

        async def close(self) -> None:
            pass

    async def connect(target):  # type: ignore[no-untyped-def]
        return Hanging()

    desired = load_desired(specs)
    api = EtcdOnHosts(Session(connect), etcd_members(desired)[:1], timeout=0.2)
    began = time.monotonic()
    with pytest.raises(EtcdUnavailable, match="no answer within"):
        await api.holder("/reconciler/leader")
    assert time.monotonic() - began < api.deadline + 1
