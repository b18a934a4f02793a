"""One reconcile pass over every host: observe -> plan -> apply -> observe again.

Hosts run in parallel; a host that fails is reported and never stops the others. What is applied, in which
order, under which lock, and what is rolled back is `engine.rollouts`' to decide.
The CLI calls `plan_all`, `converge` and `observe_status`; the daemon calls `reconcile_host` per host.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import structlog

from reconciler import progress
from reconciler.engine.rollouts import Rollouts
from reconciler.engine.startable import startable
from reconciler.errors import HostError
from reconciler.observe.facts import observe_host
from reconciler.outcome import HostOutcome, Looked, RunResult, Step
from reconciler.plan.diff import plan_host
from reconciler.spec.desired import DesiredHost, DesiredState
from reconciler.transport.session import Session
from reconciler.waits import looks

log = structlog.get_logger(__name__)


async def _observe_and_plan(
    session: Session, host: DesiredHost, *, with_checks: bool = False, renewed: bool = False
) -> HostOutcome:
    began = time.monotonic()
    try:
        progress.report(host.name, "connecting")
        conn = await session.connection(host.target)
        progress.report(host.name, "observing")
        snapshot = await observe_host(conn, host, with_checks=with_checks, renewed=renewed)
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
    outcomes = await asyncio.gather(*(_planned(session, desired, desired.hosts[n]) for n in _chosen(desired, only)))
    return RunResult({o.host: o for o in outcomes})


async def _planned(session: Session, desired: DesiredState, host: DesiredHost) -> HostOutcome:
    outcome = await startable(session, desired, host, await _observe_and_plan(session, host, renewed=True))
    progress.finished(host.name, outcome.status)
    return outcome


FOLLOWER = "this replica applies nothing: it does not lead, or its specs are not the ones the cluster agreed on (see /status leader)"


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
            progress.report(host.name, "verifying" if wait else "connecting")
            conn = await session.connection(host.target)
            if not wait:
                progress.report(host.name, "observing")
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
        waiting = [a.headline() for a in remaining.actions] + [
            f"{c.name} ({c.detail})" for c in snapshot.failing_checks()
        ]
        progress.report(host.name, f"waiting up to {deadline - time.monotonic():.0f}s for: {'; '.join(waiting)}")
        await asyncio.sleep(max(0.0, look + pause - time.monotonic()))
    raise AssertionError("unreachable")


async def observe_status(desired: DesiredState, session: Session, only: list[str] | None = None) -> RunResult:
    """Observe every host with its checks, change nothing: converged means no drift and all checks pass."""
    names = _chosen(desired, only)
    looks = await asyncio.gather(*(_looked(session, desired.hosts[n]) for n in names))
    return RunResult({n: HostOutcome.of(HostOutcome(n, "pending"), [], looked) for n, looked in zip(names, looks)})


async def _looked(session: Session, host: DesiredHost) -> Looked:
    looked = await _verify(session, host, 0.0, 0.0)
    progress.finished(host.name, looked.status)
    return looked


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
    elif (checked := await startable(session, desired, host, first)).status == "failed":
        outcome = checked
    else:
        steps = [await rollouts.now(session, desired, host, first.plan)]
        if steps[-1].status != "failed":
            steps.append(await rollouts.turns(session, desired, host, first.plan))
        stopped = Step.last_stop(steps).status
        looked = None
        if stopped in ("rolled-back", "pending"):  # one look for /status; waiting would not make it converge
            looked = await _verify(session, host, 0.0, interval)
        elif stopped != "failed":
            looked = await _verify(session, host, wait, interval)
        outcome = HostOutcome.of(first, steps, looked)
    progress.finished(name, outcome.status)
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
    rollout turn holds the cluster-wide restart lock in etcd; `break_glass` skips the lock, and etcd's guard only.
    """
    rollouts = Rollouts(actor=actor, break_glass=break_glass)
    outcomes = await asyncio.gather(
        *(reconcile_host(desired, n, session, rollouts, wait=wait, interval=interval) for n in _chosen(desired, only))
    )
    return RunResult({o.host: o for o in outcomes})
