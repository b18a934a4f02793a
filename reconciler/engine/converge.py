"""One reconcile pass over every host: observe -> plan -> apply -> observe again.

Hosts run in parallel; a host that fails is reported and never stops the others. Restarts of units
with a rollout policy wait for that unit's lock, so they run one host at a time (engine.rollout).
The CLI calls `plan_all`, `converge` and `observe_status`; the daemon calls `reconcile_host` per host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import structlog

from reconciler.apply.executor import ApplyLog, Fence, apply_actions
from reconciler.engine.held import Config, Held
from reconciler.engine.rollback import RolledBack, fingerprint, roll_back
from reconciler.engine.rollout import restart_one
from reconciler.errors import HostError, NotLeader
from reconciler.leader.on_host import EtcdOnHosts, etcd_members
from reconciler.leader.restart_lock import RestartLock, Turn
from reconciler.observe.facts import observe_host
from reconciler.observe.snapshot import CheckResult
from reconciler.outcome import HostOutcome, Looked, RunResult, Status, Step
from reconciler.plan.actions import Action, Kind, Plan
from reconciler.plan.diff import plan_host
from reconciler.spec.desired import DesiredHost, DesiredState, DesiredUnit
from reconciler.transport.base import Connection
from reconciler.transport.session import Session
from reconciler.waits import looks

log = structlog.get_logger(__name__)

HELD = " (held: not tried again on this host until the specs change)"


async def _observe_and_plan(session: Session, host: DesiredHost, *, with_checks: bool = False) -> HostOutcome:
    began = time.monotonic()
    try:
        conn = await session.connection(host.target)
        snapshot = await observe_host(conn, host, with_checks=with_checks)
    except HostError as exc:
        session.forget(host.name)
        return HostOutcome(host.name, "failed", error=str(exc), ssh_error=exc.ssh)
    plan = plan_host(host, snapshot)
    return HostOutcome(
        host.name,
        "converged" if plan.empty else "pending",
        plan=plan,
        snapshot=snapshot,
        seconds={"observe": time.monotonic() - began},
    )


def _chosen(desired: DesiredState, only: list[str] | None) -> list[str]:
    return sorted(n for n in desired.hosts if not only or n in only)


async def plan_all(desired: DesiredState, session: Session, only: list[str] | None = None) -> RunResult:
    """Observe and plan every host (or those in `only`) in parallel (dry run)."""
    outcomes = await asyncio.gather(*(_observe_and_plan(session, desired.hosts[n]) for n in _chosen(desired, only)))
    return RunResult({o.host: o for o in outcomes})


def _held_back(host: DesiredHost, actions: tuple[Action, ...], held: Held) -> tuple[tuple[Action, ...], list[str]]:
    """The actions without what a config rolled back before would bring again: the writes of its rolled-back files,
    and every restart, reload, daemon-reload or re-enable that those files alone bring, whichever unit reads them.
    A held file stays as it is on the host, so the other units reading it have nothing new to read: restarting them
    pass after pass would change nothing but their uptime. What else brings an action still does (a unit's own
    new file, a unit found stopped, systemd asking for a daemon-reload)."""
    paths: set[str] = set()
    why: list[str] = []
    for unit in host.units:
        entry = held.lookup(host.name, unit.name, fingerprint(host, unit.restart_on))
        if entry is not None:
            paths |= entry.paths
            why.append(entry.why + HELD)
    if not paths:
        return actions, why

    def brought_by_held(a: Action) -> bool:
        if a.kind is Kind.WRITE:
            return a.target in paths
        return (
            a.kind in (Kind.RESTART, Kind.RELOAD, Kind.DAEMON_RELOAD, Kind.ENABLE)
            and bool(a.because)
            and (set(a.because) <= paths)
        )

    return tuple(a for a in actions if not brought_by_held(a)), why


async def _apply_now(
    session: Session,
    host: DesiredHost,
    plan: Plan | None,
    held: Held,
    fence: Fence | None = None,
    deposed: Fence | None = None,
) -> Step:
    """The plan's actions that need no turn (writes, enables, restarts of units without a rollout policy), minus
    what was rolled back before on the same config; a failed restart of a unit is rolled back here."""
    actions, why = _held_back(host, plan.now() if plan else (), held)
    stopped = Step("rolled-back", "; ".join(why)) if why else Step()
    if not actions:
        return stopped
    applied = ApplyLog(host.name)
    began = time.monotonic()
    try:
        conn = await session.connection(host.target)
        await apply_actions(conn, host, actions, applied, fence)
    except HostError as exc:
        failed = actions[len(applied.done)] if len(applied.done) < len(actions) else None
        unit = next(
            (
                u
                for u in host.units
                if failed is not None and failed.kind in (Kind.START, Kind.RESTART) and u.name == failed.target
            ),
            None,
        )
        written = [p for p in applied.backups if unit is not None and p in unit.restart_on]
        if unit is None or not unit.rollback or not written or exc.ssh or isinstance(exc, NotLeader):
            return Step.of(applied, "failed", str(exc), exc.ssh)
        tried = tuple(a for a in applied.done if a.target in written)
        try:
            rolled = await roll_back(
                conn, host, unit, tried, applied, str(exc), began, lambda: _active(conn, unit.name), deposed
            )
        except HostError as again:
            return Step.of(applied, "failed", f"{exc}; rolling back failed too: {again}", exc.ssh)
        held.hold(host.name, unit.name, fingerprint(host, unit.restart_on), str(rolled), written)
        return Step.of(applied, "rolled-back", str(rolled), rollbacks=(unit.name,))
    return Step.of(applied, stopped.status, stopped.error)


async def _active(conn: Connection, unit: str) -> CheckResult:
    result = await conn.run(["systemctl", "is-active", "--", unit], timeout=30)
    state = result.stdout.decode(errors="replace").strip()
    return CheckResult(unit, state == "active", state)


FOLLOWER = "this replica applies nothing: it does not lead, or its specs are not the ones the cluster agreed on (see /status leader)"


class Rollouts:
    """One lock per rollout unit, shared by every host of a run (or of the daemon): one restart at a time; what was
    rolled back (held per host) and which rollouts stopped because of it, until the specs change."""

    def __init__(self, held: Held | None = None) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self.stopping = asyncio.Event()  # set on shutdown: no new rollout restart begins
        # configs rolled back: not tried again on that host, and their rollout not gone on with, until the specs change
        self.held = held if held is not None else Held()
        self.fence: Fence | None = None  # with leader election: asked before the pass applies, and before each action
        self.deposed: Fence | None = None  # with leader election: whether etcd shows another leads (asked by rollbacks)
        self.actor: str | None = None  # who takes the cluster-wide restart lock in etcd (None: no such lock)
        # a person repairs a lost etcd quorum: no restart lock; etcd's members without the guard and the health wait
        self.break_glass = False

    def stop(self, desired: DesiredState, unit: str, why: str) -> None:
        """A member was rolled back: no other member's turn of this unit begins on the same specs."""
        self.held.stop(unit, _unit_config(desired, unit), why)

    def stopped(self, desired: DesiredState, unit: str) -> str | None:
        return self.held.stopped(unit, _unit_config(desired, unit))

    def lock(self, unit: str) -> asyncio.Lock:
        return self._locks.setdefault(unit, asyncio.Lock())


