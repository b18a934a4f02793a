"""Certificates renewed on the masters from the operator's CA, one host at a time, with clients noticing nothing.

Owns the order of one renewal and what is said at each step. For each host (in name order), each of its
Certificates with a `renew` block: the current certificate read (the CA must have signed it: its subject and names
are the new one's), a new key and its CSR made on the master (cert_renew.sh: the key never leaves it), the
certificate issued here (`authority.issue`), then, under the cluster-wide restart lock of every unit the pair is
read by and past the quorum guard of each: the pair installed (the old one kept beside it), each unit restarted in
the spec's order and waited for until it passes its health check; a unit that does not come back puts the old pair
back and restarts them again (the renewal fails, saying so); last, each restarted unit's TLS endpoint (its health
check's address) asked which certificate it presents: the new serial, or the renewal fails.
"""

from __future__ import annotations

import contextlib
import datetime
import posixpath
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from reconciler.apply.executor import RELOAD_SCRIPT
from reconciler.certs import authority, external
from reconciler.components import etcd
from reconciler.components.systemd import service
from reconciler.engine.drain import drained
from reconciler.engine.guard import guard, wait_healthy
from reconciler.errors import HostError
from reconciler.leader.on_host import EtcdOnHosts, etcd_members
from reconciler.leader.restart_lock import RestartLock, Turn
from reconciler.observe.facts import shipped_script
from reconciler.spec.desired import DesiredCert, DesiredHost, DesiredRenewal, DesiredState, DesiredUnit
from reconciler.terminal import printable
from reconciler.transport.session import Session

SCRIPT = shipped_script("cert_renew.sh", "reconciler.certs")  # beside the CA code: the master's side
TIMEOUT = 120.0


@dataclass(frozen=True)
class Renewed:
    host: str
    path: str
    serial: str  # hex, as openssl prints it
    not_after: float
    seconds: float


def due_at(cert: x509.Certificate, renewal: DesiredRenewal) -> float:
    """Pure: when the certificate is due for renewal (unix time): `renew_at` of its lifetime gone."""
    start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    return start + renewal.renew_at * (end - start)


def managed(desired: DesiredState, only_host: str | None = None, names: set[str] | None = None) -> list[tuple[DesiredHost, DesiredCert]]:  # fmt: skip
    """Pure: (host, certificate) of every renewed certificate, by host name, then path."""
    out = []
    for name, host in sorted(desired.hosts.items()):
        if only_host is not None and name != only_host:
            continue
        for cert in sorted(host.certificates, key=lambda c: c.path):
            if cert.renew is not None and (not names or cert.source.split("/", 1)[1] in names):
                out.append((host, cert))
    return out


async def current(session: Session, host: DesiredHost, path: str) -> x509.Certificate:
    said = await script(session, host, ["read", path])
    try:
        return x509.load_pem_x509_certificate(said.encode())
    except ValueError:
        raise HostError(f"{host.name}: {path} is not a PEM certificate") from None


async def renew(
    session: Session,
    desired: DesiredState,
    *,
    actor: str,
    say: Callable[[str], None],
    only_host: str | None = None,
    names: set[str] | None = None,
) -> list[Renewed]:
    """Every selected certificate renewed, host after host; HostError at the first that could not be (the hosts
    before it are renewed, the one it names keeps a valid pair: its old one, or the new one in use)."""
    done = []
    for host, cert in await in_turn(session, desired, managed(desired, only_host, names), say):
        done.append(await renew_one(session, desired, host, cert, actor=actor, say=say))
    return done


def leader_last(names: list[str], leader: str | None) -> list[str]:
    """Pure: `names` in their order, the etcd leader's host moved last. Restarting the followers' members first and
    the leader's once makes one leader change in a pass over the masters, where name order makes up to three: each
    a moment in which a write in flight can fail (bench/RESULTS.md) and the other apiservers wait for etcd."""
    return sorted(names, key=lambda n: n == leader)


async def in_turn(
    session: Session, desired: DesiredState, items: list[tuple[DesiredHost, DesiredCert]], say: Callable[[str], None]
) -> list[tuple[DesiredHost, DesiredCert]]:
    """`items` (managed's order) with the host of etcd's leader last, when a renewal among them restarts etcd on more
    than one host; as they are when etcd's members are not in the specs or none says it leads."""
    unit = desired.etcd_unit
    restarting = {h.name for h, c in items if unit and c.renew and unit in c.renew.restart}
    leader = await etcd_leader(session, desired) if len(restarting) > 1 else None
    if leader not in restarting:
        return items
    say(f"{leader}: etcd's leader there: its host goes last (one leader change)")
    order = leader_last(sorted({h.name for h, _ in items}), leader)
    return sorted(items, key=lambda item: order.index(item[0].name))


