"""A host's server taken out of the load balancers in front of it while its units restart (HAProxy's drain).

Owns, for a restart of units on one host: which balancers drain for them (every host's Unit with a `balancer`
whose `drainFor` names one of the units), asking each balancer's HAProxy through its runtime API (the master
socket, `@1` for its current worker, through curl's telnet over the unix socket: no shell, no tool beyond curl),
draining there, in each of its `backends`, the server named as the host, then waiting (at most `drainSeconds`)
until none of them carries a connection; and, once the restarts are done and the host passes the balancer's
`readyCheck`, setting them back to ready. The rules: a server is drained only where it is up and another server of
its backend is up and not drained (the last server up is never taken out; a restart there loses what it would
have lost anyway), and one found drained already (a run cut off before it put it back) is put back after; a
server in maintenance is left as it is; a balancer that cannot be asked is said and left (the restart goes on: draining spares clients
errors, it is no guard); a server this drained is put back whatever the restarts did (HAProxy's own checks keep a
failing one out). Pure parts: `servers` (HAProxy's `show stat`), `chosen`. Used by `engine.rollouts` (each
rollout turn) and `engine.cert_renewal` (each host's restarts).
"""

from __future__ import annotations

import asyncio
import csv
import time
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


@dataclass(frozen=True)
class Server:
    backend: str
    name: str
    status: str  # HAProxy's: UP, UP 1/2, DOWN, DRAIN, MAINT, NOLB, no check...
    connections: int  # scur

    @property
    def up(self) -> bool:
        return self.status.startswith("UP") or self.status == "no check"


def servers(stat: str) -> list[Server]:
    """Pure: the servers in HAProxy's `show stat` CSV (its header line names the columns); [] for anything else."""
    lines = stat.splitlines()
    head = next((i for i, line in enumerate(lines) if line.startswith("# pxname,")), None)
    if head is None:
        return []
    rows = csv.reader(lines[head + 1 :])
    columns = lines[head][2:].split(",")
    try:
        px, sv, scur, status = (columns.index(c) for c in ("pxname", "svname", "scur", "status"))
    except ValueError:
        return []
    out = []
    for row in rows:
        if len(row) <= max(px, sv, scur, status) or row[sv] in ("FRONTEND", "BACKEND"):
            continue
        out.append(Server(row[px], row[sv], row[status], int(row[scur]) if row[scur].isdigit() else 0))
    return out


def chosen(found: list[Server], backends: Sequence[str], host: str) -> tuple[list[str], list[str]]:
    """Pure: the backends where `host`'s server is drained, and why it is not in the others that have it (the
    last server up there, or it is not up itself)."""
    drain, left = [], []
    for backend in backends:
        mine = next((s for s in found if s.backend == backend and s.name == host), None)
        if mine is None:
            continue
        others = [s for s in found if s.backend == backend and s.name != host and s.up]
        if not mine.up and not mine.status.startswith("DRAIN"):  # drained already (a run cut off): put back after
            left.append(f"{backend}/{host} is {mine.status or 'not up'}")
        elif not others:
            left.append(f"{backend}/{host} is the last server up")
        else:
            drain.append(backend)
    return drain, left


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
            raise HostError(f"{self.host.name}: HAProxy's socket {self.balancer.socket} did not answer ({why})")
        return result.stdout.decode(errors="replace")

    async def set_state(self, session: Session, backends: Sequence[str], server: str, state: str) -> None:
        said = await self.ask(session, [f"set server {b}/{server} state {state}" for b in backends])
        refused = [line.strip() for line in said.splitlines() if line.strip()]
        if refused:  # a set answers nothing when it is done
            raise HostError(f"{self.host.name}: HAProxy refused to set {server} {state}: {printable(refused[0])[:200]}")


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
    out: list[tuple[Front, list[str]]] = []

    async def drain(front: Front) -> None:
        try:
            found = servers(await front.ask(session, ["show stat"]))
            backends, left = chosen(found, front.balancer.backends, host.name)
            for why in left:
                tell(f"{host.name}: not drained from HAProxy on {front.host.name}: {why}")
            if backends:
                await front.set_state(session, backends, host.name, "drain")
                out.append((front, backends))
        except HostError as exc:
            tell(f"{host.name}: not drained: {exc}")

    await asyncio.gather(*(drain(f) for f in fronts(desired, units)))
    out.sort(key=lambda drained: drained[0].host.name)
    block = Drained()
    if not out:
        yield block
        return
    succeeded = False
    try:
        tell(f"{host.name}: drained from HAProxy on {', '.join(f.host.name for f, _ in out)}")
        await _quiet(session, host.name, out, max(f.balancer.drain_seconds for f, _ in out), tell)
        yield block
        succeeded = not block.failed
    finally:
        checks = {f.balancer.ready_check for f, _ in out if f.balancer.ready_check and host.check(f.balancer.ready_check)}  # fmt: skip
        for check in sorted(checks) if succeeded else ():
            result = await wait_healthy(session, host, check, timeout=60)
            if not result.ok:
                tell(f"{host.name}: {check} still fails ({result.detail}): put back anyway, HAProxy's checks decide")

        async def ready(front: Front, backends: list[str]) -> None:
            try:
                await front.set_state(session, backends, host.name, "ready")
            except HostError as exc:
                tell(f"{host.name}: NOT put back in HAProxy on {front.host.name}: {exc}")

        await asyncio.shield(asyncio.gather(*(ready(f, b) for f, b in out)))
        tell(f"{host.name}: put back in HAProxy on {', '.join(f.host.name for f, _ in out)}")


async def _quiet(
    session: Session, host: str, out: list[tuple[Front, list[str]]], seconds: float, tell: Callable[[str], None]
) -> None:
    """Until no drained server carries a connection, at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        open_ = 0
        for front, backends in out:
            try:
                found = servers(await front.ask(session, ["show stat"]))
            except HostError:
                continue
            open_ += sum(s.connections for s in found if s.name == host and s.backend in backends)
        if open_ == 0:
            return
        if time.monotonic() >= deadline:
            tell(f"{host}: {open_} connection(s) still open after {seconds:g} s: going on")
            return
        await asyncio.sleep(POLL)