def _unit_config(desired: DesiredState, unit: str) -> Config:
    """What every host running `unit` is given for it: (host, path, content hash) of its unit and restartOn files."""
    out: set[tuple[str, str, str]] = set()
    for host in desired.hosts_with_unit(unit):
        for u in host.units:
            if u.name == unit:
                out |= {(host.name, path, sha) for path, sha in fingerprint(host, u.restart_on)}
    return frozenset(out)


@asynccontextmanager
async def _cluster_turn(
    session: Session, desired: DesiredState, rollouts: Rollouts, unit: DesiredUnit, host: str
) -> AsyncIterator[Turn | None]:
    """The cluster-wide restart lock in etcd for this turn (through curl on a member, `leader.on_host`), when there
    is an actor to take it and the specs name etcd's members; whether it is still held, else None."""
    members = etcd_members(desired) if not rollouts.break_glass else []
    if not members or rollouts.actor is None:
        yield None
        return
    api = EtcdOnHosts(session, members, last=host)  # the member about to restart is asked last
    lock = RestartLock(api, rollouts.actor)
    async with lock.turn(unit.name, host, wait=2 * unit.rollout_timeout + 30) as held:
        yield held


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


async def _rollout(
    session: Session, desired: DesiredState, host: DesiredHost, plan: Plan | None, rollouts: Rollouts
) -> Step:
    """This host's held-back restarts, each taken in turn with the other hosts, behind the quorum guard."""
    done: list[Action] = []
    seconds: dict[str, float] = {}

    def step(
        status: Status | None = None, error: str = "", ssh_error: bool = False, rollbacks: tuple[str, ...] = ()
    ) -> Step:
        return Step(status, error, ssh_error, tuple(done), seconds, rollbacks)

    for planned in plan.rollouts() if plan else ():
        unit = next(u for u in host.units if u.name == planned[-1].target)
        group, why = _held_back(host, planned, rollouts.held)
        if group[-1:] != planned[-1:]:  # its restart is brought by a held config only: the turn waits for new specs
            return step("rolled-back", "; ".join(why))
        async with rollouts.lock(unit.name):
            if rollouts.stopping.is_set():  # staged writes wait too: the host stays consistent
                return step("failed", f"{host.name}: shutting down before restarting {unit.name}")
            stopped = rollouts.stopped(desired, unit.name)
            if stopped:  # another member failed on these specs: the rollout does not go on until they change
                return step("failed", f"{host.name}: rollout of {unit.name} stopped: {stopped}")
            applied = ApplyLog(host.name)
            began = time.monotonic()
            try:
                async with _cluster_turn(session, desired, rollouts, unit, host.name) as held:
                    if held is not None:  # another actor may have done this turn while we waited: look again
                        group = await _still_due(session, host, unit.name)
                        kept = _held_back(host, group, rollouts.held)[0]
                        group = kept if kept[-1:] == group[-1:] else ()
                    if group:
                        fence = _with_lock(rollouts.fence, held)
                        deposed = _lost(rollouts.deposed, held)
                        glass = rollouts.break_glass and unit.name == desired.etcd_unit  # its guard only
                        await restart_one(session, desired, host, unit, group, applied, fence, glass, deposed)
            except RolledBack as exc:
                paths = [a.target for a in applied.done if a.kind is Kind.WRITE]
                if paths:
                    rollouts.held.hold(host.name, unit.name, fingerprint(host, unit.restart_on), str(exc), paths)
                rollouts.stop(desired, unit.name, str(exc))
                log.warning("rollout stopped: rolled back", host=host.name, unit=unit.name, error=str(exc))
                return step("rolled-back", str(exc), rollbacks=(unit.name,))
            except HostError as exc:
                log.warning("rollout stopped", host=host.name, unit=unit.name, error=str(exc))
                return step("failed", str(exc), exc.ssh)
            finally:
                # the whole guarded turn (guard, staged writes, restart, wait healthy) counts as restart
                done.extend(applied.done)
                seconds["restart"] = seconds.get("restart", 0.0) + time.monotonic() - began
    return step()


