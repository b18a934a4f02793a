"""Before a plan starts or restarts a component: will it start on what the host has? Asked before anything of the
host is touched, so what would fail is a located plan-time error instead of a failed restart and a rollback.

Owns putting together the answers: every flag a component is given is one its binary on the host accepts
(`observe.programs`), and an etcd member is started only on a version its cluster accepts (`components.
etcd_versions`: the cluster's version from a member, `leader.on_host`; asked only when etcd is started). Used by
`engine.converge` for `plan`, `apply` and the daemon alike.
"""

from __future__ import annotations

from dataclasses import replace

import structlog

from reconciler.components import etcd_versions
from reconciler.errors import HostError
from reconciler.leader.on_host import EtcdOnHosts, etcd_members
from reconciler.observe.programs import refusals
from reconciler.outcome import HostOutcome
from reconciler.plan.actions import STARTS
from reconciler.spec.desired import DesiredHost, DesiredState
from reconciler.transport.session import Session

log = structlog.get_logger(__name__)


async def startable(session: Session, desired: DesiredState, host: DesiredHost, outcome: HostOutcome) -> HostOutcome:
    """The planned outcome, or a failed one saying why a component it starts or restarts would not start."""
    starting = {a.target for a in outcome.plan.actions if a.kind in STARTS} if outcome.plan else set()
    if not starting:
        return outcome
    try:
        answer = await refusals(await session.connection(host.target), host, starting)
        problems = [r.message for r in answer.refused]
        if desired.etcd_unit in answer.versions:
            path, said = answer.versions[desired.etcd_unit]
            cluster = await _cluster_version(session, desired, host.name)
            problem = etcd_versions.refused(desired.etcd_unit, path, host.name, said, cluster)
            problems += [problem] if problem else []
    except HostError as exc:
        session.forget(host.name)
        return HostOutcome(host.name, "failed", error=str(exc), ssh_error=exc.ssh)
    if not problems:
        return outcome
    error = "; ".join(problems)
    log.error("would not start", host=host.name, units=sorted(starting), error=error)
    return replace(outcome, status="failed", error=error)


async def _cluster_version(session: Session, desired: DesiredState, first: str) -> str | None:
    """The version etcd's cluster runs at, as a member says it (the member on host `first` asked first: its own
    connection is open); None when no member answers (or none is named)."""
    members = sorted(etcd_members(desired), key=lambda m: m[0].name != first)
    return await EtcdOnHosts(session, members).cluster_version() if members else None
