"""leader.restart_lock, attacked (issue 26, items 5 and 6): etcd reached through `curl` on the members
(leader.on_host, tests.support.simhosts.EtcdOverCurl); the lock taken, every confirm answered in another shape is a
no from the fence, never a traceback. In-process hosts.

Each test confirms something that held under attack."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.simhosts import EtcdOverCurl
from tests.support.specs import copy_specs

ETCD = "etcd.service"


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    return copy_specs(tmp_path / "specs", ha=False)  # the HA front is not under attack here


# ---------------------------------------------------------------------------------------------------------------
# Items 5 and 6: etcd through curl on a member, hostile or hanging


HOSTILE_RANGES = [
    b'{"kvs":["x"]}',
    b'{"kvs":{"a":1}}',
    b'{"kvs":[{"value":"!!not base64","create_revision":"5"}]}',
    b'{"kvs":[{"value":"","create_revision":"99999999999999999999999"}]}',
    b'{"kvs":[{"value":"","create_revision":true}]}',
    b"[]",
    b"<html>502</html>",
    b"[" * 50_000,
    b'{"kvs":[null]}',
]


@pytest.mark.parametrize("hostile", HOSTILE_RANGES)
async def test_a_hostile_answer_to_the_locks_confirm_is_a_no_never_a_traceback(specs: Path, hostile: bytes) -> None:
    """Holds: the lock is taken, then every confirm gets an answer of another shape: the fence says no."""
    from reconciler.leader.on_host import EtcdOnHosts, etcd_members
    from reconciler.leader.restart_lock import RestartLock

    def answer(host: SimHost, url: str, body: bytes) -> tuple[int, bytes, bytes]:
        path = urlsplit(url).path
        if path == "/v3/lease/grant":
            return 0, b'{"ID":"7","TTL":"15"}\n200', b""
        if path == "/v3/kv/txn":
            return 0, b'{"succeeded":true,"header":{"revision":"5"}}\n200', b""
        if path == "/v3/lease/keepalive":
            return 0, b'{"result":{"TTL":"15"}}\n200', b""
        if path == "/v3/kv/range":
            return 0, hostile + b"\n200", b""
        return 0, b"{}\n200", b""

    desired = load_desired(specs)
    hosts: dict[str, SimHost] = {n: EtcdOverCurl(n, answer) for n in desired.hosts}
    api = EtcdOnHosts(Session(fake_connector(hosts)), etcd_members(desired))
    async with RestartLock(api, "apply", retry=60).turn(ETCD, "master-1", wait=1) as held:
        assert not await held()