async def _verify(session: Session, host: DesiredHost, wait: float, interval: float) -> Looked:
    """Observe again (checks included) until the plan is empty and every check passes, or `wait` runs out.
    Each look waits on the host up to `interval` for failing checks to pass (the host probes again every 50 ms): a
    restarted unit is seen as soon as it answers, in one round trip. Between looks the pauses of `looks`, less
    the time the look took."""
    began = time.monotonic()
    deadline = began + wait
    for pause in looks(interval):
        look = time.monotonic()
        try:
            conn = await session.connection(host.target)
            snapshot = await observe_host(conn, host, settle=min(interval, max(0.0, deadline - look)))
        except HostError as exc:
            session.forget(host.name)
            return Looked("failed", str(exc), exc.ssh, seconds=time.monotonic() - began)
        remaining = plan_host(host, snapshot)
        if remaining.empty and snapshot.healthy:
            return Looked("converged", "", snapshot=snapshot, remaining=remaining, seconds=time.monotonic() - began)
        if time.monotonic() >= deadline:
            problems = [a.headline() for a in remaining.actions]
            problems += [f"check {c.name} failing ({c.detail})" for c in snapshot.failing_checks()]
            return Looked(
                "unconverged",
                "; ".join(problems),
                snapshot=snapshot,
                remaining=remaining,
                seconds=time.monotonic() - began,
            )
        await asyncio.sleep(max(0.0, look + pause - time.monotonic()))
    raise AssertionError("unreachable")


