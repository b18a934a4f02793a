"""One reconcile pass over every host: observe -> plan -> apply -> observe again.

Hosts run in parallel; a host that fails is reported and never stops the others. Restarts of units
with a rollout policy are held back and run one host at a time (engine.rollout). The CLI calls
`plan_all` and `converge`; the daemon will call them per pass.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

import structlog

from reconciler.apply.executor import ApplyLog, apply_actions
from reconciler.engine.rollout import restart_one
from reconciler.engine.session import Session
from reconciler.errors import HostError
from reconciler.observe.facts import observe_host
from reconciler.observe.snapshot import HostSnapshot
from reconciler.plan.actions import Action, Plan
from reconciler.plan.diff import plan_host
from reconciler.spec.desired import DesiredHost, DesiredState

log = structlog.get_logger(__name__)

Status = Literal["converged", "pending", "unconverged", "failed"]


@dataclass
class HostOutcome:
    host: str
    status: Status
    plan: Plan | None = None  # the plan found before applying
    applied: list[Action] = field(default_factory=list)
    snapshot: HostSnapshot | None = None  # the last observation
    remaining: Plan | None = None  # what still differs after applying
    error: str = ""

    def summary(self) -> str:
        if self.status == "failed":
            return f"{self.host}: FAILED: {self.error}"
        if self.status == "unconverged":
            return f"{self.host}: NOT CONVERGED: {self.error}"
        if self.status == "pending":
            return f"{self.host}: {len(self.plan.actions) if self.plan else 0} change(s) pending"
        return f"{self.host}: converged ({len(self.applied)} change(s) applied)"


@dataclass
class RunResult:
    outcomes: dict[str, HostOutcome]

    @property
    def failed(self) -> list[HostOutcome]:
        return [o for o in self.outcomes.values() if o.status in ("failed", "unconverged")]

    @property
    def pending(self) -> bool:
        return any(o.status == "pending" for o in self.outcomes.values())


async def _observe_and_plan(session: Session, host: DesiredHost) -> HostOutcome:
    try:
        conn = await session.connection(host.target)
        snapshot = await observe_host(conn, host, with_checks=False)
    except HostError as exc:
        session.forget(host.name)
        return HostOutcome(host.name, "failed", error=str(exc))
    plan = plan_host(host, snapshot)
    return HostOutcome(host.name, "converged" if plan.empty else "pending", plan=plan, snapshot=snapshot)


async def plan_all(desired: DesiredState, session: Session) -> RunResult:
    """Observe and plan every host in parallel (dry run)."""
    outcomes = await asyncio.gather(*(_observe_and_plan(session, h) for _, h in sorted(desired.hosts.items())))
    return RunResult({o.host: o for o in outcomes})


async def _apply_now(session: Session, host: DesiredHost, outcome: HostOutcome) -> None:
    if outcome.plan is None or not outcome.plan.now():
        return
    applied = ApplyLog(host.name)
    try:
        await apply_actions(await session.connection(host.target), host, outcome.plan.now(), applied)
    except HostError as exc:
        outcome.status, outcome.error = "failed", str(exc)
    finally:
        outcome.applied.extend(applied.done)


async def _rollouts(session: Session, desired: DesiredState, outcomes: dict[str, HostOutcome]) -> None:
    """Held-back restarts, unit by unit, host by host, each behind the quorum guard."""
    pending = [(name, a) for name, o in sorted(outcomes.items()) if o.status != "failed" and o.plan
               for a in o.plan.rollouts()]
    for unit_name in dict.fromkeys(a.target for _, a in pending):
        for host_name, action in [(h, a) for h, a in pending if a.target == unit_name]:
            host = desired.hosts[host_name]
            unit = next(u for u in host.units if u.name == unit_name)
            try:
                await restart_one(session, desired, host, unit, action)
                outcomes[host_name].applied.append(action)
            except HostError as exc:
                outcomes[host_name].status, outcomes[host_name].error = "failed", str(exc)
                log.warning("rollout stopped", host=host_name, unit=unit_name, error=str(exc))


async def _verify(session: Session, host: DesiredHost, outcome: HostOutcome, wait: float, interval: float) -> None:
    """Observe again (checks included) until the plan is empty and every check passes, or `wait` runs out."""
    deadline = time.monotonic() + wait
    while True:
        try:
            snapshot = await observe_host(await session.connection(host.target), host)
        except HostError as exc:
            session.forget(host.name)
            outcome.status, outcome.error = "failed", str(exc)
            return
        outcome.snapshot = snapshot
        outcome.remaining = plan_host(host, snapshot)
        if outcome.remaining.empty and snapshot.healthy:
            outcome.status, outcome.error = "converged", ""
            return
        if time.monotonic() >= deadline:
            problems = [a.headline() for a in outcome.remaining.actions]
            problems += [f"check {c.name} failing ({c.detail})" for c in snapshot.failing_checks()]
            outcome.status, outcome.error = "unconverged", "; ".join(problems)
            return
        await asyncio.sleep(interval)


async def observe_status(desired: DesiredState, session: Session) -> RunResult:
    """Observe every host with its checks, change nothing: converged means no drift and all checks pass."""
    outcomes = {n: HostOutcome(n, "pending") for n in sorted(desired.hosts)}
    await asyncio.gather(*(_verify(session, desired.hosts[n], o, 0.0, 0.0) for n, o in outcomes.items()))
    return RunResult(outcomes)


async def converge(desired: DesiredState, session: Session, *, wait: float = 120.0, interval: float = 1.0) -> RunResult:
    """Bring every host to its desired state; returns per-host outcomes (never raises for a host's failure)."""
    result = await plan_all(desired, session)
    outcomes = result.outcomes
    live = [desired.hosts[n] for n, o in sorted(outcomes.items()) if o.status != "failed"]
    await asyncio.gather(*(_apply_now(session, h, outcomes[h.name]) for h in live))
    await _rollouts(session, desired, outcomes)
    live = [h for h in live if outcomes[h.name].status != "failed"]
    await asyncio.gather(*(_verify(session, h, outcomes[h.name], wait, interval) for h in live))
    for outcome in outcomes.values():
        log.info("host result", host=outcome.host, status=outcome.status, applied=len(outcome.applied), error=outcome.error or None)
    return result
