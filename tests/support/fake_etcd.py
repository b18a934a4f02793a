"""An etcd cluster in memory, reached through `curl` on in-process masters (tests.support.simhosts.EtcdOverCurl), for
the member-replacement tests: the cluster API (member list, add, remove, promote), a member's status and /health,
and the little KV and lease API the restart lock uses. A master whose member is down answers as a closed port
does (curl exit 7). The new machine's side (engine/etcd_join.sh and systemctl) is `Master`'s: what was written
is recorded, a start makes the learner started when the join environment is there (unless `fails` says no)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from reconciler.transport.fake import SimHost
from tests.support.simhosts import EtcdOverCurl


@dataclass
class FakeMember:
    id: int
    name: str
    peer: str
    client: str
    learner: bool = False

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ID": str(self.id), "peerURLs": [self.peer], "isLearner": self.learner}
        if self.name:
            out |= {"name": self.name, "clientURLs": [self.client]}
        return out


ADDRESSES = {"master-1": "198.18.0.11", "master-2": "198.18.0.12", "master-3": "198.18.0.13"}


@dataclass
class FakeCluster:
    members: list[FakeMember] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # hosts whose member does not answer
    in_sync_after: int = 0  # promote refusals ("not in sync") before a promote succeeds
    kv: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # key -> (value, create revision, lease)
    revision: int = 1
    changes: list[str] = field(default_factory=list)  # "remove <hex>", "add <peer>", "promote <hex>" in order
    on_lock: Callable[[FakeCluster], None] | None = None  # called once, as the restart lock is first taken
    lose_promote_answer: bool = False  # the first promotion is made, its answer lost (curl times out)
    alive_elsewhere: set[int] = field(default_factory=set)  # members answering at an address no master has
    unhealthy_adds: int = 0  # member adds refused as "unhealthy cluster" before one is made
    _next_id: int = 0xA000

    def member_of(self, host: str) -> FakeMember | None:
        return next((m for m in self.members if urlsplit(m.peer).hostname == ADDRESSES[host]), None)

    def answer(self, host: SimHost, url: str, body: bytes) -> tuple[int, bytes, bytes]:
        at = urlsplit(url).hostname
        if at not in ADDRESSES.values():  # asked at an address no master has (a member that moved): whoever is there
            there = next((m for m in self.members if urlsplit(m.client).hostname == at), None)
            if there is None or there.id not in self.alive_elsewhere:
                return 7, b"", b"curl: (7) Failed to connect\n"
            return self._ok({"header": {"member_id": str(there.id)}, "leader": str(self.members[0].id)})
        me = self.member_of(host.name)
        if host.name in self.down or me is None or not me.name or "127.0.0.2" in me.client:
            return 7, b"", b"curl: (7) Failed to connect\n"
        path = urlsplit(url).path
        if path == "/health":
            return self._ok({"health": "true"})
        request = json.loads(body) if body else {}
        if path == "/v3/maintenance/status":
            return self._ok(
                {"header": {"member_id": str(me.id)}, "leader": str(self.members[0].id), "isLearner": me.learner}
            )
        if me.learner:
            return self._refused("etcdserver: rpc not supported for learner")
        return self._cluster(path, request) if path.startswith("/v3/cluster/") else self._kv(path, request)

    def _ok(self, data: dict[str, Any]) -> tuple[int, bytes, bytes]:
        return 0, json.dumps(data).encode() + b"\n200", b""

    def _refused(self, message: str) -> tuple[int, bytes, bytes]:
        return 0, json.dumps({"error": message, "code": 9, "message": message}).encode() + b"\n400", b""

    def _listed(self) -> dict[str, Any]:
        return {"header": {}, "members": [m.json() for m in self.members]}

    def _cluster(self, path: str, request: dict[str, Any]) -> tuple[int, bytes, bytes]:
        if path.endswith("/list"):
            return self._ok(self._listed())
        if path.endswith("/add"):
            peer = request["peerURLs"][0]
            if self.unhealthy_adds > 0:  # etcd's strict reconfiguration check: not connected to every voter for 5 s
                self.unhealthy_adds -= 1
                return self._refused("etcdserver: unhealthy cluster")
            if any(m.peer == peer for m in self.members):
                return self._refused("etcdserver: Peer URLs already exists")
            self._next_id += 1
            new = FakeMember(self._next_id, "", peer, "", learner=bool(request.get("isLearner")))
            self.members.append(new)
            self.changes.append(f"add {peer}")
            return self._ok({"member": new.json(), **self._listed()})
        found = next((m for m in self.members if str(m.id) == str(request.get("ID"))), None)
        if found is None:
            return self._refused("etcdserver: member not found")
        if path.endswith("/remove"):
            self.members.remove(found)
            self.changes.append(f"remove {found.id:x}")
            return self._ok(self._listed())
        if path.endswith("/promote"):
            if not found.learner:
                return self._refused("etcdserver: can only promote a learner member")
            if self.in_sync_after > 0 or not found.name:
                self.in_sync_after -= 1
                return self._refused("etcdserver: can only promote a learner member which is in sync with leader")
            found.learner = False
            self.changes.append(f"promote {found.id:x}")
            if self.lose_promote_answer:
                self.lose_promote_answer = False
                return 28, b"", b"curl: (28) Operation timed out\n"
            return self._ok(self._listed())
        return self._refused("etcdserver: unknown")

    def _kv(self, path: str, request: dict[str, Any]) -> tuple[int, bytes, bytes]:
        """The restart lock's calls: a lease, a put-if-absent transaction, a keepalive, a read, a revoke."""
        if path == "/v3/lease/grant":
            return self._ok({"ID": "77", "TTL": str(request.get("TTL", 15))})
        if path == "/v3/lease/keepalive":
            return self._ok({"result": {"ID": request["ID"], "TTL": "15"}})
        if path == "/v3/lease/revoke":
            self.kv = {k: v for k, v in self.kv.items() if str(v[2]) != str(request["ID"])}
            return self._ok({})
        if path == "/v3/kv/range":
            key = request["key"]
            return self._ok({"kvs": [self._kv_json(key)] if key in self.kv else []})
        if path == "/v3/kv/txn":
            if self.on_lock is not None:
                hook, self.on_lock = self.on_lock, None
                hook(self)
            key = request["compare"][0]["key"]
            if key in self.kv:
                return self._ok({"succeeded": False, "responses": [{"response_range": {"kvs": [self._kv_json(key)]}}]})
            put = request["success"][0]["requestPut"]
            self.revision += 1
            self.kv[key] = (put["value"], self.revision, int(put.get("lease", 0)))
            return self._ok({"succeeded": True, "header": {"revision": str(self.revision)}})
        return self._refused("etcdserver: unknown")

    def _kv_json(self, key: str) -> dict[str, Any]:
        value, created, lease = self.kv[key]
        return {"key": key, "value": value, "create_revision": str(created), "lease": str(lease)}


