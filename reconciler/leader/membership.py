"""etcd's membership as its members say it, and the four changes a replacement makes: list, add a learner, remove,
promote.

Owns asking etcd's cluster API (`/v3/cluster/member/*` through the JSON gateway, with curl on a member's host:
`leader.on_host`, the client key never leaves the master) and reading what it answers, bounded: at most
MAX_MEMBERS entries, names and URLs checked the way the rest of the code will use them (an answer that is not
etcd's is refused, never half-used). An answer of etcd's own refusal (an HTTP error with etcd's message) is
`EtcdRefused`, said with its message; no answer from any member is `EtcdUnavailable`. Used by
`engine.replace`.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

from reconciler.errors import HostError
from reconciler.leader.gateway import EtcdUnavailable
from reconciler.leader.on_host import EtcdOnHosts
from reconciler.terminal import printable

MAX_MEMBERS = 64  # etcd recommends 3, 5 or 7; an answer of more is not one of ours to act on
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
URL = re.compile(r"https?://(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,253}):[0-9]{1,5}")


class EtcdRefused(Exception):
    """etcd answered the request with a refusal: its message."""


@dataclass(frozen=True)
class Entry:
    id: int
    name: str  # "" until the member has started and published it
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool

    @property
    def started(self) -> bool:
        return bool(self.name)

    def hex(self) -> str:
        return f"{self.id:x}"


def _id(value: object) -> int | None:
    """A member ID as the gateway writes it (a uint64: a decimal string, or a number)."""
    if type(value) is int:
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        number = int(value)
    else:
        return None
    return number if 0 < number < 2**64 else None


def _urls(value: object) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 8:
        return None
    if not all(isinstance(u, str) and URL.fullmatch(u) for u in value):
        return None
    return tuple(value)


def entry(raw: object) -> Entry:
    """One member of an answer; ValueError when it is not one etcd would give."""
    if not isinstance(raw, dict):
        raise ValueError("a member that is not an object")
    member_id, name = _id(raw.get("ID")), raw.get("name", "")
    peers, clients = _urls(raw.get("peerURLs")), _urls(raw.get("clientURLs"))
    if member_id is None or peers is None or clients is None:
        raise ValueError("a member without an ID or with URLs that are not etcd's")
    if not isinstance(name, str) or (name and not NAME.fullmatch(name)):
        raise ValueError("a member name that is not a name")
    learner = raw.get("isLearner", False)
    return Entry(member_id, name, peers, clients, learner is True)


def entries(answer: dict[str, Any]) -> list[Entry]:
    """The members of a member/list, add, remove or promote answer; ValueError when it is not etcd's."""
    raw = answer.get("members", [])
    if not isinstance(raw, list) or len(raw) > MAX_MEMBERS:
        raise ValueError(f"a member list that is not a list of at most {MAX_MEMBERS}")
    out = [entry(m) for m in raw]
    names = [e.name for e in out if e.name]
    if len({e.id for e in out}) != len(out) or len(set(names)) != len(names):
        raise ValueError("two members with one ID or one name")
    return out


class Membership:
    def __init__(self, api: EtcdOnHosts):
        self.api = api

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The first answer of a member that answers; EtcdRefused with etcd's message when it refuses."""
        errors = []
        for n in range(len(self.api.members)):
            try:
                async with asyncio.timeout(self.api.deadline):
                    exit_status, status, answer = await self.api.exchange(n, path, body)
            except TimeoutError:
                errors.append(f"{self.api.endpoints[n]}: no answer within {self.api.deadline:g}s")
                continue
            except HostError as exc:
                errors.append(f"{self.api.endpoints[n]}: {exc}")
                continue
            try:
                data = json.loads(answer) if status else None
            except (ValueError, RecursionError):
                data = None
            if status == 200 and isinstance(data, dict):
                return data
            message = data.get("message") or data.get("error") if isinstance(data, dict) else None
            if status and isinstance(message, str) and "etcdserver" in message:
                raise EtcdRefused(printable(message)[:300])
            errors.append(f"{self.api.endpoints[n]}: " + (f"HTTP {status}" if status else f"curl exit {exit_status}"))
        raise EtcdUnavailable("; ".join(errors))

    async def listed(self) -> list[Entry]:
        return entries(await self._call("/v3/cluster/member/list", {}))

    async def add_learner(self, peer_urls: tuple[str, ...]) -> tuple[Entry, list[Entry]]:
        """The learner added, and the members as they are with it."""
        answer = await self._call("/v3/cluster/member/add", {"peerURLs": list(peer_urls), "isLearner": True})
        return entry(answer.get("member")), entries(answer)

    async def remove(self, member_id: int) -> None:
        await self._call("/v3/cluster/member/remove", {"ID": str(member_id)})

    async def promote(self, member_id: int) -> None:
        await self._call("/v3/cluster/member/promote", {"ID": str(member_id)})