async def etcd_leader(session: Session, desired: DesiredState) -> str | None:
    """The host whose etcd member leads (None: no member in the specs says so)."""
    members = etcd_members(desired)
    return await EtcdOnHosts(session, members).leading_host() if members else None


async def renew_one(
    session: Session,
    desired: DesiredState,
    host: DesiredHost,
    cert: DesiredCert,
    *,
    actor: str,
    say: Callable[[str], None],
    signer: authority.Authority | None = None,
    issuer: x509.Certificate | None = None,
    signed_by: tuple[x509.Certificate, ...] = (),
) -> Renewed:
    """One certificate renewed; `signer`: the CA that issues it (the spec's by default; a CA rotation's new one);
    without one, a spec's signCommand issues it, its answer checked against `issuer` (the spec's caFile by default;
    a CA rotation's new CA); `signed_by`: CAs besides those that may have signed the current one (the rotation's
    old)."""
    r = cert.renew
    assert r is not None
    began = time.monotonic()
    try:
        if signer is None and r.sign_command:
            ca_cert = issuer or authority.load_certificate(Path(r.ca_file))
            refused = external.program_problem(r.sign_command[0])
            if refused:
                raise authority.CertError(refused)
        else:
            signer = signer or authority.load(Path(r.ca_file), Path(r.ca_key_file))
            ca_cert = signer.cert
        old = await current(session, host, cert.path)
        template = _template(old, [ca_cert, *signed_by])
        problem = authority.names_problem(template, host.name, host.target.address) or authority.subject_problem(
            template, r.subject
        )
        if problem:
            raise authority.CertError(problem)
        written = [k for k in r.kubeconfigs if k in host.files]
        if written:
            raise authority.CertError(f"{written[0]} is a File the specs write: embed the pair there, not here")
        if datetime.datetime.now(datetime.UTC) < old.not_valid_before_utc:
            raise authority.CertError("this machine's clock is before the current certificate's start: check it")
    except authority.CertError as exc:
        raise HostError(f"{host.name}: {cert.path}: {exc}") from None
    say(
        f"{host.name}: {cert.path}: renewing {template.describe()} (serial {old.serial_number:X}), a new {r.key_type} key made there"
    )
    staged, csr = await _csr(session, host, r.key_type, cert.path)
    units = sorted((u for u in host.units if u.name in r.restart), key=lambda u: r.restart.index(u.name))
    installed = False
    unreloaded = ""
    try:
        lifetime = datetime.timedelta(days=r.lifetime_days)
        if signer is None:  # the spec's external signer, its answer checked (certs.external)
            key = authority.requested_key(csr.encode(), r.key_type)
            new = await external.issue(
                r.sign_command, ca_cert, csr.encode(), key, template, lifetime, host=host.name, path=cert.path
            )
            say(f"{host.name}: {cert.path}: signed by {r.sign_command[0]} (serial {new.serial_number:X})")
        else:
            now = datetime.datetime.now(datetime.UTC)
            new = authority.issue(signer, csr.encode(), template, lifetime, now, r.key_type)
        pem = new.public_bytes(serialization.Encoding.PEM)
        async with locked(session, desired, host.name, [u.name for u in units if u.rollout_check], actor) as fence:
            for u in units:
                if u.rollout_check:
                    await guard(session, desired, u, host.name)
            await fence()
            valid = [str(int(t.timestamp())) for t in (new.not_valid_before_utc, new.not_valid_after_utc)]
            said = await script(session, host, ["install", cert.path, r.key_file, staged, *valid, *r.kubeconfigs], pem)
            if not said.startswith("@@INSTALLED"):
                raise HostError(f"{host.name}: {cert.path}: {printable(said.removeprefix('@@ERR '))[:300]}")
            installed = True
            embedded = f", embedded in {', '.join(r.kubeconfigs)}" if r.kubeconfigs else ""
            say(f"{host.name}: {cert.path}: installed (serial {new.serial_number:X}, until {new.not_valid_after_utc:%Y-%m-%d}){embedded}")  # fmt: skip
            failed = await restart_units(session, desired, host, units, say, fence)
            if failed:
                say(f"{host.name}: {failed}: putting the old pair back")
                back = await script(session, host, ["rollback", cert.path, r.key_file, *r.kubeconfigs])
                if not back.startswith("@@ROLLEDBACK"):
                    raise HostError(
                        f"{host.name}: {cert.path}: {failed}; the old pair could not be put back: {back[:300]}"
                    )

                async def unfenced() -> None:  # putting a working pair back is never stopped by a lock's doubt
                    return None

                again = await restart_units(session, desired, host, units, say, unfenced)
                raise HostError(
                    f"{host.name}: {cert.path}: {failed}; the old pair is back"
                    + (f" but {again}" if again else " and every unit healthy on it")
                )
            unreloaded = await reload_readers(session, host, [cert.path, r.key_file], say)
    except authority.CertError as exc:
        await _abort(session, host, staged, cert.path)
        raise HostError(f"{host.name}: {cert.path}: {exc}") from None
    except BaseException:
        if not installed:  # the staged key goes with the renewal that stopped (a lock not had, a guard's no)
            await _abort(session, host, staged, cert.path)
        raise
    serial = f"{new.serial_number:X}"
    for u in units:
        endpoints = presented_at(host, u, cert.path)  # parses the unit's files once
        if not endpoints:
            say(f"{host.name}: {u.name}: not looked at on the wire (no TLS endpoint of it known to present {cert.path})")  # fmt: skip
        for hostname, port in endpoints:
            address = f"[{hostname}]" if ":" in hostname else hostname
            shown = (await script(session, host, ["serial", address, str(port)])).removeprefix("@@SERIAL ").strip()
            if shown.upper().lstrip("0") != serial.lstrip("0"):
                raise HostError(
                    f"{host.name}: {u.name} at {address}:{port} presents serial {shown or 'none'}, not the new {serial}"
                )
            say(f"{host.name}: {u.name} at {address}:{port} presents the new certificate")
    await script(session, host, ["done", cert.path, r.key_file, *r.kubeconfigs])  # the old private key does not linger
    if unreloaded:  # the pair is good and in use by the units restarted: kept, and said
        raise HostError(f"{host.name}: {cert.path}: renewed, but {unreloaded} (the daemon reloads it)")
    return Renewed(
        host.name, cert.path, serial, new.not_valid_after_utc.timestamp(), round(time.monotonic() - began, 2)
    )


