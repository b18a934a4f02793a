"""One leader among the daemon's replicas, elected on the cluster's etcd: a key held under a lease.

Owns the campaign (grant a lease, put the key if nobody holds it), the renewals (every `retry` seconds), when a
leader stops acting (no renewal for `renew_deadline` seconds on CLOCK_BOOTTIME, `leader.clock`: before its lease
can expire elsewhere, suspended or not), the fencing check (`fenced`: the key is still ours, under the revision we
won it with) and that every renewal looks at the key too: a leader whose key was deleted or taken steps down at
its next renewal, not when its lease runs out (the lease lives on without the key). The
defaults are client-go's (lease 15 s, renew deadline 10 s, retry 2 s); the renew deadline is cut to 2/3 of the
TTL etcd actually grants. Read by the daemon: `acting`, `fenced`, `state`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from reconciler.leader.clock import boottime
from reconciler.leader.gateway import EtcdApi, EtcdUnavailable, Holder

log = structlog.get_logger(__name__)

KEY = "/reconciler/leader"


@dataclass
class LeaderState:
    leader: str = ""  # who holds the key ("" unknown or nobody)
    since: float | None = None  # wall time this replica saw that leader take over
    ours: bool = False  # this replica holds the key and has renewed within the deadline
    token: int = 0  # the key's create revision while ours (the fencing token)
    transitions: int = 0  # times the leader this replica saw changed
    error: str = ""  # why there is no leader, as far as this replica knows (etcd unreachable, no quorum)


class Elector:
    def __init__(
        self,
        gateway: EtcdApi,
        name: str,
        *,
        key: str = KEY,
        ttl: int = 15,
        renew_deadline: float = 10.0,
        retry: float = 2.0,
        clock: Callable[[], float] = boottime,
    ):
        self.gateway, self.name, self.key = gateway, name, key
        self.ttl, self.retry, self.clock = ttl, retry, clock
        self.renew_deadline = renew_deadline
        self.state = LeaderState()
        self._lease = 0
        self._renewed: float | None = None  # `clock` time of the last renewal (or the win)
        self._holder_expires: float | None = None  # a follower: the earliest the leader's lease may be gone

    @property
    def lease(self) -> int:
        """This replica's lease (a follower keeps one too: what it publishes lives as long as it does)."""
        return self._lease

    def next_step(self) -> float:
        """Seconds until the next `step`: `retry`, or sooner for a follower whose leader's lease is about to run
        out (etcd reports whole seconds and revokes expired leases twice a second: a look every 0.25 s from the
        earliest moment it can be gone), so a dead leader is replaced within ~0.5 s of its lease, not ~`retry`."""
        if self._holder_expires is None:
            return self.retry
        return max(0.25, min(self.retry, self._holder_expires - self.clock() + 0.25))

    def acting(self) -> bool:
        """Leader now: the key is ours and was renewed within the renew deadline (checked on every call)."""
        return self._renewed is not None and self.clock() - self._renewed < self.renew_deadline

    async def fenced(self) -> bool:
        """Whether a host-changing action may go ahead: acting, and etcd still shows our key and revision."""
        if not self.acting():
            return False
        try:
            holder = await self.gateway.holder(self.key)
        except EtcdUnavailable:
            return False
        return self._ours(holder) and self.acting()  # the look at etcd took time: still within the deadline after it

    async def deposed(self) -> bool:
        """Whether etcd, answering, shows the key is no longer this replica's (or it never led). A rollback stops
        only on that: etcd not answering says nothing of who leads, and may be the very member being rolled back."""
        if self.state.token == 0:
            return True
        try:
            holder = await self.gateway.holder(self.key)
        except EtcdUnavailable:
            return False
        return not self._ours(holder)

    def _ours(self, holder: Holder | None) -> bool:
        """The key as etcd shows it is this replica's holding: its name, the revision it won, its lease."""
        return (
            holder is not None
            and holder.value == self.name
            and holder.create_revision == self.state.token
            and holder.lease == self._lease
        )

    async def step(self) -> None:
        """One round: renew if leading, else campaign; keep `state` in step. Never raises EtcdUnavailable."""
        asked = self.clock()  # etcd renews when it handles the request: the deadline counts from before it
        self._holder_expires = None
        try:
            if self._renewed is not None:
                if await self.gateway.keepalive(self._lease) > 0:
                    holder = await self.gateway.holder(self.key)  # the lease lives without the key: look at it
                    if self._ours(holder):
                        self._renewed = asked
                        self._settle(self.name, ours=True)
                        return
                    self._lost(f"the leader key was {'taken' if holder else 'deleted'}", keep_lease=True)
                    if holder is not None:
                        self._settle(holder.value, ours=False)
                    return  # a follower now: it campaigns at its next step, as any replica would
                self._lost("lease expired")
            elif self._lease and await self.gateway.keepalive(self._lease) == 0:  # a follower's lease: kept too
                self._lease = 0
            if not self._lease:
                lease = await self.gateway.grant(self.ttl)
                self._lease = lease.id
                self.renew_deadline = min(self.renew_deadline, lease.ttl * 2 / 3)
            holder = await self.gateway.campaign(self.key, self.name, self._lease)
            if holder.value == self.name and holder.lease == self._lease:
                self._renewed = asked
                self.state.token = holder.create_revision
                self._settle(self.name, ours=True)
            else:
                self._settle(holder.value, ours=False)
                if holder.lease:  # when to campaign next: as soon as the holder's lease can be gone
                    self._holder_expires = asked + await self.gateway.time_to_live(holder.lease)
        except EtcdUnavailable as exc:
            self.state.error = f"etcd unavailable: {exc}"
            if not self.acting():
                self._lost(self.state.error)

    def _settle(self, leader: str, *, ours: bool) -> None:
        if leader != self.state.leader or ours != self.state.ours:  # a restarted replica may win under its own name
            self.state.transitions += self.state.leader != ""
            self.state.since = time.time()
            log.info("leader", leader=leader or None, ours=ours)
        self.state.leader, self.state.ours, self.state.error = leader, ours, ""

    def _lost(self, why: str, *, keep_lease: bool = False) -> None:
        if self._renewed is not None:
            log.warning("leadership lost", why=why)
        self._renewed = None
        if not keep_lease:
            self._lease = 0
        self.state.ours, self.state.token = False, 0
        if self.state.leader == self.name:
            self._settle("", ours=False)
        self.state.error = why

    async def resign(self) -> None:
        """Give the key up at once (revoke the lease), so another replica need not wait for it to expire."""
        lease, self._lease, self._renewed = self._lease, 0, None
        if lease:
            try:
                await asyncio.wait_for(self.gateway.revoke(lease), 2)
            except (EtcdUnavailable, TimeoutError):
                pass
