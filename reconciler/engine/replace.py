"""`reconciler etcd replace-member HOST`: the etcd member of a master whose machine is gone, replaced by the new
machine the specs now describe for it, never through a voting member that is not running.

Owns the order and what is said at each step. Refused before anything is changed unless every other member the
specs name is a started voting member that answers (removing one more from a cluster missing a member is how
quorum is lost), the cluster holds no member the specs do not name, and the old member is silent (a member that
answers is not dead; `--force` replaces it anyway). Then, under the cluster-wide restart lock of the etcd unit:
the old member removed (etcd's order: the cluster is one voter smaller, every remaining voter running), the new
one added as a **learner** (it counts for no quorum), its first start given `initial-cluster-state=existing` and
the cluster as it is (etcd_join.sh: a runtime drop-in under /run, written before the member starts so that any
start of it, systemd's or the daemon's, joins; what a failed first start left in the data dir moved aside),
waited for until it has started (bounded: a learner that never starts is removed again, the cluster left as
before it was added), promoted once etcd says it is in sync (bounded), the drop-in removed, its health check
waited for. Each step is looked up again when the command is run again: a learner of the host's peer URLs is
taken up where it was (started: promoted; not started: started again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from reconciler.components.systemd import service
from reconciler.engine.guard import wait_healthy
from reconciler.engine.restore import Member, RestoreRefused, members, systemctl
from reconciler.errors import HostError
from reconciler.leader.gateway import EtcdUnavailable
from reconciler.leader.membership import NAME, URL, Entry, EtcdRefused, Membership
from reconciler.leader.on_host import EtcdOnHosts, etcd_members
from reconciler.leader.restart_lock import RestartLock
from reconciler.observe.facts import shipped_script
from reconciler.spec.desired import DesiredCheck, DesiredHost, DesiredState
from reconciler.terminal import printable
from reconciler.transport.session import Session

SCRIPT = shipped_script("etcd_join.sh", "reconciler.engine")
LOOK_S = 0.5  # between looks at the learner
SETTLE_S = 30.0  # how long an add refused as "unhealthy cluster" (etcd's strict reconfiguration check) is asked again
HEALTHY_S = 120.0
MAX_ENV = 16384  # bytes of the join environment: 64 members of long names and URLs fit
T = TypeVar("T")


class ReplaceRefused(RestoreRefused):
    """Not started: why (nothing was changed)."""


@dataclass(frozen=True)
class Replaced:
    member: str  # the new member's ID, hex
    started_s: float  # from its start to etcd listing it as started
    promoted_s: float  # from its start to its promotion


@dataclass(frozen=True)
class Plan:
    target: Member
    check: DesiredCheck
    others: list[tuple[DesiredHost, DesiredCheck]]
    peers: tuple[str, ...]
    cluster: list[Member]


def plan(desired: DesiredState, host: str) -> Plan:
    """Pure: the member to replace and the members that stay, from the specs; ReplaceRefused when they cannot say."""
    try:
        cluster = members(desired)
    except RestoreRefused as exc:
        raise ReplaceRefused(str(exc)) from exc
    target = next((m for m in cluster if m.host.name == host), None)
    if target is None:
        names = ", ".join(m.host.name for m in cluster) or "none"
        raise ReplaceRefused(f"{host} runs no member of the cluster's etcd in the specs (members: {names})")
    if not NAME.fullmatch(target.name):
        raise ReplaceRefused(f"{host}: etcd's name {target.name!r} is not a plain member name")
    asked = etcd_members(desired)
    check = next((c for h, c in asked if h.name == host), None)
    others = [(h, c) for h, c in asked if h.name != host]
    if check is None or len(others) != len(cluster) - 1:
        raise ReplaceRefused(
            "every member needs a rollout health check with etcd's https URL (it is how etcd is asked)"
        )
    if len(cluster) < 3:
        raise ReplaceRefused(
            f"the cluster has {len(cluster)} member(s): with one of them dead it has no quorum to change its "
            "membership (and no member to spare for the new one's restart); restore from a snapshot"
        )
    peers = tuple(u for u in target.peer_urls.split(",") if u)
    if not peers or not all(URL.fullmatch(u) for u in peers):
        raise ReplaceRefused(
            f"{host}: etcd's initial-advertise-peer-urls {target.peer_urls[:200]!r} are not plain URLs"
        )
    flags = _flags(target)
    if flags:
        raise ReplaceRefused(
            f"{host}: {target.unit} gives etcd {', '.join(flags)} on its command line: the new member's first start "
            "is set through its environment, which a flag shadows (give them in its EnvironmentFile instead)"
        )
    return Plan(target, check, others, peers, cluster)


JOIN_SETTINGS = (
    "initial-cluster",
    "initial-cluster-state",
    "listen-client-urls",
    "advertise-client-urls",
    "config-file",
)


def _flags(m: Member) -> list[str]:
    """Pure: the settings of the join given as flags in the member's unit (etcd takes those over the environment)."""
    u = next(x for x in m.host.units if x.name == m.unit)
    texts = {p: f.content.decode("utf-8", errors="replace") for p, f in m.host.files.items()}
    given = service(u.path, texts).flags()
    return [f"--{name}" for name in JOIN_SETTINGS if name in given]


