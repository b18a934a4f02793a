"""`reconciler certs rotate-ca`: the masters moved from their CA to a new one in three explicit phases, each a
person's act, each looked at again before it acts (run again after any stop, it goes on), each shown by `status`.

Owns the phases' order, their preconditions and what is said. A **trust file** is a certificate file the specs name
on a host (a `Certificate`'s paths) that holds the old or the new CA: the bundle the host's components verify peers
and clients with (the seed's ca.pem). The units a host's phase restarts are those its managed certificates name
(`renew.restart`, in order): the components that read the pair and the bundle (etcd reads its CA bundle only at
start).

1. `trust`: each trust file given the new CA after the old one; the units restarted, host by host, under the
   restart locks and past the quorum guards, each waited for until healthy; a unit that does not come back puts the
   files back (and restarts the units on them) and the phase stops there. A host whose files hold both CAs and whose
   units started after they last changed is left as it is.
2. `reissue`: every managed certificate issued again by the new CA (a new key on the master, the renewal's path:
   engine.cert_renewal), once every host trusts both CAs and runs on them; one already the new CA's is left. Signed
   with the new CA's key file when one is given, else by each certificate's renew.signCommand (the operator's
   signer, pointed at the new CA), whose answer must be the new CA's.
3. `drop`: the old CA taken out of each trust file, the units restarted as in 1, once no certificate the specs name
   on any host is still the old CA's (from then on every peer would refuse it; `--force` drops it anyway).

The CAs stay on reconciler's machine; only certificates (public) are written to the masters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from reconciler.certs import bundle, external
from reconciler.certs.authority import Authority, CertError
from reconciler.engine import cert_renewal
from reconciler.engine.guard import guard
from reconciler.errors import HostError
from reconciler.spec.desired import DesiredHost, DesiredState, DesiredUnit
from reconciler.terminal import printable
from reconciler.transport.session import Session

PHASES = ("status", "trust", "reissue", "drop")


class RotationRefused(Exception):
    """Not started: why (nothing was changed)."""


@dataclass(frozen=True)
class Trust:
    path: str
    certs: list[x509.Certificate]
    old: bool  # holds the old CA
    new: bool


@dataclass(frozen=True)
class Leaf:
    path: str
    by: str  # "old" | "new" | "other": which CA signed it
    managed: bool


@dataclass(frozen=True)
class Seen:
    host: DesiredHost
    trust: list[Trust]
    leaves: list[Leaf]
    units: list[DesiredUnit]
    stale: str  # why the units do not run on the trust files as they are ("" when they do)
    unreadable: list[str]  # "path: why"
    unreloaded: str = ""  # why a unit that reloads on a trust file (its reloadOn) has not since it changed

    def lines(self) -> list[str]:
        name = self.host.name
        out = [f"{name}: {t.path}: trusts " + " and ".join(w for w, on in (("the old CA", t.old), ("the new CA", t.new)) if on) for t in self.trust]  # fmt: skip
        if self.trust and self.units:
            out.append(f"{name}: " + (f"units not restarted on them yet ({self.stale})" if self.stale else f"{', '.join(u.name for u in self.units)} started since"))  # fmt: skip
        out += [f"{name}: {leaf.path}: issued by the {leaf.by} CA" + ("" if leaf.managed else " (not managed)") for leaf in self.leaves]  # fmt: skip
        out += [f"{name}: {u}: unreadable" for u in self.unreadable]
        out += [f"{name}: {self.unreloaded}"] if self.unreloaded else []
        return out


def units_of(host: DesiredHost) -> list[DesiredUnit]:
    """Pure: the units the host's managed certificates restart, in the order they name them, each once."""
    names: list[str] = []
    for cert in sorted(host.certificates, key=lambda c: c.path):
        for unit in cert.renew.restart if cert.renew else ():
            if unit not in names:
                names.append(unit)
    by_name = {u.name: u for u in host.units}
    return [by_name[n] for n in names if n in by_name]


def classify(path: str, certs: list[x509.Certificate], old: x509.Certificate, new: x509.Certificate, managed: bool) -> Trust | Leaf | None:  # fmt: skip
    """Pure: a file the specs name, as the rotation sees it: a trust file (it holds either CA), a leaf (its first
    certificate is not a CA: signed by which one), or None (another CA's file, left alone)."""
    has_old, has_new = bundle.holds(certs, old), bundle.holds(certs, new)
    if has_old or has_new:
        return Trust(path, certs, has_old, has_new)
    if bundle.is_ca(certs[0]):
        return None
    by = "old" if bundle.signed_by(certs[0], old) else "new" if bundle.signed_by(certs[0], new) else "other"
    return Leaf(path, by, managed)


