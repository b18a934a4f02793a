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
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reconciler.certs.authority import BACKDATE, MAX_PEM, CertError, PublicKey, Template, is_ca, spki
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


async def _bounded(stream: asyncio.StreamReader, limit: int) -> bytes:
    """All of a pipe read (so the program never blocks on it), the first `limit` + 1 bytes kept."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) <= limit:
            kept += chunk[: limit + 1 - len(kept)]
    return bytes(kept)


async def run(command: Sequence[str], csr_pem: bytes, env: dict[str, str], timeout: float = SIGN_TIMEOUT) -> bytes:
    """The signer's answer (its stdout); CertError when it cannot be started, refuses, says too much or takes too
    long (then its whole process group is killed)."""
    program = command[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
            start_new_session=True,
        )
    except OSError as exc:
        raise CertError(f"the signer {program} could not be started: {exc.strerror or exc}") from None
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    async def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a signer that does not read it
            proc.stdin.write(csr_pem)
            await proc.stdin.drain()
        proc.stdin.close()

    try:
        _, out, err, status = await asyncio.wait_for(
            asyncio.gather(
                feed(), _bounded(proc.stdout, OUTPUT_LIMIT), _bounded(proc.stderr, REASON_LIMIT), proc.wait()
            ),
            timeout,
        )
    except TimeoutError:
        raise CertError(f"the signer {program} did not answer within {timeout:g} s: stopped") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    if status != 0:
        lines = [line for line in printable(err.decode(errors="replace")).splitlines() if line.strip()]
        reason = f": {lines[-1].strip()[:300]}" if lines else ""
        raise CertError(f"the signer {program} refused (exit status {status}){reason}")
    if len(out) > OUTPUT_LIMIT:
        raise CertError(f"the signer {program} answered more than {OUTPUT_LIMIT // 1024} KiB")
    return out


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


def _attributes(name: x509.Name) -> list[tuple[str, str]]:
    return sorted((a.oid.dotted_string, str(a.value)) for a in name)


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
    if is_ca(cert):
        raise CertError("the signer issued a CA certificate")
    with contextlib.suppress(x509.ExtensionNotFound):
        if cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            raise CertError("the signer's certificate may sign certificates (keyCertSign)")
    if _attributes(cert.subject) != _attributes(template.subject):
        raise CertError(
            f"the signer's certificate says {cert.subject.rfc4514_string()[:200]}, "
            f"not {template.subject.rfc4514_string()[:200]}"
        )
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
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
    with contextlib.suppress(x509.ExtensionNotFound):
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        for needed, oid in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
            if getattr(template, needed) and oid not in usages:
                raise CertError(f"the signer's certificate lacks the {needed} usage the current one has")
    if cert.not_valid_before_utc > now + BACKDATE:
        raise CertError(f"the signer's certificate starts at {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC, later than now")  # fmt: skip
    if cert.not_valid_after_utc < now + datetime.timedelta(hours=1):
        raise CertError(f"the signer's certificate ends at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, within an hour")  # fmt: skip
    if cert.not_valid_after_utc > now + lifetime + SLACK:
        raise CertError(
            f"the signer's certificate ends at {cert.not_valid_after_utc:%Y-%m-%d} UTC, past the "
            f"{lifetime.days}-day lifetime the spec asks"
        )
    return cert


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
