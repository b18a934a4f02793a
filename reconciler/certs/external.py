"""An external signer: the operator's own program on reconciler's machine (around `cfssl sign`, a `cfssl serve`,
`step ca sign`, an offline CA) issuing a master's certificate in place of the CA key file; and the check of what
it returns.

Owns running a Certificate's `renew.signCommand` (argv: no shell, no PATH look-up) with the master's certificate
request on stdin and what to issue in RECONCILER_* variables (`environment`), bounded (SIGN_TIMEOUT seconds, its
process group killed after; OUTPUT_LIMIT bytes of its answer read, the rest discarded), its last line on stderr
as its reason when it refuses (an exit status other than 0); and `accept`, pure: its certificate is installed only
when it is what reconciler's own CA would have issued: a leaf, signed directly by the spec's CA, for the key the
master's request proves, its subject's attributes and its names exactly the template's (none added, none missing),
the usages the template needs, valid now and for an hour at least, not past the lifetime asked (a day's slack),
no MD5 or SHA-1 signature. Called by `engine.cert_renewal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
import signal
import stat
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reconciler.certs.authority import BACKDATE, MAX_PEM, CertError, PublicKey, Template, attributes, spki
from reconciler.terminal import printable

SIGN_TIMEOUT = 60.0
OUTPUT_LIMIT = MAX_PEM  # a certificate and its chain fit many times over
REASON_LIMIT = 4096  # of its stderr: its last line is said
SLACK = datetime.timedelta(days=1)  # a signer that rounds the lifetime up (to a whole day, its own unit)
NAME_RE = re.compile(r"[A-Za-z0-9*._-]{1,253}")  # a DNS SAN as a signer's command line can carry it
# cfssl's subject file ("names": C, ST, L, O, OU; CN beside them)
CFSSL_NAMES = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
}


SIGNERS = "/etc/reconciler/signers"  # where the signers a spec may name are installed (RECONCILER_SIGNERS: another)


def signers_directory() -> str:
    return os.path.normpath(os.environ.get("RECONCILER_SIGNERS") or SIGNERS)


def program_problem(program: str, directory: str | None = None) -> str:
    """Why the spec's signer may not run ("" when it may): a spec chooses among the signers the operator installed,
    each a regular file (no link) directly in the signers' directory, that directory and the file owned by root or
    reconciler's user and writable by no one else; a spec cannot make reconciler's machine run anything else."""
    where = directory or signers_directory()
    if os.path.dirname(program) != where:
        return f"the signer {program} is not in {where}, where the operator installs the signers specs may name"
    for path, kind in ((where, stat.S_ISDIR), (program, stat.S_ISREG)):
        try:
            st = os.lstat(path)
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        if not kind(st.st_mode):
            return f"{path} is not a {'directory' if kind is stat.S_ISDIR else 'regular file'} (a link is not followed)"
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
            return f"{path} may be changed by another user than root or reconciler's (owner {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"  # fmt: skip
    if not os.access(program, os.X_OK):
        return f"{program} is not executable"
    return ""


def environment(template: Template, lifetime: datetime.timedelta, host: str, path: str) -> dict[str, str]:
    """Pure: what the signer is asked to issue, as RECONCILER_* variables (CertError for a name no command line
    should carry)."""
    for name in template.dns:
        if not NAME_RE.fullmatch(name):
            raise CertError(f"a DNS name the signer cannot be given: {printable(name)[:100]!r}")
    cn = [str(a.value) for a in template.subject if a.oid == NameOID.COMMON_NAME]
    names = [{CFSSL_NAMES[a.oid]: str(a.value)} for a in template.subject if a.oid in CFSSL_NAMES]
    usages = [u for u, on in (("server", template.server), ("client", template.client)) if on]
    return {
        "RECONCILER_SUBJECT": template.subject.rfc4514_string(),
        "RECONCILER_SUBJECT_JSON": json.dumps({"CN": cn[0] if cn else "", "names": names}),
        "RECONCILER_SANS": ",".join([*template.dns, *template.ips]),
        "RECONCILER_DNS_NAMES": ",".join(template.dns),
        "RECONCILER_IP_ADDRESSES": ",".join(template.ips),
        "RECONCILER_USAGES": ",".join(usages),
        "RECONCILER_LIFETIME_HOURS": str(max(1, int(lifetime.total_seconds() // 3600))),
        "RECONCILER_HOST": host,
        "RECONCILER_CERT_PATH": path,
    }


async def _read(stream: asyncio.StreamReader, kept: bytearray, limit: int) -> None:
    """A pipe read to its end (so the program never blocks on it), its first `limit` + 1 bytes kept."""
    while chunk := await stream.read(65536):
        if len(kept) <= limit:
            kept += chunk[: limit + 1 - len(kept)]


async def _exited(proc: asyncio.subprocess.Process) -> None:
    """Until the process has exited (its pipes may stay open: a child holds them; `Process.wait` would wait on them)."""
    while proc.returncode is None:
        await asyncio.sleep(0.05)


def _environment(env: dict[str, str]) -> dict[str, str]:
    """What the signer runs with: `env`, and of reconciler's own environment only what a program needs to run (not
    its SSH agent, not its credentials, not another RECONCILER_ variable)."""
    kept = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")}
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **kept, **env}


async def run(command: Sequence[str], csr_pem: bytes, env: dict[str, str], timeout: float = SIGN_TIMEOUT) -> bytes:
    """The signer's answer (its stdout); CertError when it cannot be started, refuses, says too much or takes too
    long. Its whole process group is killed when it is done (a child left behind too), or at the timeout, or when
    the caller is cancelled; an answer held open by a child that left the group is read for a second more."""
    program = command[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_environment(env),
            start_new_session=True,
        )
    except OSError as exc:
        raise CertError(f"the signer {program} could not be started: {exc.strerror or exc}") from None
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()

    async def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a signer that does not read it
            proc.stdin.write(csr_pem)
            await proc.stdin.drain()
        proc.stdin.close()

    feeding = asyncio.ensure_future(feed())
    reading = asyncio.gather(_read(proc.stdout, out, OUTPUT_LIMIT), _read(proc.stderr, err, REASON_LIMIT))
    exiting = asyncio.ensure_future(_exited(proc))
    try:
        either: set[asyncio.Future[Any]] = {reading, exiting}
        done, _ = await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if exiting in done and not reading.done():  # it exited; a child of its may hold its output open
            await asyncio.wait({reading}, timeout=1.0)
        elif reading in done and not exiting.done():  # its output closed: it is about to exit
            await asyncio.wait({exiting}, timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for task in (feeding, reading, exiting):
            task.cancel()
        await asyncio.gather(feeding, reading, exiting, return_exceptions=True)
        transport = getattr(proc, "_transport", None)  # its pipes closed even if a child outside the group holds them
        if transport is not None:
            transport.close()
    status = proc.returncode
    if status is None or status == -signal.SIGKILL:
        raise CertError(f"the signer {program} did not answer within {timeout:g} s: stopped")
    if status != 0:
        lines = [line for line in printable(err.decode(errors="replace")).splitlines() if line.strip()]
        reason = f": {lines[-1].strip()[:300]}" if lines else ""
        raise CertError(f"the signer {program} refused (exit status {status}){reason}")
    if len(out) > OUTPUT_LIMIT:
        raise CertError(f"the signer {program} answered more than {OUTPUT_LIMIT // 1024} KiB")
    return bytes(out)


def certificate_of(answer: bytes) -> x509.Certificate:
    """The first PEM certificate of a signer's answer (a chain after it is not read)."""
    begin = answer.find(b"-----BEGIN CERTIFICATE-----")
    end = answer.find(b"-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        raise CertError("the signer's answer holds no PEM certificate")
    try:
        return x509.load_pem_x509_certificate(answer[begin : end + len(b"-----END CERTIFICATE-----")])
    except ValueError:
        raise CertError("the signer's answer holds a PEM block that is not a certificate") from None


def accept(
    cert: x509.Certificate,
    ca: x509.Certificate,
    key: PublicKey,
    template: Template,
    lifetime: datetime.timedelta,
    now: datetime.datetime,
) -> x509.Certificate:
    """Pure: `cert` when it is what reconciler's own CA would have issued for `key` and `template`, else CertError
    saying the first thing that is not (module docstring)."""
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):  # before the check of the signature, which refuses them too
        raise CertError(f"the signer's certificate is signed with {algorithm.name}")
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as exc:  # InvalidSignature, an issuer name that differs, a key type that cannot have signed it
        raise CertError(
            f"the signer's certificate is not signed by the CA {ca.subject.rfc4514_string()[:200]} ({type(exc).__name__})"
        ) from None
    if spki(cert.public_key()) != spki(key):
        raise CertError("the signer's certificate is for another key than the one the master made")
    try:
        _extensions(cert, template)
    except ValueError:  # an extension cryptography cannot parse
        raise CertError("the signer's certificate holds an extension that cannot be read") from None
    if attributes(cert.subject) != attributes(template.subject):
        raise CertError(
            f"the signer's certificate says {cert.subject.rfc4514_string()[:200]}, "
            f"not {template.subject.rfc4514_string()[:200]}"
        )
    if cert.not_valid_before_utc > now + BACKDATE:
        raise CertError(f"the signer's certificate starts at {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC, later than now")  # fmt: skip
    if cert.not_valid_after_utc < now + datetime.timedelta(hours=1):
        raise CertError(f"the signer's certificate ends at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, within an hour")  # fmt: skip
    if cert.not_valid_after_utc > ca.not_valid_after_utc:
        raise CertError("the signer's certificate ends after its CA")
    if cert.not_valid_after_utc > now + lifetime + SLACK:
        raise CertError(
            f"the signer's certificate ends at {cert.not_valid_after_utc:%Y-%m-%d} UTC, past the "
            f"{lifetime.days}-day lifetime the spec asks"
        )
    return cert


