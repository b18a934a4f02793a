"""Health-gated, one-host-at-a-time restarts (etcd members): the quorum guard lives here.

A member's turn (its staged config writes and its restart) begins only while every other member of
the unit is healthy, and the next one waits until it is healthy again. Called by `engine.converge` after the parallel phase; never restarts two at once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import structlog

from reconciler.apply.executor import ApplyLog, Fence, apply_actions
from reconciler.engine.rollback import roll_back
from reconciler.errors import HostError, NotLeader
from reconciler.observe.facts import probe
from reconciler.observe.snapshot import CheckResult
from reconciler.plan.actions import Action, Kind
from reconciler.spec.desired import DesiredHost, DesiredState, DesiredUnit
from reconciler.transport.session import Session
from reconciler.waits import looks

log = structlog.get_logger(__name__)


class RolloutRefused(HostError):
    """The guard said no: restarting now could cost quorum."""


async def _health(session: Session, host: DesiredHost, check_name: str) -> CheckResult:
    check = host.check(check_name)
    if check is None:
        return CheckResult(check_name, False, "check not defined on this host")
    try:
        conn = await session.connection(host.target)
        return await probe(conn, host.name, check)
    except HostError as exc:
        return CheckResult(check_name, False, f"unreachable: {exc}")


async def wait_healthy(
    session: Session, host: DesiredHost, check_name: str, timeout: float, interval: float = 0.5
) -> CheckResult:
    deadline = time.monotonic() + timeout
    for pause in looks(interval):
        result = await _health(session, host, check_name)
        if result.ok or time.monotonic() >= deadline:
            return result
        await asyncio.sleep(pause)
    raise AssertionError("unreachable")


async def guard(session: Session, desired: DesiredState, unit: DesiredUnit, host: str) -> str:
    """Raise RolloutRefused unless every other host running `unit` passes the unit's health check; or, for a unit
    that is not etcd, unless this member fails its check itself: restarting a member that serves nothing takes
    nothing away (a first rollout: HAProxy on Debian's default config answers no check on any host, and would
    never come up one host at a time). Then the turn goes ahead and the returned note says why. etcd's guard is
    never relaxed here: an unhealthy member among unhealthy ones is a quorum at stake (`apply --break-glass`)."""
    assert unit.rollout_check is not None
    peers = [h for h in desired.hosts_with_unit(unit.name) if h.name != host]
    results = await asyncio.gather(*(_health(session, p, unit.rollout_check) for p in peers))
    bad = [f"{p.name} ({r.detail})" for p, r in zip(peers, results) if not r.ok]
    if not bad:
        return ""
    if unit.name not in desired.etcd_units:
        mine = await _health(session, desired.hosts[host], unit.rollout_check)
        if not mine.ok:
            note = (
                f"goes ahead with other member(s) unhealthy ({', '.join(bad)}): {host} fails its check too "
                f"({mine.detail}), so restarting it takes nothing away, and {unit.name} is not etcd"
            )
            log.warning("rollout guard: nothing to protect", host=host, unit=unit.name, note=note)
            return note
    hint = ""
    if len(bad) == len(peers) and unit.name in desired.etcd_units:
        hint = (
            f"; no other member answers: if {unit.name} lost its quorum, or is forming for the first time over a "
            "distribution's own etcd, see `reconciler apply --break-glass`"
        )
    raise RolloutRefused(
        f"{host}: not restarting {unit.name}: other member(s) unhealthy: {', '.join(bad)}; "
        f"a restart now could lose quorum{hint}"
    )


async def restart_one(
    session: Session,
    desired: DesiredState,
    host: DesiredHost,
    unit: DesiredUnit,
    group: tuple[Action, ...],
    applied: ApplyLog,
    fence: Fence | None = None,
    break_glass: bool = False,
    deposed: Fence | None = None,
) -> None:
    """Guarded turn of one member: its staged writes, then its restart, then wait until it is healthy.
    With `break_glass` (a person repairing a lost quorum: no member can be healthy alone), neither the guard
    nor the wait: the next member's turn follows at once, and the pass's verification waits for them all.

    Raises HostError on refusal (nothing was touched) or when the member does not come back healthy; then,
    with `rollback` (the default), its staged files are restored and it is restarted on them: RolledBack.
    """
    check = unit.rollout_check
    assert check is not None
    note = "" if break_glass else await guard(session, desired, unit, host.name)
    if note:  # said where the turn's actions are shown
        group = (*group[:-1], replace(group[-1], reason=f"{group[-1].reason} ({note})"))
    conn = await session.connection(host.target)
    log.info(
        "rollout restart",
        host=host.name,
        unit=unit.name,
        reason=group[-1].reason,
        staged=[a.target for a in group[:-1] if a.target],
        break_glass=break_glass or None,
    )
    if break_glass:
        group = tuple(replace(a, no_block=True) if a.kind is Kind.RESTART else a for a in group)
    began = time.monotonic()
    try:
        await apply_actions(conn, host, group, applied, fence)
    except HostError as exc:
        if (
            len(applied.done) < len(group) - 1
            or not (unit.rollback and applied.backups)
            or isinstance(exc, NotLeader)
            or break_glass
        ):  # failed before the restart, nothing to roll back, no longer the leader, or a person repairs by hand
            raise
        failure = str(exc)
    else:
        if break_glass:
            return
        result = await wait_healthy(session, host, check, unit.rollout_timeout)
        if result.ok:
            return
        failure = f"check {check!r} still fails after {unit.rollout_timeout:g}s: {result.detail}"
        if not (unit.rollback and applied.backups):
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
        deposed,
    )
