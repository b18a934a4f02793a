"""Whether a person may break the glass: `reconciler apply --break-glass` repairs a lost etcd quorum, and only that.

Owns the refusal. The glass is broken only when this run asked etcd itself (a linearizable read, through curl on
each member over its SSH session: `leader.on_host`) and no member answered. Without an etcd unit in the specs, or
without a way to ask it (a member whose rollout check is not an http(s) URL of etcd, e.g. a `tcp:` check), it
refuses and says why: a guard that cannot see etcd must not be dropped on a cluster that may be healthy. Called by
the CLI before `engine.converge.converge(..., break_glass=True)`, which then relaxes the etcd unit's guard only.
"""

from __future__ import annotations

from reconciler.leader.on_host import etcd_answers, etcd_members
from reconciler.spec.desired import DesiredState
from reconciler.transport.session import Session


def cannot_ask(desired: DesiredState) -> str:
    """Pure: why this run could not ask etcd whether it has its quorum, or "" when every member can be asked."""
    unit = desired.etcd_unit
    if unit is None:
        return (
            "no etcd unit in the specs (an EtcdTuning's unit, a unit whose ExecStart runs etcd, or etcd.service): "
            "--break-glass repairs etcd's quorum and nothing else"
        )
    askable = {host.name for host, _ in etcd_members(desired)}
    mute = [h.name for h in desired.hosts_with_unit(unit) if h.name not in askable]
    if mute:
        return (
            f"cannot ask etcd whether it lost its quorum: {unit} on {', '.join(mute)} has no rollout health check "
            "with an http(s) URL of etcd (a tcp: check cannot read a key); give it one, e.g. "
            "https://ADDRESS:2379/health with its TLS files"
        )
    return ""


async def refusal(session: Session, desired: DesiredState) -> str:
    """Why `--break-glass` is refused on this cluster now, or "" when etcd was asked and did not answer."""
    why = cannot_ask(desired)
    if why:
        return why
    answered = await etcd_answers(session, desired)
    if answered:
        return (
            f"etcd answers through {answered}, so it has its quorum; run `reconciler apply` without it (it takes "
            "the restart lock and the quorum guard)"
        )
    return ""