def hidden_client_url(check: DesiredCheck) -> str:
    """Pure: where the learner serves clients: an address of the loopback no client is given (127.0.0.2), with the
    scheme and port of etcd's client URL. A learner refuses clients' requests ("rpc not supported for learner");
    a client whose endpoint list names the host (an apiserver's --etcd-servers) must find its port closed, and
    go to the next member, until the member is promoted and restarted on its own URLs."""
    url = urlsplit(check.url or "")
    return f"{url.scheme}://127.0.0.2:{url.port or 2379}"


def initial_cluster(entries: list[Entry], new: Entry, name: str) -> str:
    """Pure: etcd's initial-cluster for the new member's first start: every started member, and itself."""
    pairs = [f"{e.name}={u}" for e in entries if e.id != new.id for u in e.peer_urls]
    pairs += [f"{name}={u}" for u in new.peer_urls]
    return ",".join(pairs)


async def replace(
    session: Session,
    desired: DesiredState,
    host: str,
    *,
    force: bool,
    actor: str,
    start_timeout: float,
    sync_timeout: float,
    say: Callable[[str], None],
) -> Replaced:
    """Every step, said as it begins; ReplaceRefused before anything is changed, HostError on a step that failed
    (run it again: it looks up where the cluster is)."""
    p = plan(desired, host)
    api = EtcdOnHosts(session, p.others)
    membership = Membership(api)
    await _look(session, api, membership, p, force)  # refused early, before waiting for the lock
    started = promoted = 0.0
    async with RestartLock(api, actor).turn(p.target.unit, host, wait=2 * start_timeout + 30) as held:

        async def fence() -> None:
            if not await held():
                raise HostError(f"{host}: the restart lock of {p.target.unit} was lost; stopped (run again)")

        # looked at again under the lock: another replacement may have changed the cluster meanwhile
        listed, old, joining, finishing = await _look(session, api, membership, p, force)
        if finishing:
            new = finishing
            say(f"{host}: member {new.hex()} is promoted already, still on its learner's client URL")
        else:
            if joining:
                new = joining
                state = "started" if new.started else "not started"
                say(f"{host}: member {new.hex()} is a learner already ({state})")
            else:
                new, listed = await _swap(session, p, membership, old, fence, say)
            began = time.monotonic()
            if not new.started:
                await fence()
                await _start(session, p, listed, new, say)
                new = await _started_or_removed(session, p, membership, new, start_timeout, say)
            started = time.monotonic() - began
            say(f"{host}: the learner started ({started:.1f} s); promoting it once it is in sync")
            await _promote(membership, new, sync_timeout, host, fence)
            promoted = time.monotonic() - began
            say(f"{host}: promoted to a voting member ({promoted:.1f} s after its start)")
        await fence()
        await _script(session, p.target.host, ["joined", p.target.unit])
        say(f"restarting {p.target.unit} on {host} on its own client URLs: clients reach it from now on")
        await fence()
        await systemctl(session, p.target.host, "restart", [p.target.unit])
        if p.target.check:  # the lock is held until the member serves: no other restart meanwhile
            result = await wait_healthy(session, p.target.host, p.target.check, HEALTHY_S)
            if not result.ok:
                raise HostError(f"{host}: the new member is not healthy: {result.detail}")
    return Replaced(new.hex(), round(started, 2), round(promoted, 2))