async def observe_status(desired: DesiredState, session: Session, only: list[str] | None = None) -> RunResult:
    """Observe every host with its checks, change nothing: converged means no drift and all checks pass."""
    names = _chosen(desired, only)
    looks = await asyncio.gather(*(_verify(session, desired.hosts[n], 0.0, 0.0) for n in names))
    return RunResult({n: HostOutcome.of(HostOutcome(n, "pending"), [], looked) for n, looked in zip(names, looks)})


async def reconcile_host(
    desired: DesiredState,
    name: str,
    session: Session,
    rollouts: Rollouts,
    *,
    wait: float = 120.0,
    interval: float = 1.0,
    changed: bool = False,
) -> HostOutcome:
    """One host, start to finish: observe, plan, apply, rollout restarts (serialised across hosts), verify.

    The first observation includes the health checks, so a host with nothing to do and every check
    passing is done in one round trip (the daemon's resync of a converged fleet); otherwise the
    observation after applying decides. When the host's desired state `changed` since its last pass, it
    most likely has work: the first observation leaves the checks to that later one. Each stage returns what
    it did; the outcome is built once.
    """
    host = desired.hosts[name]
    first = await _observe_and_plan(session, host, with_checks=not changed)
    if first.status == "failed":
        outcome = first
    elif first.status == "converged" and not changed and first.snapshot is not None and first.snapshot.healthy:
        outcome = replace(first, remaining=first.plan)  # nothing to do, every check passes: no second look
    elif rollouts.fence is not None and first.plan is not None and first.plan.actions and not await rollouts.fence():
        outcome = replace(first, status="pending", remaining=first.plan, error=FOLLOWER)
    else:
        steps = [await _apply_now(session, host, first.plan, rollouts.held, rollouts.fence, rollouts.deposed)]
        if steps[-1].status != "failed":
            steps.append(await _rollout(session, desired, host, first.plan, rollouts))
        stopped = Step.last_stop(steps).status
        looked = None
        if stopped == "rolled-back":  # one look for /status; waiting would not make it converge
            looked = await _verify(session, host, 0.0, interval)
        elif stopped != "failed":
            looked = await _verify(session, host, wait, interval)
        outcome = HostOutcome.of(first, steps, looked)
    log.debug(
        "host result", host=name, status=outcome.status, applied=len(outcome.applied), error=outcome.error or None
    )
    return outcome


async def converge(
    desired: DesiredState,
    session: Session,
    *,
    wait: float = 120.0,
    interval: float = 1.0,
    only: list[str] | None = None,
    actor: str | None = None,
    break_glass: bool = False,
) -> RunResult:
    """Bring every host (or those in `only`) to its desired state, in parallel; a host's failure never raises.

    Hosts left out are still peers: the quorum guard checks them before any rollout restart. With an `actor`, each
    rollout turn holds the cluster-wide restart lock in etcd; `break_glass` skips the lock and the guard.
    """
    rollouts = Rollouts()
    rollouts.actor, rollouts.break_glass = actor, break_glass
    outcomes = await asyncio.gather(
        *(reconcile_host(desired, n, session, rollouts, wait=wait, interval=interval) for n in _chosen(desired, only))
    )
    return RunResult({o.host: o for o in outcomes})
