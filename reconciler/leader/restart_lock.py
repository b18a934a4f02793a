"""The cluster-wide restart lock: one key in etcd per rollout unit, held under a lease for one member's turn.

Owns taking the lock (a lease, then a transaction that puts the key only if nobody holds it), waiting for it
while another actor holds it (bounded), keeping its lease alive during the turn, the fence the turn's actions
ask (renewed within 2/3 of the granted TTL on the monotonic clock; a turn that cannot renew stops before its
lease could expire and let another actor in) and giving it up (revoking the lease deletes the key). Every
actor that restarts rollout units takes it: the daemon's leader and `reconciler apply` alike, so the quorum
guard never races another process's restart. Used by `engine.converge` around `engine.rollout.restart_one`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog

from reconciler.errors import HostError
from reconciler.leader.gateway import EtcdApi, EtcdUnavailable
from reconciler.waits import looks

log = structlog.get_logger(__name__)

PREFIX = "/reconciler/restart/"  # + unit: {"actor", "host", "unit", "at"} under the holder's lease

BREAK_GLASS = (
    "if etcd has lost quorum, repairing it is a person's act: `reconciler apply --break-glass` (README: Lost quorum)"
)


class LockNotTaken(HostError):
    """The restart lock could not be had: etcd did not answer, or another actor held it past the wait."""


def describe(value: str) -> str:
    """Who holds a lock, from its value (any value another program wrote is shown bounded, as a name)."""
    try:
        v = json.loads(value)
        return f"{v['actor']} (restarting {v['unit']} on {v['host']})"
    except (ValueError, TypeError, KeyError):
        return repr(value[:80])


class RestartLock:
    def __init__(
        self,
        api: EtcdApi,
        actor: str,
        *,
        ttl: int = 15,
        retry: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.api, self.actor, self.ttl, self.retry, self.clock = api, actor, ttl, retry, clock

    @asynccontextmanager
    async def turn(self, unit: str, host: str, wait: float) -> AsyncIterator[Callable[[], bool]]:
        """Hold the lock of `unit` for `host`'s turn; yields whether it is still held (ask before each action).
        Raises LockNotTaken when etcd does not answer or another actor holds it for more than `wait` seconds."""
        key = PREFIX + unit
        value = json.dumps({"actor": self.actor, "host": host, "unit": unit, "at": time.time()})
        try:
            lease = await self.api.grant(self.ttl)
        except EtcdUnavailable as exc:
            raise LockNotTaken(
                f"{host}: {unit} not restarted: cannot take the cluster-wide restart lock, etcd did not answer "
                f"({exc}); {BREAK_GLASS}"
            ) from None
        deadline = lease.ttl * 2 / 3
        renewed = [self.clock()]
        try:
            await self._take(key, value, lease.id, renewed, host, unit, wait)
            keeper = asyncio.create_task(self._keep(lease.id, renewed))
            try:
                yield lambda: self.clock() - renewed[0] < deadline
            finally:
                keeper.cancel()
        finally:
            try:  # revoking the lease deletes the key; if that fails, the lease runs out within its TTL
                await asyncio.wait_for(self.api.revoke(lease.id), 2)
            except (EtcdUnavailable, TimeoutError):
                log.warning("restart lock not given up; it expires with its lease", unit=unit, ttl=lease.ttl)

    async def _take(
        self, key: str, value: str, lease: int, renewed: list[float], host: str, unit: str, wait: float
    ) -> None:
        """Put the key under our lease once nobody holds it; keep the lease alive while waiting."""
        began, told = self.clock(), ""
        for pause in looks(self.retry):
            asked = self.clock()
            try:
                holder = await self.api.campaign(key, value, lease)
                if holder.lease == lease:
                    renewed[0] = asked
                    log.info("restart lock taken", unit=unit, host=host, actor=self.actor)
                    return
                if await self.api.keepalive(lease) > 0:
                    renewed[0] = asked
            except EtcdUnavailable as exc:
                raise LockNotTaken(
                    f"{host}: {unit} not restarted: cannot take the cluster-wide restart lock, etcd did not answer "
                    f"({exc}); {BREAK_GLASS}"
                ) from None
            who = describe(holder.value)
            if self.clock() - began >= wait:
                raise LockNotTaken(
                    f"{host}: {unit} not restarted: the cluster-wide restart lock is held by {who} (waited {wait:g}s)"
                )
            if who != told:
                log.warning("waiting for the restart lock", unit=unit, host=host, held_by=who)
                told = who
            await asyncio.sleep(pause)

    async def _keep(self, lease: int, renewed: list[float]) -> None:
        while True:
            await asyncio.sleep(self.retry)
            asked = self.clock()  # etcd renews when it handles the request: the deadline counts from before it
            try:
                if await self.api.keepalive(lease) > 0:
                    renewed[0] = asked
            except EtcdUnavailable:
                pass  # the fence says no once the deadline passes