async def _look(
    session: Session, api: EtcdOnHosts, membership: Membership, p: Plan, force: bool
) -> tuple[list[Entry], list[Entry], Entry | None, Entry | None]:
    """The cluster as the other members list it, sorted out: (every entry, the replaced member's old ones, a learner
    of a replacement begun before, a member promoted but not yet on its own client URLs); ReplaceRefused when it
    must not be changed."""
    try:
        listed = await membership.listed()
    except (EtcdUnavailable, EtcdRefused, ValueError) as exc:
        raise ReplaceRefused(
            f"no other member answers with the cluster's members ({exc}): a replacement needs the others' quorum "
            "(every member lost: `reconciler etcd restore`)"
        ) from exc
    old, joining = _sorted_out(p, listed)
    finishing = next((e for e in old if e.client_urls == (hidden_client_url(p.check),)), None)
    await _others_serve(api, p, listed)
    moved = [e for e in old if e is not finishing and set(e.peer_urls) != set(p.peers)]
    if moved and not force:  # the machine moved to a new address: the old one must be silent where etcd lists it
        at = [(h, dataclasses.replace(c, url=u)) for e in moved for u in e.client_urls for h, c in api.members[:1]]
        alive = await _answers_as(session, at, {e.id for e in moved})
        if alive or not at:
            said = f"it answers there ({alive})" if alive else "it lists no client URL to ask it at"
            raise ReplaceRefused(
                f"{p.target.host.name}'s member in etcd is at {', '.join(moved[0].peer_urls)}, the specs put it at "
                f"{', '.join(p.peers)}: {said}; a member alive at another address is not replaced (--force "
                "replaces it anyway)"
            )
    if not joining and not finishing:
        alive = await _answers_as(session, [(p.target.host, p.check)], {e.id for e in old})
        if alive and not force:
            raise ReplaceRefused(
                f"{p.target.host.name}'s member answers ({alive}): it is not dead; nothing is replaced (--force "
                "replaces it anyway)"
            )
    return listed, old, joining, finishing


async def _swap(
    session: Session,
    p: Plan,
    membership: Membership,
    old: list[Entry],
    fence: Callable[[], Awaitable[None]],
    say: Callable[[str], None],
) -> tuple[Entry, list[Entry]]:
    """The old member stopped and removed, the new one added as a learner: it, and the members with it."""
    host = p.target.host.name
    await fence()
    say(f"stopping {p.target.unit} on {host}")
    await systemctl(session, p.target.host, "stop", [p.target.unit])
    for e in old:
        await fence()
        say(f"removing the old member {e.hex()} ({e.name or 'never started'}, {', '.join(e.peer_urls)})")
        await _change(membership.remove(e.id), host)
    await fence()
    say(f"adding {p.target.name} ({', '.join(p.peers)}) as a learner (it counts for no quorum)")
    deadline = time.monotonic() + SETTLE_S
    while True:  # etcd refuses an add until the member asked has been connected to every voter for 5 s
        try:
            return await membership.add_learner(p.peers)
        except EtcdRefused as exc:  # "unhealthy cluster": right after a restart or the removal, a moment away
            if "unhealthy cluster" not in str(exc) or time.monotonic() > deadline:
                raise HostError(f"{host}: etcd's membership not changed: {exc}") from None
        except (EtcdUnavailable, ValueError) as exc:
            raise HostError(f"{host}: etcd's membership not changed: {exc}") from None
        await asyncio.sleep(LOOK_S)


