"""Who restarts, in which order, under which lock, and when a failed restart is rolled back: one room.

Owns `Rollouts`, made once for a run of `apply` (or for the daemon) with everything it decides by: what is held
(engine.held), the leader's fence and whether etcd shows it deposed, the actor that takes the cluster-wide restart
lock, and whether a person broke the glass. For a host's plan it carries out `now` (what needs no turn: writes,
enables, restarts of units without a rollout policy) and `turns` (one-at-a-time restarts: a unit's lock here,
the cluster-wide one in etcd, the quorum guard, the staged writes, the restart, the wait until healthy). Either
way a failed restart is rolled back by the one rule, `should_roll_back`. Called by `engine.converge`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import replace

import structlog

from reconciler import progress
from reconciler.apply.executor import ApplyLog, Fence, apply_actions
from reconciler.backup.take import before_turn
from reconciler.engine.drain import Drained, drained
from reconciler.engine.guard import guard, wait_healthy
from reconciler.engine.held import Config, Held, fingerprint
from reconciler.engine.joining import Joining, Voters, hold_back
from reconciler.engine.rollback import RolledBack, roll_back
from reconciler.errors import HostError, NotLeader
from reconciler.leader.on_host import EtcdOnHosts, etcd_members
from reconciler.leader.restart_lock import RestartLock, Turn
from reconciler.observe.facts import observe_host
from reconciler.observe.snapshot import CheckResult
from reconciler.outcome import Status, Step
from reconciler.plan.actions import Action, Kind, Plan
from reconciler.plan.diff import plan_host
from reconciler.spec.desired import DesiredHost, DesiredState, DesiredUnit
from reconciler.transport.base import Connection
from reconciler.transport.session import Session

log = structlog.get_logger(__name__)

RESTARTS = (Kind.START, Kind.RESTART)


class Rollouts:
    def __init__(
        self,
        held: Held | None = None,
        *,
        fence: Fence | None = None,
        deposed: Fence | None = None,
        actor: str | None = None,
        break_glass: bool = False,
    ) -> None:
        """`held`: what was rolled back (in memory unless given a file); `fence`: asked before every host-changing
        action (leader election: still ours); `deposed`: whether etcd shows another actor leads (what stops a
        rollback); `actor`: who takes the cluster-wide restart lock in etcd (None: no such lock); `break_glass`:
        a person repairs a lost etcd quorum (no restart lock; etcd's members without guard, wait or rollback)."""
        self.held = held if held is not None else Held()
        self.fence, self.deposed, self.actor, self.break_glass = fence, deposed, actor, break_glass
        self.stopping = asyncio.Event()  # set on shutdown: no new turn begins
        self._locks: dict[str, asyncio.Lock] = {}
        self.voters = Voters()  # etcd's members as it lists them: what waits for a member to vote (engine.joining)

    # -- the one rule ---------------------------------------------------------------------------
    def should_roll_back(
        self, desired: DesiredState, unit: DesiredUnit, applied: ApplyLog, failure: HostError | None, restarted: bool
    ) -> list[str]:
        """The files to put back after `unit` failed, or [] when it is not rolled back: only a failure at or after
        its (re)start (a failed write restarted nothing), on files this attempt wrote for it, with `rollback` on,
        over a connection that still works, by an actor still in charge (NotLeader: the next one decides), and not
        etcd's members with the glass broken (a member without quorum cannot come back healthy alone)."""
        if not restarted or not unit.rollback or self.glass(desired, unit):
            return []
        if failure is not None and (failure.ssh or isinstance(failure, NotLeader)):
            return []
        return [p for p in applied.backups if p in unit.restart_on]

    def glass(self, desired: DesiredState, unit: DesiredUnit) -> bool:
        """Whether the glass is broken for this unit: only etcd's guard is ever relaxed."""
        return self.break_glass and unit.name == desired.etcd_unit

    # -- what needs no turn ---------------------------------------------------------------------
    async def now(self, session: Session, desired: DesiredState, host: DesiredHost, plan: Plan | None) -> Step:
        """The plan's actions that need no turn, minus what a held config would bring again; a failed restart of a
        unit is rolled back here."""
        actions, why = self.held.hold_back(host, plan.now() if plan else ())
        waiting = await self.voters.waiting(session, desired, host, actions)
        actions, waits = hold_back(host, actions, waiting)
        stopped = (
            Step("rolled-back", "; ".join(why + waits))
            if why
            else Step("pending", "; ".join(waits))
            if waits
            else Step()
        )
        if not actions:
            return stopped
        applied = ApplyLog(host.name)
        began = time.monotonic()
        try:
            conn = await session.connection(host.target)
            await apply_actions(conn, host, actions, applied, self.fence)
        except HostError as exc:
            failed = actions[len(applied.done)] if len(applied.done) < len(actions) else None
            unit = next((u for u in host.units if failed is not None and u.name == failed.target), None)
            written = (
                self.should_roll_back(desired, unit, applied, exc, restarted=failed.kind in RESTARTS)
                if unit is not None and failed is not None
                else []
            )
            if unit is None or not written:
                return Step.of(applied, "failed", str(exc), exc.ssh)
            tried = tuple(a for a in applied.done if a.target in written)
            try:
                rolled = await roll_back(
                    conn, host, unit, tried, applied, str(exc), began, lambda: _active(conn, unit.name), self.deposed
                )
            except HostError as again:
                return Step.of(applied, "failed", f"{exc}; rolling back failed too: {again}", exc.ssh)
            self.held.hold(host.name, unit.name, fingerprint(host, unit.restart_on), str(rolled), written)
            return Step.of(applied, "rolled-back", str(rolled), rollbacks=(unit.name,))
        return Step.of(applied, stopped.status, stopped.error)

    # -- one host at a time ---------------------------------------------------------------------
    async def turns(self, session: Session, desired: DesiredState, host: DesiredHost, plan: Plan | None) -> Step:
        """This host's restarts of rollout units, each in turn with the other hosts, behind the quorum guard."""
        done: list[Action] = []
        seconds: dict[str, float] = {}
        waits: list[str] = []  # what waits for a member to vote: the other units' turns go on

        def step(
            status: Status | None = None, error: str = "", ssh: bool = False, rollbacks: tuple[str, ...] = ()
        ) -> Step:
            return Step(status, error, ssh, tuple(done), seconds, rollbacks)

        for planned in plan.rollouts() if plan else ():
            unit = next(u for u in host.units if u.name == planned[-1].target)
            group, why = self.held.hold_back(host, planned)
            if group[-1:] != planned[-1:]:  # its restart is brought by a held config only: it waits for new specs
                return step("rolled-back", "; ".join(why))
            waiting = await self.voters.waiting(session, desired, host, group)
            kept, said = hold_back(host, group, waiting)
            waits += said
            if kept[-1:] != group[-1:]:  # its restart waits for a member to vote (or is the member's own start)
                continue
            group = kept
            progress.report(host.name, f"waiting for its turn to restart {unit.name}")
            async with self._locks.setdefault(unit.name, asyncio.Lock()):
                if self.stopping.is_set():  # staged writes wait too: the host stays consistent
                    return step("failed", f"{host.name}: shutting down before restarting {unit.name}")
                stopped = self.held.stopped(unit.name, _unit_config(desired, unit.name))
                if stopped:  # another member failed on these specs: the rollout does not go on until they change
                    return step("failed", f"{host.name}: rollout of {unit.name} stopped: {stopped}")
                applied = ApplyLog(host.name)
                began = time.monotonic()
                try:
                    await self._turn(session, desired, host, unit, group, applied, waiting)
                except RolledBack as exc:
                    paths = [a.target for a in applied.done if a.kind is Kind.WRITE]
                    self.held.hold(host.name, unit.name, fingerprint(host, unit.restart_on), str(exc), paths)
                    self.held.stop(unit.name, _unit_config(desired, unit.name), str(exc))
                    log.warning("rollout stopped: rolled back", host=host.name, unit=unit.name, error=str(exc))
                    return step("rolled-back", str(exc), rollbacks=(unit.name,))
                except HostError as exc:
                    log.warning("rollout stopped", host=host.name, unit=unit.name, error=str(exc))
                    return step("failed", str(exc), exc.ssh)
                finally:  # the whole guarded turn (guard, staged writes, restart, wait healthy) counts as restart
                    done.extend(applied.done)
                    seconds["restart"] = seconds.get("restart", 0.0) + time.monotonic() - began
        return step("pending", "; ".join(waits)) if waits else step()

    async def _turn(
        self,
        session: Session,
        desired: DesiredState,
        host: DesiredHost,
        unit: DesiredUnit,
        group: tuple[Action, ...],
        applied: ApplyLog,
        waiting: list[Joining],
    ) -> None:
        """One member's turn under the cluster-wide restart lock (when there is one): looked at again if another
        actor may have done it meanwhile, then `_restart`."""
        async with self._cluster_turn(session, desired, unit, host.name) as held:
            if held is not None:  # another actor may have done this turn while we waited: look again
                due = await _still_due(session, host, unit.name)
                kept = hold_back(host, self.held.hold_back(host, due)[0], waiting)[0]
                group = kept if kept[-1:] == due[-1:] else ()
            if group:
                await self._restart(session, desired, host, unit, group, applied, held)

    async def _restart(
        self,
        session: Session,
        desired: DesiredState,
        host: DesiredHost,
        unit: DesiredUnit,
        group: tuple[Action, ...],
        applied: ApplyLog,
        held: Turn | None,
    ) -> None:
        """Guarded turn of one member: its staged writes, its restart, the wait until healthy. With the glass broken
        (etcd without quorum: no member is healthy alone) neither guard nor wait, and the restart queued. Raises
        HostError on refusal (nothing touched) or failure, RolledBack once `should_roll_back` put it back."""
        check = unit.rollout_check
        assert check is not None
        glass = self.glass(desired, unit)
        if not glass and unit.name == desired.etcd_unit and desired.backup is not None:
            # first: it may take minutes, and the guard's answer must be fresh when the restart comes
            progress.report(host.name, f"taking an etcd snapshot before restarting {unit.name}")
            await before_turn(session, desired, host.name, unit.name)
        if not glass:
            progress.report(host.name, f"asking the other {unit.name} members whether they are healthy")
        note = "" if glass else await guard(session, desired, unit, host.name)
        if note:  # said where the turn's actions are shown
            group = (*group[:-1], replace(group[-1], reason=f"{group[-1].reason} ({note})"))
        conn = await session.connection(host.target)
        log.info(
            "rollout restart",
            host=host.name,
            unit=unit.name,
            reason=group[-1].reason,
            staged=[a.target for a in group[:-1] if a.target],
            break_glass=glass or None,
        )
        if glass:
            group = tuple(replace(a, no_block=True) if a.kind is Kind.RESTART else a for a in group)
        # its server out of the load balancers in front of it meanwhile (engine.drain); not with the glass broken
        async with nullcontext(Drained()) if glass else drained(session, desired, host, [unit.name]) as block:
            began = time.monotonic()
            cause: HostError | None = None
            try:
                await apply_actions(conn, host, group, applied, _with_lock(self.fence, held))
            except HostError as exc:
                failure, cause = str(exc), exc
            else:
                if glass:
                    return
                progress.report(host.name, f"waiting up to {unit.rollout_timeout:g}s for {unit.name} to pass {check}")
                result = await wait_healthy(session, host, check, unit.rollout_timeout)
                if result.ok:
                    return
                failure = f"check {check!r} still fails after {unit.rollout_timeout:g}s: {result.detail}"
            block.failed = True
            restarted = len(applied.done) >= len(group) - 1  # the restart was reached (it failed, or its check did)
            if not self.should_roll_back(desired, unit, applied, cause, restarted):
                if cause is not None:
                    raise cause
                raise HostError(f"{host.name}: {unit.name} restarted but {failure}; rollout stopped")
            raise await roll_back(
                conn,
                host,
                unit,
                group,
                applied,
                failure,
                began,
                lambda: wait_healthy(session, host, check, unit.rollout_timeout),
                _lost(self.deposed, held),
            )

    @asynccontextmanager
    async def _cluster_turn(
        self, session: Session, desired: DesiredState, unit: DesiredUnit, host: str
    ) -> AsyncIterator[Turn | None]:
        """The cluster-wide restart lock in etcd for this turn (through curl on a member, `leader.on_host`), when
        there is an actor to take it and the specs name etcd's members (and the glass is whole); else None."""
        members = etcd_members(desired) if not self.break_glass else []
        if not members or self.actor is None:
            yield None
            return
        progress.report(host, f"waiting for the cluster's restart lock ({unit.name})")
        api = EtcdOnHosts(session, members, last=host)  # the member about to restart is asked last
        async with RestartLock(api, self.actor).turn(unit.name, host, wait=2 * unit.rollout_timeout + 30) as held:
            yield held


def _unit_config(desired: DesiredState, unit: str) -> Config:
    """What every host running `unit` is given for it: (host, path, content hash) of its unit and restartOn files."""
    out: set[tuple[str, str, str]] = set()
    for host in desired.hosts_with_unit(unit):
        for u in host.units:
            if u.name == unit:
                out |= {(host.name, path, sha) for path, sha in fingerprint(host, u.restart_on)}
    return frozenset(out)


async def _still_due(session: Session, host: DesiredHost, unit: str) -> tuple[Action, ...]:
    """The host's turn of `unit` as it is due now (observed again), or () when nothing of it is left to do."""
    try:
        snapshot = await observe_host(await session.connection(host.target), host)
    except HostError:
        session.forget(host.name)
        raise
    return next((g for g in plan_host(host, snapshot).rollouts() if g[-1].target == unit), ())


def _with_lock(leader: Fence | None, held: Turn | None) -> Fence | None:
    """The fence of a turn: the restart lock still held (renewed in time, then confirmed with etcd: one round trip),
    and the leader's fence."""
    if held is None:
        return leader

    async def fence() -> bool:
        return await held() and (leader is None or await leader())

    return fence


def _lost(leader: Fence | None, held: Turn | None) -> Fence | None:
    """Whether a turn's actor is known to have lost its restart lock or its leadership (what stops a rollback)."""
    if held is None:
        return leader

    async def deposed() -> bool:
        return await held.deposed() or (leader is not None and await leader())

    return deposed


async def _active(conn: Connection, unit: str) -> CheckResult:
    result = await conn.run(["systemctl", "is-active", "--", unit], timeout=30)
    state = result.stdout.decode(errors="replace").strip()
    return CheckResult(unit, state == "active", state)
