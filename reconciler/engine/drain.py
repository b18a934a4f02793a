"""A host's server taken out of the load balancers in front of it while its units restart (HAProxy's drain).

Owns, for a restart of units on one host: which balancers drain for them (every host's Unit with a `balancer`
whose `drainFor` names one of the units), asking each balancer's HAProxy through its runtime API (the master
socket, `@1` for its current worker, through curl's telnet over the unix socket: no shell, no tool beyond curl)
for its servers' state (`show servers state`) and connections (`show stat`), draining there, in each of its
`backends`, the server named as the host, then waiting (at most `drainSeconds`, every front asked at once) until
none of them carries a connection; and, once the restarts are done and the host passes the balancer's
`readyCheck`, setting them back to ready. The rules (`chosen`): a server is drained only where it runs and another
server of its backend serves (the last one is never taken out); one found drained (a run cut off) stays drained
and is put back after, or at once when it is the last; one in maintenance (the operator's) is never touched, not
even when it was set so meanwhile. One drain is decided at a time in a process (two turns never take out a
backend's last two servers together). Everything that goes wrong with a balancer (no answer, an odd one, a
timeout) is said and the restart goes on: draining spares clients errors, it is no guard. The put-back happens
whatever the block did, cancelled included (shielded), each front tried three times on a new connection; a
failed block is put back without waiting for readyCheck (HAProxy's own checks keep a failing server out). Pure
parts: `servers`, `chosen`, `fronts`. Used by `engine.rollouts` (each rollout turn) and `engine.cert_renewal`
(each host's restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from reconciler.engine.guard import wait_healthy
from reconciler.errors import HostError
from reconciler.spec.desired import DesiredBalancer, DesiredHost, DesiredState
from reconciler.terminal import printable
from reconciler.transport.session import Session

log = structlog.get_logger(__name__)

ANSWER_LIMIT = 1024 * 1024  # `show stat` of a few backends is a few kB
POLL = 0.2
ASK_S = 20.0  # one front's look and set, its SSH connection included
READY_S = 60.0  # the most the host's readyCheck is waited for before its server is put back
PUT_BACK_TRIES = 3


@dataclass(frozen=True)
class Server:
    backend: str
    name: str
    running: bool  # its checks say it serves (srv_op_state 2)
    drained: bool  # set to drain (srv_admin_state 0x08): by us, or by a run of ours cut off
    maint: bool  # in maintenance (the operator's, the config's, a resolution's): never touched
    weight: int
    connections: int = 0  # show stat's scur

    @property
    def serving(self) -> bool:
        """It takes new connections."""
        return self.running and not self.drained and not self.maint and self.weight > 0


def _int(text: str) -> int:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else 0


def servers(answer: str) -> list[Server]:
    """Pure: the servers HAProxy's `show servers state` lists (their state), with the connections `show stat` says
    each carries (in the same answer); [] for anything else. Total: any text gives servers or none."""
    lines = answer.splitlines()
    head = next((i for i, line in enumerate(lines) if line.startswith("# be_id ")), None)
    if head is None:
        return []
    columns = lines[head][2:].split()
    try:
        be, sv, op, admin, weight = (columns.index(c) for c in ("be_name", "srv_name", "srv_op_state", "srv_admin_state", "srv_uweight"))  # fmt: skip
    except ValueError:
        return []
    connections: dict[tuple[str, str], int] = {}
    stat = next((i for i, line in enumerate(lines) if line.startswith("# pxname,")), None)
    if stat is not None:
        names = lines[stat][2:].split(",")
        if {"pxname", "svname", "scur"} <= set(names):
            px, name, scur = names.index("pxname"), names.index("svname"), names.index("scur")
            with contextlib.suppress(csv.Error):
                for row in csv.reader(lines[stat + 1 :]):
                    if len(row) > max(px, name, scur):
                        connections[(row[px], row[name])] = _int(row[scur])
    out = []
    for line in lines[head + 1 :]:
        fields = line.split()
        if not fields or line.startswith("#"):
            break
        if len(fields) <= max(be, sv, op, admin, weight):
            continue
        flags = _int(fields[admin])
        out.append(
            Server(
                fields[be],
                fields[sv],
                running=_int(fields[op]) == 2,
                drained=bool(flags & 0x08),
                maint=bool(flags & 0x67),  # forced, inherited, config, resolution, hostname-resolution maintenance
                weight=_int(fields[weight]),
                connections=connections.get((fields[be], fields[sv]), 0),
            )
        )
    return out


@dataclass(frozen=True)
class Choice:
    drain: list[str]  # backends where the host's server is drained (or stays drained) until the block is done
    now: list[str]  # backends where it was left drained and is the last one: put back at once
    said: list[str]  # why it is not drained in the others that have it


def chosen(found: list[Server], backends: Sequence[str], host: str) -> Choice:
    """Pure: what is done with `host`'s server in each of `backends` that has it: drained where it runs and another
    server serves (never the last); one found drained (a run cut off) drained on and put back after, or at once when
    it is the last; one in maintenance or down left as it is."""
    choice = Choice([], [], [])
    for backend in backends:
        mine = next((s for s in found if s.backend == backend and s.name == host), None)
        if mine is None:
            continue
        others = [s for s in found if s.backend == backend and s.name != host and s.serving]
        if mine.maint:
            choice.said.append(f"{backend}/{host} is in maintenance")
        elif mine.drained:
            (choice.drain if others else choice.now).append(backend)
        elif not mine.running:
            choice.said.append(f"{backend}/{host} is down")
        elif not others:
            choice.said.append(f"{backend}/{host} is the last server up")
        else:
            choice.drain.append(backend)
    return choice


@dataclass(frozen=True)
class Front:
    """One balancer: the host HAProxy runs on, and what its Unit says."""

    host: DesiredHost
    balancer: DesiredBalancer

    async def ask(self, session: Session, commands: Sequence[str]) -> str:
        """HAProxy's answer to `commands` (each sent to its current worker, then `quit`); HostError when its socket
        does not answer."""
        line = "; ".join(f"@1 {c}" for c in commands) + "; quit\n"
        argv = ["curl", "-sS", "--max-time", "5", "--unix-socket", self.balancer.socket, "telnet://localhost"]
        conn = await session.connection(self.host.target)
        result = await conn.run(argv, input=line.encode(), timeout=10, max_output=ANSWER_LIMIT)
        if result.exit_status != 0:
            why = printable(result.stderr.decode(errors="replace")).strip()[:200]
            raise HostError(f"HAProxy's socket {self.balancer.socket} did not answer ({why})")
        return result.stdout.decode(errors="replace")

    async def state(self, session: Session) -> list[Server]:
        return servers(await self.ask(session, ["show servers state", "show stat"]))

    async def set_state(self, session: Session, backends: Sequence[str], server: str, state: str) -> None:
        said = await self.ask(session, [f"set server {b}/{server} state {state}" for b in backends])
        refused = [line.strip() for line in said.splitlines() if line.strip()]
        if refused:  # a set answers nothing when it is done
            raise HostError(f"HAProxy refused to set {server} {state}: {printable(refused[0])[:200]}")


def fronts(desired: DesiredState, units: Sequence[str]) -> list[Front]:
    """Pure: every balancer that drains for one of `units`."""
    return [
        Front(h, u.balancer)
        for _, h in sorted(desired.hosts.items())
        for u in h.units
        if u.balancer is not None and set(u.balancer.drain_for) & set(units)
    ]


@dataclass
class Drained:
    """What the block tells the drain: `failed` when its restarts failed (put back without waiting for readyCheck)."""

    failed: bool = False


_deciding: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _decision_lock() -> asyncio.Lock:
    """One drain decided at a time in this process (read, choose, set): a second turn's look sees the first's drain,
    so two turns never take out a backend's last two servers together."""
    return _deciding.setdefault(asyncio.get_running_loop(), asyncio.Lock())


