"""The quorum guard: whether a member of a one-at-a-time unit may restart now, and waiting until it is healthy.

Owns the health of a unit's members as its rollout HealthCheck says (`_health`, `wait_healthy`) and the rule
(`guard`): every other member healthy, or, for a unit that is not etcd, this member failing its own check (it
serves nothing: restarting it takes nothing away). Called by `engine.rollouts` before each turn.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from reconciler.errors import HostError
from reconciler.observe.facts import probe
from reconciler.observe.snapshot import CheckResult
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