def _template(old: x509.Certificate, cas: list[x509.Certificate]) -> authority.Template:
    """The current certificate's template, from the first of `cas` shown to have signed it; the first CA's refusal
    when none has."""
    for ca in cas[1:]:
        with contextlib.suppress(authority.CertError):
            return authority.template_of(old, ca)
    return authority.template_of(old, cas[0])


def presented_at(host: DesiredHost, unit: DesiredUnit, cert_path: str) -> list[tuple[str, int]]:
    """Pure: where a restarted unit presents the certificate at `cert_path` over TLS, looked at for the new serial:
    for etcd, its client URLs when its cert-file is that file and its peer URLs when its peer-cert-file is (a
    certificate for the peers only is looked at on the peer port, one for the clients only never there); nowhere
    for a unit whose --tls-cert-file is another file; else the https URL of its health check."""
    texts = {p: f.content.decode("utf-8", errors="replace") for p, f in host.files.items()}
    svc = service(unit.path, texts)
    served = etcd.serving(svc, cert_path) if svc.program == "etcd" else None
    if served is not None:
        return served
    serving = svc.flags().get("tls-cert-file")  # a kube component's serving certificate
    if serving is not None and posixpath.normpath(serving.value) != posixpath.normpath(cert_path):
        return []  # it serves another one: this is a client's pair of it (an apiserver's --etcd-certfile)
    name = health_check(host, unit)
    check = host.check(name) if name else None
    if check is None or not (check.url or "").startswith("https://"):
        return []
    url = urlsplit(check.url or "")
    return [(url.hostname or "", url.port or 443)]


def health_check(host: DesiredHost, unit: DesiredUnit) -> str | None:
    """Pure: the health check a restarted unit is waited for and its certificate looked at through: its rollout
    check, else the host's HealthCheck of the unit's own name (the bundled kube-apiserver's); None: neither."""
    if unit.rollout_check:
        return unit.rollout_check
    return unit.spec_name if host.check(unit.spec_name) is not None else None


