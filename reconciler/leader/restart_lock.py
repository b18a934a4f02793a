"""The cluster-wide restart lock: one key in etcd per rollout unit, held under a lease for one member's turn.

Owns taking the lock (a lease, then a transaction that puts the key only if nobody holds it), waiting for it
while another actor holds it (bounded), keeping its lease alive during the turn, the fence the turn's actions
ask and giving it up (revoking the lease deletes the key). The fence (`turn` yields it: `await held()`) is
first local: renewed within 2/3 of the granted TTL on CLOCK_BOOTTIME (`leader.clock`: a suspended machine's
time counts, as it does for the lease in etcd), so a turn that cannot renew stops before its lease could
expire and let another actor in; then one etcd round trip: the key still holds our value under the create
revision we took and our lease. Every actor that restarts rollout units takes it: the daemon's leader and
`reconciler apply` alike, so the quorum guard never races another process's restart. Used by `engine.converge`
around `engine.rollouts`' turns.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import structlog

from reconciler.errors import HostError
from reconciler.leader.clock import boottime
from reconciler.leader.gateway import EtcdApi, EtcdUnavailable, Holder
from reconciler.waits import looks

log = structlog.get_logger(__name__)

PREFIX = "/reconciler/restart/"  # + unit: {"actor", "host", "unit", "at"} under the holder's lease

BREAK_GLASS = "if etcd has lost quorum, repairing it is a person's act: `reconciler apply --break-glass` (docs/apply.md: Lost quorum)"


class LockNotTaken(HostError):
    """The restart lock could not be had: etcd did not answer, or another actor held it past the wait."""


def _field(value: object) -> str:
    """One field of another actor's lock value, as a bounded printable name."""
    text = str(value)[:80]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def describe(value: str) -> str:
    """Who holds a lock, from its value (whatever another program wrote there is shown bounded and escaped)."""
    try:
        v = json.loads(value[:4096])
        return f"{_field(v['actor'])} (restarting {_field(v['unit'])} on {_field(v['host'])})"
    except (ValueError, TypeError, KeyError, RecursionError):
        return repr(_field(value))


class Turn(Protocol):
    """A held turn: awaited, whether it may act (fresh and confirmed by etcd); `deposed`, whether it is known lost."""

    async def __call__(self) -> bool: ...

    async def deposed(self) -> bool: ...


KEEPER_GRACE_S = 10.0  # past its renewal interval, the longest a turn's end waits for its keeper to stop


class _Held:
    """Whether this turn still holds the lock. `fresh`: renewed within the deadline (the `clock` time of a request
    etcd answered with a live lease, read before it was sent) and not seen lost (lease gone, key gone or
    another's). Called, an awaitable `confirm`: fresh, and etcd shows the key as ours (one round trip)."""

    def __init__(
        self,
        api: EtcdApi,
        key: str,
        value: str,
        lease: int,
        clock: Callable[[], float],
        renewed: float,
        deadline: float,
    ):
        self.api, self.key, self.value, self.lease = api, key, value, lease
        self.clock, self.renewed, self.deadline = clock, renewed, deadline
        self.revision = 0  # the key's create revision once taken: this holding and no later one
        self.lost = ""
        self.stopping = False  # the turn is over: its keeper renews no more

    def fresh(self) -> bool:
        return not self.lost and self.clock() - self.renewed < self.deadline

    def mine(self, holder: Holder | None) -> bool:
        return (
            holder is not None
            and holder.value == self.value
            and holder.create_revision == self.revision
            and holder.lease == self.lease
        )

    async def __call__(self) -> bool:
        return await self.confirm()

    async def confirm(self) -> bool:
        """Fresh, then one etcd round trip: the key is still ours; then fresh still (the look took time). No
        answer from etcd is a no for this ask (fails closed); a key gone or another's is a no from now on."""
        return self.fresh() and await self._look() is not None and self.fresh()

    async def deposed(self) -> bool:
        """Whether this turn is known to have lost the lock: seen lost, or etcd, answering, shows the key gone or
        another's. A rollback stops only on that: etcd not answering is no proof that another actor holds it (and
        the member being rolled back may be why etcd does not answer: a single member, or two of two)."""
        return bool(self.lost) or await self._look() is False

    async def _look(self) -> bool | None:
        """One etcd round trip: whether the key is still ours (a key gone or another's marks the turn lost), or
        None when etcd did not answer."""
        try:
            holder = await self.api.holder(self.key)
        except EtcdUnavailable:
            return None
        if not self.mine(holder):
            self.lose("the lock's key was deleted or taken over")
            return False
        return True

    def lose(self, why: str) -> None:
        if not self.lost:
            self.lost = why
            log.warning("restart lock lost", key=self.key, why=why)