async def _started_or_removed(
    session: Session, p: Plan, membership: Membership, new: Entry, timeout: float, say: Callable[[str], None]
) -> Entry:
    """The learner once etcd lists it as started; removed again (and a HostError) when it has not within `timeout`."""
    host = p.target.host.name
    try:
        return await _wait_started(membership, new, timeout)
    except HostError:
        pass
    say(f"{host}: the learner did not start within {timeout:g} s: removing it again")
    try:
        await systemctl(session, p.target.host, "stop", [p.target.unit])
        if any(e.id == new.id for e in await _change(membership.listed(), host)):
            await _change(membership.remove(new.id), host)
    finally:
        await _script(session, p.target.host, ["joined", p.target.unit])
    raise HostError(
        f"{host}: etcd did not start as a learner within {timeout:g} s (see `journalctl -u {p.target.unit}` there); "
        "the learner is removed, the cluster is as it was before it was added"
    )


def _sorted_out(p: Plan, listed: list[Entry]) -> tuple[list[Entry], Entry | None]:
    """The entries of the member being replaced (its old voters) and the learner of a replacement begun before;
    ReplaceRefused for a member the specs do not name or a learner of another host."""
    peers = set(p.peers)
    old = [e for e in listed if not e.learner and (e.name == p.target.name or peers & set(e.peer_urls))]
    joining = [e for e in listed if e.learner and peers & set(e.peer_urls)]
    named = {m.name for m in p.cluster}
    for e in listed:
        if e not in old and e not in joining and e.name not in named:
            what = "a learner" if e.learner else "a member"
            raise ReplaceRefused(
                f"the cluster has {what} the specs do not name ({e.hex()}, {e.name or 'never started'}, "
                f"{', '.join(e.peer_urls)}): remove it or name it first"
            )
    return old, (joining[0] if joining else None)


async def _others_serve(api: EtcdOnHosts, p: Plan, listed: list[Entry]) -> None:
    """ReplaceRefused unless every other member is a started voter and answers its status."""
    voters = {e.name for e in listed if e.started and not e.learner}
    for n, (h, _) in enumerate(api.members):
        name = next(m.name for m in p.cluster if m.host.name == h.name)
        if name not in voters:
            raise ReplaceRefused(f"{h.name}'s member is not a started voting member of the cluster: replace it first")
        try:
            async with asyncio.timeout(api.deadline):
                exit_status, status, _body = await api.exchange(n, "/v3/maintenance/status", {})
        except (TimeoutError, HostError):
            exit_status, status = -1, 0
        if status != 200:
            raise ReplaceRefused(
                f"{h.name}'s member does not answer (curl exit {exit_status}, HTTP {status}): replacing {p.target.host.name} "
                "now could leave the cluster without its quorum"
            )


async def _answers_as(session: Session, where: list[tuple[DesiredHost, DesiredCheck]], ids: set[int]) -> str:
    """What a member says of itself when it answers as one of `ids` (a live old member), asked at each (host, check):
    from that host, at the check's URL (the replaced host's own member, or an old client URL from another member's
    host); "" when none does."""
    for n in range(len(where)):
        api = EtcdOnHosts(session, where[n : n + 1])
        try:
            async with asyncio.timeout(api.deadline):
                _exit, status, body = await api.exchange(0, "/v3/maintenance/status", {})
        except (TimeoutError, HostError):
            continue
        if status != 200:
            continue
        try:
            said = json.loads(body)
            member_id = int(said["header"]["member_id"])
        except (ValueError, RecursionError, KeyError, TypeError):
            continue
        if member_id in ids:
            return f"member {member_id:x}"
    return ""