async def _abort(session: Session, host: DesiredHost, staged: str, path: str) -> None:
    with contextlib.suppress(HostError, OSError):
        await script(session, host, ["abort", staged, path])


async def restart_units(
    session: Session,
    desired: DesiredState,
    host: DesiredHost,
    units: list[DesiredUnit],
    say: Callable[[str], None],
    fence: Callable[[], Awaitable[None]],
) -> str:
    """Each unit restarted and waited for, the host's server out of the load balancers in front of it meanwhile
    (engine.drain); "" when every one is healthy, else what was not."""
    conn = await session.connection(host.target)
    async with drained(session, desired, host, [u.name for u in units], say) as block:
        for u in units:
            await fence()
            result = await conn.run(["systemctl", "restart", "--", u.name], timeout=u.rollout_timeout)
            if not result.ok:
                block.failed = True
                return f"{u.name} did not restart ({result.describe()})"
            name = health_check(host, u)
            if name:
                health = await wait_healthy(session, host, name, u.rollout_timeout)
                if not health.ok:
                    block.failed = True
                    return f"{u.name} not healthy within {u.rollout_timeout:g} s ({health.detail})"
            say(f"{host.name}: {u.name} restarted" + (", healthy" if name else ""))
    return ""


async def reload_readers(session: Session, host: DesiredHost, paths: list[str], say: Callable[[str], None]) -> str:
    """The running units whose reloadOn names one of `paths` (a bundle or a pair just replaced: HAProxy's ca-file)
    reloaded and stamped as the executor's reloads are (so the daemon's plan has none left to do), each waited for
    when it has a health check; "" when every one was, else what was not. A unit that is not active is left: it
    reads the files when it starts."""
    conn = await session.connection(host.target)
    for u in host.units:
        changed = [p for p in paths if p in u.reload_on]
        if not changed:
            continue
        if not (await conn.run(["systemctl", "is-active", "--", u.name], timeout=30)).ok:
            continue
        result = await conn.run(["sh", "-c", RELOAD_SCRIPT, "reconciler-reload", u.name, u.reload_stamp], timeout=60)
        if not result.ok:
            return f"{u.name} did not reload ({result.describe()})"
        name = health_check(host, u)
        if name:
            health = await wait_healthy(session, host, name, u.rollout_timeout)
            if not health.ok:
                return f"{u.name} not healthy within {u.rollout_timeout:g} s of its reload ({health.detail})"
        say(f"{host.name}: {u.name} reloaded ({', '.join(changed)} changed)")
    return ""


@contextlib.asynccontextmanager
async def locked(
    session: Session, desired: DesiredState, host: str, units: list[str], actor: str
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The restart lock of each unit (in name order: two actors never wait on each other), when etcd's members are
    in the specs to hold it; yields the fence: a HostError once any of them is no longer held."""
    members = etcd_members(desired)
    held: list[Turn] = []
    async with contextlib.AsyncExitStack() as stack:
        if members:
            for unit in sorted(units):
                api = EtcdOnHosts(session, members, last=host)
                held.append(await stack.enter_async_context(RestartLock(api, actor).turn(unit, host, wait=300)))

        async def fence() -> None:
            for turn in held:
                if not await turn():
                    raise HostError(f"{host}: a restart lock was lost; the renewal stopped (run it again)")

        yield fence


async def _csr(session: Session, host: DesiredHost, key_type: str, path: str) -> tuple[str, str]:
    said = await script(session, host, ["csr", key_type, path])
    first, _, rest = said.partition("\n")
    if not first.startswith("@@STAGED ") or "BEGIN CERTIFICATE REQUEST" not in rest:
        raise HostError(f"{host.name}: no key and request made: {printable(first.removeprefix('@@ERR '))[:300]}")
    return first.removeprefix("@@STAGED ").strip(), rest


async def script(session: Session, host: DesiredHost, args: list[str], data: bytes = b"") -> str:
    conn = await session.connection(host.target)
    result = await conn.run(
        ["bash", "-c", SCRIPT, "reconciler-cert-renew", *args], input=data, timeout=TIMEOUT, max_output=1 << 17
    )
    said = result.stdout.decode("utf-8", errors="replace")
    if not result.ok:
        raise HostError(f"{host.name}: {result.describe()}")
    if said.startswith("@@ERR ") and args[0] in ("read", "csr"):
        raise HostError(f"{host.name}: {printable(said.removeprefix('@@ERR ').strip())[:300]}")
    return said