@asynccontextmanager
async def drained(
    session: Session,
    desired: DesiredState,
    host: DesiredHost,
    units: Sequence[str],
    say: Callable[[str], None] | None = None,
) -> AsyncIterator[Drained]:
    """`host`'s server out of every balancer that drains for `units` while the block runs (module docstring)."""
    tell = say or (lambda line: log.info("drain", host=host.name, said=line))
    chosen_fronts = fronts(desired, units)
    out: dict[str, tuple[Front, list[str]]] = {}  # by front host: where a drain was (or may have been) set
    block = Drained()
    succeeded = False
    try:
        if chosen_fronts:
            async with _decision_lock():
                await asyncio.gather(*(_drain(session, f, host.name, out, tell) for f in chosen_fronts))
        if out:
            tell(f"{host.name}: drained from HAProxy on {', '.join(sorted(out))}")
            await _quiet(session, host.name, out, max(f.balancer.drain_seconds for f, _ in out.values()), tell)
        yield block
        succeeded = not block.failed
    finally:
        try:
            checks = sorted({f.balancer.ready_check for f, _ in out.values() if f.balancer.ready_check and host.check(f.balancer.ready_check)})  # fmt: skip
            for check in checks if succeeded else ():
                result = await wait_healthy(session, host, check, timeout=READY_S)
                if not result.ok:
                    tell(
                        f"{host.name}: {check} still fails ({result.detail}): put back anyway, HAProxy's checks decide"
                    )
        finally:  # put back even when cancelled meanwhile (shielded: a second cancel leaves it running)
            if out:
                await asyncio.shield(_put_back(session, host.name, out, tell))