async def _start(session: Session, p: Plan, listed: list[Entry], new: Entry, say: Callable[[str], None]) -> None:
    """The learner's first start: the join environment in place before anything can start it, then stopped, its
    data dir cleared of a failed start's leftovers, started."""
    host, unit = p.target.host, p.target.unit
    hidden = hidden_client_url(p.check)
    env = (  # the client URLs first: what keeps clients off the learner is never what a cut would lose
        f"ETCD_LISTEN_CLIENT_URLS={hidden}\nETCD_ADVERTISE_CLIENT_URLS={hidden}\n"
        f"ETCD_INITIAL_CLUSTER_STATE=existing\nETCD_INITIAL_CLUSTER={initial_cluster(listed, new, p.target.name)}\n"
    )
    if len(env) > MAX_ENV:
        raise HostError(f"{host.name}: the cluster as etcd lists it makes a join environment of {len(env)} bytes")
    await _script(session, host, ["join", unit], env.encode())
    said = await _script(session, host, ["prepare", unit, p.target.data_dir])  # stopped there, then looked at
    if said.startswith("@@ASIDE "):
        say(f"{host.name}: what its data dir held moved aside to {printable(said.removeprefix('@@ASIDE ').strip())}")
    say(f"starting {unit} on {host.name} as a learner (initial-cluster-state=existing)")
    with contextlib.suppress(HostError):  # nothing failed to reset: said as a failure by systemctl, and no matter
        await systemctl(session, host, "reset-failed", [unit])
    await systemctl(session, host, "start", [unit], no_block=True)


async def _wait_started(membership: Membership, new: Entry, timeout: float) -> Entry:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            now = next((e for e in await membership.listed() if e.id == new.id), None)
        except (EtcdUnavailable, EtcdRefused, ValueError):
            now = new
        if now is None:
            raise HostError(f"learner {new.hex()} is no longer a member")
        if now.started:
            return now
        await asyncio.sleep(LOOK_S)
    raise HostError(f"learner {new.hex()} did not start")


async def _promote(
    membership: Membership, new: Entry, timeout: float, host: str, fence: Callable[[], Awaitable[None]]
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        await fence()
        try:
            await membership.promote(new.id)
            return
        except EtcdRefused as exc:
            last = str(exc)
            if "in sync" not in last and "not ready" not in last:
                # a promotion whose answer was lost is refused the second time ("only a learner"): look
                now = next((e for e in await _change(membership.listed(), host) if e.id == new.id), None)
                if now is not None and not now.learner:
                    return
                raise HostError(f"{host}: etcd refused to promote the learner: {exc}") from None
        except EtcdUnavailable as exc:
            last = str(exc)
        await asyncio.sleep(LOOK_S)
    raise HostError(
        f"{host}: the learner was not in sync within {timeout:g} s ({last}); it stays a learner (it counts for no "
        "quorum): run the same command again to go on waiting"
    )


async def _change(call: Awaitable[T], host: str) -> T:
    try:
        return await call
    except (EtcdUnavailable, EtcdRefused, ValueError) as exc:
        raise HostError(f"{host}: etcd's membership not changed: {exc}") from None


async def _script(session: Session, host: DesiredHost, args: list[str], data: bytes = b"") -> str:
    conn = await session.connection(host.target)
    result = await conn.run(["bash", "-c", SCRIPT, "reconciler-etcd-join", *args], input=data, timeout=HEALTHY_S)
    said = result.stdout.decode("utf-8", errors="replace") + result.stderr.decode("utf-8", errors="replace")
    err = next((ln for ln in said.splitlines() if ln.startswith("@@ERR ")), "")
    if not result.ok or err:
        raise HostError(f"{host.name}: {printable(err.removeprefix('@@ERR '))[:600] or result.describe()}")
    return next((ln for ln in said.splitlines() if ln.startswith("@@")), "")