class Master(EtcdOverCurl):
    """A master of the fake cluster: its etcd_join.sh calls recorded, its etcd's start made a learner's start."""

    def __init__(self, name: str, cluster: FakeCluster, *, fails: bool = False):
        super().__init__(name, cluster.answer)
        self.cluster, self.never_starts = cluster, fails
        self.joins: list[tuple[str, list[str], str]] = []  # (mode, arguments, stdin) of each etcd_join.sh
        self.join_env = ""  # what the runtime drop-in gives etcd now

    def execute(self, argv: list[str], stdin: bytes = b"") -> tuple[int, bytes, bytes]:
        if argv[:2] == ["bash", "-c"] and len(argv) >= 5 and argv[3] == "reconciler-etcd-join":
            self.commands += 1
            mode, args = argv[4], argv[5:]
            self.joins.append((mode, args, stdin.decode()))
            if mode == "join":
                self.join_env = stdin.decode()
            elif mode == "joined":
                self.join_env = ""
            if mode == "prepare":  # it stops the unit first
                self.units[args[0]].active = False
            return 0, {"prepare": b"@@EMPTY\n", "join": b"@@JOINING\n", "joined": b"@@JOINED\n"}[mode], b""
        said = super().execute(argv, stdin)
        if argv[:1] == ["systemctl"] and argv[1] in ("start", "restart") and argv[-1] == "etcd.service":
            self._etcd_started()
        return said

    def _etcd_started(self) -> None:
        me = self.cluster.member_of(self.name)
        if self.never_starts or me is None:
            return
        if "ETCD_INITIAL_CLUSTER_STATE=existing" in self.join_env and not me.name:
            me.name, me.client = self.name, "https://127.0.0.2:2379"
        elif me.name and not self.join_env:
            me.client = me.peer.replace(":2380", ":2379")
        self.cluster.down.discard(self.name)


def three_members() -> FakeCluster:
    return FakeCluster(
        [
            FakeMember(0x11 * n, f"master-{n}", f"https://198.18.0.1{n}:2380", f"https://198.18.0.1{n}:2379")
            for n in (1, 2, 3)
        ]
    )