async def look(session: Session, host: DesiredHost, old: x509.Certificate, new: x509.Certificate) -> Seen:
    """The host's trust files and leaves as they are, and whether its units run on the trust files."""
    trust: list[Trust] = []
    leaves: list[Leaf] = []
    unreadable: list[str] = []
    managed = {c.path for c in host.certificates if c.renew is not None}
    for path in sorted({c.path for c in host.certificates}):
        said = await cert_renewal.script(session, host, ["bundle-read", path])
        try:
            if said.startswith("@@ERR "):
                raise CertError(printable(said.removeprefix("@@ERR ").strip())[:200])
            seen = classify(path, bundle.certificates(said.encode()), old, new, path in managed)
        except CertError as exc:
            unreadable.append(f"{path}: {exc}")
            continue
        if isinstance(seen, Trust):
            trust.append(seen)
        elif isinstance(seen, Leaf):
            leaves.append(seen)
    units = units_of(host)
    stale = ""
    for t in trust if units else ():
        said = await cert_renewal.script(session, host, ["fresh", t.path, *(u.name for u in units)])
        if not said.startswith("@@FRESH"):
            stale = printable(said.removeprefix("@@STALE ").strip())[:200] or "not known"
            break
    unreloaded = ""
    for t in trust:  # a reload the last run could not do (or did not live to do) is due still
        readers = [x for u in host.units if t.path in u.reload_on for x in (u.name, u.reload_stamp)]
        said = await cert_renewal.script(session, host, ["reloaded", t.path, *readers]) if readers else "@@FRESH"
        if not said.startswith("@@FRESH"):
            unreloaded = printable(said.removeprefix("@@STALE ").strip())[:200] or "not known"
            break
    return Seen(host, trust, leaves, units, stale, unreadable, unreloaded)


async def look_all(session: Session, desired: DesiredState, old: x509.Certificate, new: x509.Certificate) -> list[Seen]:
    hosts = [desired.hosts[n] for n in sorted(desired.hosts)]
    return list(await asyncio.gather(*(look(session, h, old, new) for h in hosts)))


async def rotate(
    session: Session,
    desired: DesiredState,
    phase: str,
    *,
    old: x509.Certificate,
    new: x509.Certificate,
    signer: Authority | None,
    actor: str,
    say: Callable[[str], None],
    force: bool = False,
) -> list[Seen]:
    """One phase (or `status`): what each host holds, said first; RotationRefused before anything is changed when
    the phase cannot begin; HostError at the first host it could not finish (the hosts before it are done, that
    one is as it was or done)."""
    if bundle.fingerprint(old) == bundle.fingerprint(new):
        raise RotationRefused("the old and the new CA are the same certificate")
    seen = await look_all(session, desired, old, new)
    for s in seen:
        for line in s.lines():
            say(line)
    if phase == "status":
        return seen
    if not any(s.trust for s in seen):
        raise RotationRefused("no certificate file the specs name holds the old or the new CA: no trust file to rotate")
    written = [f"{s.host.name}: {t.path}" for s in seen for t in s.trust if t.path in s.host.files]
    if written:
        raise RotationRefused(
            f"{written[0]} is a File the specs write: the daemon would put it back; give its File the bundle instead"
        )
    unreadable = [f"{s.host.name}: {u}" for s in seen for u in s.unreadable]
    if unreadable and not force:
        raise RotationRefused(f"a file the specs name cannot be read: {unreadable[0]} (--force goes on without it)")
    # the host of etcd's leader last in each phase (cert_renewal.leader_last: one leader change per phase)
    leader = await cert_renewal.etcd_leader(session, desired) if phase != "reissue" else None
    if leader is not None and len(seen) > 1:
        say(f"{leader}: etcd's leader there: its host goes last (one leader change)")
        order = cert_renewal.leader_last([s.host.name for s in seen], leader)
        seen = sorted(seen, key=lambda s: order.index(s.host.name))
    if phase == "trust":
        for s in seen:
            writes = {t.path: bundle.with_ca(t.certs, new) for t in s.trust if not t.new}
            await _swap(session, desired, s, writes, actor, say, "the new CA added")
    elif phase == "reissue":
        behind = [f"{s.host.name}: {t.path}" for s in seen for t in s.trust if not t.new]
        behind += [f"{s.host.name}: units not restarted on its trust files ({s.stale})" for s in seen if s.stale]
        behind += [f"{s.host.name}: {s.unreloaded}" for s in seen if s.unreloaded]
        if behind:
            raise RotationRefused(f"not every host trusts the new CA yet ({behind[0]}): run the trust phase first")
        by_path = {(s.host.name, leaf.path): leaf for s in seen for leaf in s.leaves}
        todo = [(h, c) for h, c in cert_renewal.managed(desired) if (leaf := by_path.get((h.name, c.path))) is None or leaf.by != "new"]  # fmt: skip
        if signer is None:  # each one's signer, checked before any is reissued
            for h, c in todo:
                command = c.renew.sign_command if c.renew else ()
                if not command:
                    raise RotationRefused(
                        f"the reissue phase signs with the new CA: give its key (--new-ca-key), or a renew.signCommand "
                        f"that signs with it to every managed certificate ({h.name}: {c.path} has none)"
                    )
                refused = external.program_problem(command[0])
                if refused:
                    raise RotationRefused(f"{h.name}: {c.path}: {refused}")
        for host, cert in await cert_renewal.in_turn(session, desired, cert_renewal.managed(desired), say):
            leaf = by_path.get((host.name, cert.path))
            if leaf is not None and leaf.by == "new":
                say(f"{host.name}: {cert.path}: the new CA's already")
                continue
            # without the key, the spec's signer, its answer held to the new CA (certs.external: signed by it)
            await cert_renewal.renew_one(
                session, desired, host, cert, actor=actor, say=say, signer=signer, issuer=new, signed_by=(old,)
            )
    elif phase == "drop":
        behind = [f"{s.host.name}: {t.path}" for s in seen for t in s.trust if not t.new]
        if behind:
            raise RotationRefused(f"{behind[0]} does not trust the new CA: run the trust phase first")
        left = [f"{s.host.name}: {leaf.path}" for s in seen for leaf in s.leaves if leaf.by == "old"]
        if left and not force:
            raise RotationRefused(
                f"{left[0]} is still the old CA's ({len(left)} in all): every peer would refuse it once the old CA "
                "is dropped; reissue it (a managed certificate), or replace it by hand (--force drops it anyway)"
            )
        for s in seen:
            writes = {t.path: bundle.without_ca(t.certs, old) for t in s.trust if t.old}
            await _swap(session, desired, s, writes, actor, say, "the old CA taken out")
    else:
        raise RotationRefused(f"no phase {phase!r} (one of {', '.join(PHASES)})")
    return seen