async def _drain(
    session: Session, front: Front, host: str, out: dict[str, tuple[Front, list[str]]], tell: Callable[[str], None]
) -> None:
    """The host's server drained on one front (what `chosen` says), `out` told before the set is sent (its answer
    may be lost, the drain done); anything going wrong is said, never raised: the restart goes on."""
    try:
        async with asyncio.timeout(ASK_S):
            choice = chosen(await front.state(session), front.balancer.backends, host)
            for why in choice.said:
                tell(f"{host}: not drained from HAProxy on {front.host.name}: {why}")
            if choice.now:
                tell(f"{host}: left drained in HAProxy on {front.host.name} and the last one there: put back now")
                await front.set_state(session, choice.now, host, "ready")
            if choice.drain:
                out[front.host.name] = (front, choice.drain)
                await front.set_state(session, choice.drain, host, "drain")
    except Exception as exc:  # HostError, a timeout, anything an odd answer makes: said, and the restart goes on
        tell(f"{host}: not drained from HAProxy on {front.host.name}: {printable(str(exc) or type(exc).__name__)[:300]}")  # fmt: skip


async def _quiet(
    session: Session, host: str, out: dict[str, tuple[Front, list[str]]], seconds: float, tell: Callable[[str], None]
) -> None:
    """Until no drained server carries a connection, at most `seconds` (every front asked at once, each within the
    time left)."""
    deadline = time.monotonic() + seconds
    while True:
        left = max(0.5, deadline - time.monotonic())
        looks = await asyncio.gather(
            *(asyncio.wait_for(f.state(session), min(left, ASK_S)) for f, _ in out.values()), return_exceptions=True
        )
        open_ = sum(
            s.connections
            for found, (_, backends) in zip(looks, out.values(), strict=True)
            if isinstance(found, list)
            for s in found
            if s.name == host and s.backend in backends
        )
        if open_ == 0:
            return
        if time.monotonic() >= deadline:
            tell(f"{host}: {open_} connection(s) still open after {seconds:g} s: going on")
            return
        await asyncio.sleep(POLL)


async def _put_back(session: Session, host: str, out: dict[str, tuple[Front, list[str]]], tell: Callable[[str], None]) -> None:  # fmt: skip
    async def one(front: Front, backends: list[str]) -> bool:
        failure = ""
        for attempt in range(PUT_BACK_TRIES):
            try:
                async with asyncio.timeout(ASK_S):
                    mine = {s.backend: s for s in await front.state(session) if s.name == host}
                    kept = [b for b in backends if b in mine and mine[b].drained and not mine[b].maint]
                    for b in backends:
                        if b in mine and mine[b].maint:  # the operator's, set meanwhile: left as it is
                            tell(f"{host}: {b} is in maintenance in HAProxy on {front.host.name}: left so")
                    if kept:
                        await front.set_state(session, kept, host, "ready")
                return True
            except Exception as exc:
                failure = printable(str(exc) or type(exc).__name__)[:300]
                session.forget(front.host.name)
                await asyncio.sleep(attempt + 1)
        tell(f"{host}: NOT put back in HAProxy on {front.host.name}: {failure}")
        return False

    done = await asyncio.gather(*(one(f, b) for f, b in out.values()))
    back = [name for name, ok in zip(out, done, strict=True) if ok]
    if back:
        tell(f"{host}: put back in HAProxy on {', '.join(sorted(back))}")