KNOWN = (  # the extensions a leaf may carry; anything else refused when critical
    x509.BasicConstraints,
    x509.KeyUsage,
    x509.ExtendedKeyUsage,
    x509.SubjectAlternativeName,
    x509.SubjectKeyIdentifier,
    x509.AuthorityKeyIdentifier,
)


def _extensions(cert: x509.Certificate, template: Template) -> None:
    """CertError unless the extensions are a leaf's, saying the template's names and usages exactly."""
    ext = cert.extensions
    try:
        constraints = ext.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertError("the signer's certificate does not say it is no CA (basicConstraints CA:FALSE)") from None
    if constraints.ca:
        raise CertError("the signer issued a CA certificate")
    unknown = [e.oid.dotted_string for e in ext if e.critical and not isinstance(e.value, KNOWN)]
    if unknown:
        raise CertError(f"the signer's certificate holds a critical extension reconciler does not know ({unknown[0]})")
    with contextlib.suppress(x509.ExtensionNotFound):
        usage = ext.get_extension_for_class(x509.KeyUsage).value
        if usage.key_cert_sign or usage.crl_sign:
            raise CertError("the signer's certificate may sign certificates or CRLs (keyCertSign, cRLSign)")
    try:
        san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = {d.lower() for d in san.get_values_for_type(x509.DNSName)}
        ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
        other = len(list(san)) - len(san.get_values_for_type(x509.DNSName)) - len(san.get_values_for_type(x509.IPAddress))  # fmt: skip
    except x509.ExtensionNotFound:
        dns, ips, other = set(), set(), 0
    want_dns, want_ips = {d.lower() for d in template.dns}, set(template.ips)
    if dns != want_dns or ips != want_ips or other:
        extra, missing = sorted((dns - want_dns) | (ips - want_ips)), sorted((want_dns - dns) | (want_ips - ips))
        said = [
            f"adds {', '.join(extra)[:200]}" if extra else "",
            f"lacks {', '.join(missing)[:200]}" if missing else "",
        ]
        said.append(f"adds {other} name(s) of another kind" if other else "")
        raise CertError(f"the signer's certificate names other hosts than asked: it {'; '.join(s for s in said if s)}")
    wanted = {o for o, on in ((ExtendedKeyUsageOID.SERVER_AUTH, template.server), (ExtendedKeyUsageOID.CLIENT_AUTH, template.client)) if on}  # fmt: skip
    try:
        usages = set(ext.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    if usages != wanted:
        names = {ExtendedKeyUsageOID.SERVER_AUTH: "server", ExtendedKeyUsageOID.CLIENT_AUTH: "client"}
        said_usages = ", ".join(sorted(names.get(u, u.dotted_string) for u in usages)) or "none"
        raise CertError(
            f"the signer's certificate is for {said_usages}, not exactly {', '.join(sorted(names[u] for u in wanted))}"
            " (the usages the current one has: set the signer's profile to them)"
        )


async def issue(
    command: Sequence[str],
    ca: x509.Certificate,
    csr_pem: bytes,
    key: PublicKey,
    template: Template,
    lifetime: datetime.timedelta,
    *,
    host: str,
    path: str,
) -> x509.Certificate:
    """The certificate the signer issues for the master's request, once `accept`ed."""
    answer = await run(command, csr_pem, environment(template, lifetime, host, path))
    now = datetime.datetime.now(datetime.UTC)
    return accept(certificate_of(answer), ca, key, template, lifetime, now)