class RestartLock:
    def __init__(
        self,
        api: EtcdApi,
        actor: str,
        *,
        ttl: int = 15,
        retry: float = 2.0,
        clock: Callable[[], float] = boottime,
    ):
        self.api, self.actor, self.ttl, self.retry, self.clock = api, actor, ttl, retry, clock

    def _unanswered(self, host: str, unit: str, exc: Exception) -> LockNotTaken:
        return LockNotTaken(
            f"{host}: {unit} not restarted: cannot take the cluster-wide restart lock, etcd did not answer "
            f"({exc}); {BREAK_GLASS}"
        )

    @asynccontextmanager
    async def turn(self, unit: str, host: str, wait: float) -> AsyncIterator[Turn]:
        """Hold the lock of `unit` for `host`'s turn; yields the fence: `await held()` before each action, whether
        the lock is still held (renewed in time, and confirmed with etcd by one round trip; False when etcd does
        not answer). Raises LockNotTaken when etcd does not answer or another actor holds it for more than `wait`
        seconds."""
        key = PREFIX + unit
        value = json.dumps({"actor": self.actor, "host": host, "unit": unit, "at": time.time()})
        asked = self.clock()
        try:
            lease = await self.api.grant(self.ttl)
        except EtcdUnavailable as exc:
            raise self._unanswered(host, unit, exc) from None
        held = _Held(self.api, key, value, lease.id, self.clock, asked, lease.ttl * 2 / 3)
        keeper: asyncio.Task[None] | None = None
        try:
            await self._take(held, host, unit, wait)
            keeper = asyncio.create_task(self._keep(held))
            yield held
        finally:
            cancelled = False
            if keeper is not None:
                # The keeper is told to stop, then cancelled: a cancellation can be lost (Python 3.11's wait_for
                # returns an answer that came at the same moment), and a keeper that went on renewing kept the lock
                # for ever while this turn waited for it (seen on the testbed: a renewal held etcd's lock until a
                # signal). Waiting for it is bounded, and a cancellation of this turn is never swallowed.
                held.stopping = True
                keeper.cancel()
                try:
                    await asyncio.wait({keeper}, timeout=self.retry + KEEPER_GRACE_S)
                except asyncio.CancelledError:
                    cancelled = True
            try:  # revoking the lease deletes the key; if that fails, the lease runs out within its TTL
                await asyncio.wait_for(self.api.revoke(lease.id), 5)
            except Exception as exc:  # never in place of what ended the turn
                log.warning("restart lock not given up; it expires with its lease", unit=unit, error=str(exc)[:200])
            if cancelled:
                raise asyncio.CancelledError

    async def _renew(self, held: _Held) -> bool:
        """Keep the lease alive; whether it still was."""
        asked = self.clock()  # etcd renews when it handles the request: the deadline counts from before it
        if await self.api.keepalive(held.lease) <= 0:
            return False
        held.renewed = asked
        return True

    async def _take(self, held: _Held, host: str, unit: str, wait: float) -> None:
        """Put the key under our lease once nobody holds it; keep the lease alive while waiting."""
        began, told = self.clock(), ""
        for pause in looks(self.retry):
            try:
                holder = await self.api.campaign(held.key, held.value, held.lease)
                if holder.lease == held.lease and holder.create_revision > 0:
                    held.revision = holder.create_revision
                    if not await self._renew(held):  # the deadline counts from a renewal, not from the put
                        raise EtcdUnavailable("the lease expired while the lock was taken")
                    log.info("restart lock taken", unit=unit, host=host, actor=self.actor)
                    return
                if not await self._renew(held):
                    raise EtcdUnavailable("the lease expired while waiting for the lock")
            except EtcdUnavailable as exc:
                raise self._unanswered(host, unit, exc) from None
            who = describe(holder.value)
            if self.clock() - began >= wait:
                raise LockNotTaken(
                    f"{host}: {unit} not restarted: the cluster-wide restart lock is held by {who} (waited {wait:g}s)"
                )
            if who != told:
                log.warning("waiting for the restart lock", unit=unit, host=host, held_by=who)
                told = who
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def _keep(self, held: _Held) -> None:
        """Renew every `retry` seconds and look at the key: gone, or another's, and the turn stops."""
        while not held.lost and not held.stopping:
            await asyncio.sleep(self.retry)
            if held.stopping:
                return
            try:
                if not await self._renew(held):
                    held.lose("its lease expired")
                elif not held.mine(await self.api.holder(held.key)):
                    held.lose("the lock's key was deleted or taken over")
            except EtcdUnavailable:
                continue  # the deadline says no once it passes
            except Exception as exc:  # whatever else: the turn stops rather than act unfenced
                held.lose(f"renewal failed: {type(exc).__name__}")
