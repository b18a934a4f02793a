"""A member that is not yet a voter, and what waits for it: the apiservers and the HA front name a master's new
address only once its etcd member votes there.

Owns `Joining`: the etcd members of the specs that etcd does not list as a **voting** member at the peer URLs the
specs give them (a master moved to a new address, before `reconciler etcd replace-member` made its new member a
voter there; or its learner, while it catches up), and what is held back for them in a pass:
- on the other hosts, the writes of every file whose content names such a host's address (the apiservers'
  `--etcd-servers`, the HA front's backends, the other members' `ETCD_INITIAL_CLUSTER`) and what those writes alone
  bring (their restarts, reloads): clients are never sent to a member that cannot serve them, and no other member
  is restarted while the cluster is one voter short;
- on the joining host itself, the start or restart of its etcd unit: it joins by `replace-member`, as a learner
  (started with the cluster's settings there, it would start a cluster of its own and be refused by the others).

Looked up only when a host's actions could be held (one member list, shared by the hosts of a pass for a few
seconds); when etcd cannot say (no quorum, nothing running yet: a bootstrap from bare hosts), nothing is held.
Called by `engine.rollouts`; the list is `leader.membership`'s, the members the specs give are `engine.restore`'s.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from reconciler.engine.restore import RestoreRefused, members
from reconciler.errors import HostError
from reconciler.leader.gateway import EtcdUnavailable
from reconciler.leader.membership import Entry, EtcdRefused, Membership
from reconciler.leader.on_host import EtcdOnHosts, etcd_members
from reconciler.plan.actions import STARTS, Action, Kind, without
from reconciler.spec.desired import DesiredHost, DesiredState
from reconciler.transport.session import Session

FRESH_S = 5.0  # how long one member list answers for every host of a pass


@dataclass(frozen=True)
class Member:
    host: str
    name: str  # etcd's name for it
    address: str  # the host's address in the specs: what other hosts' files name it by
    unit: str
    peers: frozenset[str]


@dataclass(frozen=True)
class Joining:
    host: str
    address: str
    unit: str
    why: str  # what etcd lists for it

    def waiting(self) -> str:
        return (
            f"waits for {self.host}'s etcd member to vote at its address in the specs ({self.why}): "
            f"`reconciler etcd replace-member {self.host}` makes it one"
        )


def declared(desired: DesiredState) -> list[Member]:
    """Pure: the etcd members the specs declare, with the address their host is named by; [] when the specs do not
    say enough to tell (no etcd unit, a member without its peer URLs)."""
    try:
        return [
            Member(
                m.host.name, m.name, m.host.target.address, m.unit, frozenset(_peer(u) for u in m.peer_urls.split(","))
            )
            for m in members(desired)
        ]
    except RestoreRefused:
        return []


def _peer(url: str) -> str:
    """A peer URL as compared: its scheme, host (lower case, an IPv6 address without brackets) and port."""
    try:
        parts = urlsplit(url.strip())
        return f"{parts.scheme.lower()}|{parts.hostname or ''}|{parts.port or ''}"
    except ValueError:
        return url.strip()


def joining(declared: list[Member], listed: list[Entry]) -> list[Joining]:
    """Pure: the declared members that etcd shows are not yet voters where the specs put them, on evidence only: a
    learner at their peer URL, or a member of their name at another peer URL (the master moved; its new machine's
    member not added yet). A member etcd does not list at all is not held for (a cluster that grows, a peer URL the
    specs spell otherwise than etcd: nothing here says it moved)."""
    out = []
    for m in declared:
        at = [e for e in listed if m.peers & {_peer(u) for u in e.peer_urls}]
        if any(not e.learner for e in at):
            continue
        if at:
            why = f"a learner at {', '.join(sorted(m.peers))}"
        else:
            moved = [u for e in listed if e.name == m.name for u in e.peer_urls]
            if not moved:
                continue
            why = f"etcd lists it at {', '.join(moved)}"
        out.append(Joining(m.host, m.address, m.unit, why))
    return out


def names_address(content: bytes, address: str) -> bool:
    """Pure: whether the content names `address` as a whole (198.18.0.2 is not named by 198.18.0.23, nor
    m3.example by m3.example.org)."""
    if not address:
        return False
    pattern = rb"(?<![\w.:-])" + re.escape(address.encode()) + rb"(?![\w-]|\.[\w-])"
    return re.search(pattern, content) is not None


def hold_back(
    host: DesiredHost, actions: tuple[Action, ...], waiting: list[Joining]
) -> tuple[tuple[Action, ...], list[str]]:
    """Pure: the actions without what waits for a joining member, and why: on another host, the writes of files
    naming its address and what they alone bring; on its own host, its etcd unit's start or restart."""
    why: list[str] = []
    paths: set[str] = set()
    stopped: set[str] = set()
    for j in waiting:
        if j.host == host.name:
            if any(a.kind in STARTS and a.target == j.unit for a in actions):
                stopped.add(j.unit)
                why.append(f"{j.unit} not started: it " + j.waiting())
            continue
        named = {
            a.target
            for a in actions
            if a.kind is Kind.WRITE
            and a.target in host.files
            and names_address(host.files[a.target].content, j.address)
        }
        if named:
            paths |= named
            why.append(f"{', '.join(sorted(named))} not written yet: each names {j.address}, and " + j.waiting())
    kept = without(actions, paths) if paths else actions
    return tuple(a for a in kept if not (a.kind in STARTS and a.target in stopped)), why


def may_hold(host: DesiredHost, actions: tuple[Action, ...], declared: list[Member]) -> bool:
    """Pure: whether any action could be held for a member that is not yet a voter (what makes the list worth
    asking for): another member's address named by a file written, or a member's own etcd started."""
    for m in declared:
        if m.host == host.name:
            if any(a.kind in STARTS and a.target == m.unit for a in actions):
                return True
        elif any(
            a.kind is Kind.WRITE and a.target in host.files and names_address(host.files[a.target].content, m.address)
            for a in actions
        ):
            return True
    return False


class Voters:
    """The cluster's members as etcd lists them, asked at most once per FRESH_S for the hosts of a pass."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._at = -FRESH_S
        self._listed: list[Entry] | None = None

    async def waiting(self, session: Session, desired: DesiredState, host: DesiredHost, actions: tuple[Action, ...]
                      ) -> list[Joining]:  # fmt: skip
        """The members that are not voters yet, when this host's actions could wait for one; [] when etcd cannot
        say."""
        spec = declared(desired)
        if not spec or not may_hold(host, actions, spec):
            return []
        listed = await self._list(session, desired)
        return joining(spec, listed) if listed else []

    async def _list(self, session: Session, desired: DesiredState) -> list[Entry] | None:
        async with self._lock:
            if time.monotonic() - self._at < FRESH_S:
                return self._listed
            asked = etcd_members(desired)
            listed = None
            if asked:
                try:
                    listed = await Membership(EtcdOnHosts(session, asked)).listed()
                except (EtcdUnavailable, EtcdRefused, ValueError, HostError):
                    listed = None  # no quorum, nothing running yet, or an answer that is not etcd's: nothing held
            self._at, self._listed = time.monotonic(), listed
            return listed
