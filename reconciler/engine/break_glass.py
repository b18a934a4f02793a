"""Whether a person may break the glass: `reconciler apply --break-glass` repairs a lost etcd quorum, and only that.

Owns the refusal. The glass is broken only when this run asked etcd itself (a linearizable read of a key, through
curl on every member over its SSH session: `leader.on_host`) and every member was silent the way a member without
a quorum is: its port refused or timed out, its host unreachable, or etcd's own "etcdserver: ..." error. An
answer is a quorum: refused. Anything else (a 4xx: the URL is not etcd's client API, or etcd refused the client;
a 200 that is not etcd's answer; a TLS failure) cannot tell: refused, saying why. Without an etcd unit in the
specs, or without a way to ask it (a member whose rollout check is not an http(s) URL, e.g. a `tcp:` check), it
refuses too: a guard that cannot see etcd must not be dropped on a cluster that may be healthy. Called by the CLI
before `engine.converge.converge(..., break_glass=True)`, which then relaxes the etcd unit's guard only.
"""

from __future__ import annotations

import asyncio
import base64
import json

from reconciler.errors import HostError
from reconciler.leader.on_host import EtcdOnHosts, etcd_members
from reconciler.spec.desired import DesiredState
from reconciler.transport.session import Session

# curl's exit statuses for a member that does not serve: refused, timed out, nothing or a reset back
SILENT = {7: "connection refused", 28: "timed out", 52: "empty reply", 56: "connection reset"}
QUORUM_READ = ("/v3/kv/range", {"key": base64.b64encode(b"/reconciler/leader").decode()})  # linearizable


async def _ask(api: EtcdOnHosts, n: int) -> tuple[str, str]:
    """("answered" | "silent" | "unclear", what member `n` said) to a read that needs etcd's quorum."""
    try:
        async with asyncio.timeout(api.deadline):
            exit_status, status, body = await api.exchange(n, *QUORUM_READ)
    except TimeoutError:
        return "silent", f"no answer within {api.deadline:g}s"
    except HostError:
        return "silent", "its host cannot be reached"
    if status == 200:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("header"), dict):
            return "answered", ""
        return "unclear", "HTTP 200 with an answer that is not etcd's"
    if status == 0:
        if exit_status in SILENT:
            return "silent", SILENT[exit_status]
        return "unclear", f"curl exit {exit_status} (TLS or address trouble)"
    if status >= 500 and b"etcdserver:" in body:
        return "silent", f"HTTP {status} from etcd itself"
    return "unclear", f"HTTP {status}: not etcd's client API, or etcd refused this client"


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


async def quorum_state(session: Session, desired: DesiredState) -> tuple[str, str]:
    """What asking every member showed: ("answered", the endpoint that did), ("unclear", what each said),
    ("cannot", why it could not be asked) or ("silent", "") when every member was silent as one without quorum is."""
    why = cannot_ask(desired)
    if why:
        return "cannot", why
    api = EtcdOnHosts(session, etcd_members(desired))
    said = await asyncio.gather(*(_ask(api, n) for n in range(len(api.endpoints))))
    answered = [api.endpoints[n] for n, (kind, _) in enumerate(said) if kind == "answered"]
    if answered:
        return "answered", answered[0]
    unclear = [f"{api.endpoints[n]}: {detail}" for n, (kind, detail) in enumerate(said) if kind == "unclear"]
    if unclear:
        return "unclear", "; ".join(unclear)
    return "silent", ""


async def refusal(session: Session, desired: DesiredState) -> str:
    """Why `--break-glass` is refused on this cluster now, or "" when every member was asked and was silent."""
    kind, detail = await quorum_state(session, desired)
    if kind == "answered":
        return (
            f"etcd answers through {detail}, so it has its quorum; run `reconciler apply` without it (it takes "
            "the restart lock and the quorum guard)"
        )
    if kind == "unclear":
        return (
            "cannot tell whether etcd lost its quorum: " + detail + " (a member without a quorum refuses "
            "the connection, times out or says so: fix its rollout check's URL and TLS files, or etcd's access)"
        )
    return detail
