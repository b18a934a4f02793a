"""In-process masters whose etcd members answer a status and give a snapshot (transport.fake's SimHost), for the
snapshot tests: `fleet` makes three, one the leader, one maybe a learner; `snapshot` the bytes of one (a database
of random pages and etcd's sha256 trailer)."""

from __future__ import annotations

import hashlib
import os

from reconciler.transport.fake import SimHost

IDS = {"master-1": 11, "master-2": 12, "master-3": 13}


def snapshot(pages: int = 8) -> bytes:
    db = os.urandom(4096 * pages)
    return db + hashlib.sha256(db).digest()


def fleet(leader: str = "master-1", learner: str | None = None) -> dict[str, SimHost]:
    hosts = {n: SimHost(n) for n in IDS}
    data = snapshot()
    for name, h in hosts.items():
        h.etcd_status = {"header": {"member_id": IDS[name]}, "leader": IDS[leader], "isLearner": name == learner}
        h.etcd_snapshot = (data, {"revision": 42, "totalKey": 7, "totalSize": len(data) - 32})
    return hosts