async def _swap(
    session: Session,
    desired: DesiredState,
    s: Seen,
    writes: dict[str, list[x509.Certificate]],
    actor: str,
    say: Callable[[str], None],
    what: str,
) -> None:
    """The host's trust files written and its units restarted on them, under the locks and guards, health-gated;
    put back when a unit does not come back. Nothing when the files are as wanted and the units run on them."""
    host = s.host
    if not writes and not s.stale and not s.unreloaded:
        if s.trust:
            say(f"{host.name}: done already (its trust files as wanted, its units started since)")
        return
    rollouts = [u.name for u in s.units if u.rollout_check]
    async with cert_renewal.locked(session, desired, host.name, rollouts, actor) as fence:
        for u in s.units:
            if u.rollout_check:
                await guard(session, desired, u, host.name)
        await fence()
        written: list[str] = []
        unreloaded = ""
        try:
            for path, certs in writes.items():
                said = await cert_renewal.script(session, host, ["bundle-write", path], bundle.pem(certs))
                if not said.startswith("@@WRITTEN"):
                    raise HostError(f"{host.name}: {path}: {printable(said.removeprefix('@@ERR '))[:300]}")
                written.append(path)
                say(f"{host.name}: {path}: {what}")
            failed = await cert_renewal.restart_units(session, desired, host, s.units, say, fence) if writes or s.stale else ""  # fmt: skip
            if not failed:  # the readers of what was written, and of every trust file when one was left unreloaded
                reread = sorted(set(written) | ({t.path for t in s.trust} if s.unreloaded else set()))
                unreloaded = await cert_renewal.reload_readers(session, host, reread, say)
        except BaseException:
            if written:  # a write refused or a lock lost midway: the files written go back, the units untouched
                await _put_back(session, host, written)
            raise
        if failed:
            say(f"{host.name}: {failed}: putting the trust files back")
            await _put_back(session, host, written)
            again = await cert_renewal.restart_units(session, desired, host, s.units, say, _unfenced)
            raise HostError(
                f"{host.name}: {failed}; its trust files are back"
                + (f" but {again}" if again else " and every unit healthy on them")
            )
    for path in written:
        await cert_renewal.script(session, host, ["bundle-done", path])
    if unreloaded:  # the trust files stay (the restarted units run on them); the daemon's plan reloads it again
        raise HostError(f"{host.name}: the trust files written, but {unreloaded} (the daemon reloads it)")


async def _put_back(session: Session, host: DesiredHost, paths: list[str]) -> None:
    for path in paths:
        said = await cert_renewal.script(session, host, ["bundle-rollback", path])
        if not said.startswith("@@ROLLEDBACK"):
            raise HostError(f"{host.name}: {path} could not be put back: {printable(said)[:300]}")


async def _unfenced() -> None:  # putting working files back is never stopped by a lock's doubt
    return None
