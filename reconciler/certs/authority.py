"""The operator's CA on reconciler's machine, and what it signs: a leaf certificate for a key a master made.

Owns reading the CA (its certificate, and its key from a regular file of this machine's that only its owner can
read: never a link, never sent anywhere) and issuing: the master sends a CSR, whose signature proves it holds the
key (nothing else of the CSR is taken: not its subject, not its names, not its extensions); the certificate gets
the subject and names the *template* says (the current certificate's, which this CA signed, or the spec's), a
leaf's extensions (never CA:TRUE), a random serial, a validity from a few minutes ago to the lifetime's end (never
past the CA's own). Pure, apart from reading the two files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

MAX_PEM = 64 * 1024
BACKDATE = datetime.timedelta(minutes=5)  # a master's clock a little behind still accepts it


class CertError(Exception):
    """Not issued: why."""


@dataclass(frozen=True)
class Template:
    """What a renewed certificate says: kept from the current one (or given by the spec)."""

    subject: x509.Name
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    server: bool  # serverAuth
    client: bool  # clientAuth

    def describe(self) -> str:
        names = [*self.dns, *self.ips]
        return f"{self.subject.rfc4514_string()[:200]}" + (f" ({', '.join(names)[:300]})" if names else "")


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

    @property
    def name(self) -> str:
        return self.cert.subject.rfc4514_string()[:200]


def _read_private(path: Path) -> bytes:
    """A key file's bytes: a regular file (no link followed), owned by us, readable by its owner only."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO does not block it
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CertError(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise CertError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}): chmod 0600 it")
        if st.st_uid != os.geteuid():
            raise CertError(f"{path} is not owned by the user reconciler runs as")
        return os.read(fd, MAX_PEM + 1)
    finally:
        os.close(fd)


def spki(public: object) -> bytes:
    return public.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_certificate(cert_file: Path) -> x509.Certificate:
    """The CA's certificate from its file; CertError when it is not a CA certificate."""
    try:
        with open(cert_file, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read(MAX_PEM))
    except OSError as exc:
        raise CertError(f"the CA: {exc.strerror or exc}") from None
    except ValueError:
        raise CertError(f"{cert_file}: not a PEM certificate") from None
    if not is_ca(cert):
        raise CertError(f"{cert_file} is not a CA certificate (basicConstraints CA:TRUE)")
    return cert


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def load(cert_file: Path, key_file: Path) -> Authority:
    """The CA from its two files; CertError when they are not a CA certificate and its key."""
    cert = load_certificate(cert_file)
    try:
        key = serialization.load_pem_private_key(_read_private(key_file)[:MAX_PEM], password=None)
    except OSError as exc:
        raise CertError(f"the CA: {exc.strerror or exc}") from None
    except (ValueError, TypeError):  # TypeError: an encrypted key (reconciler has no passphrase to give it)
        raise CertError(f"{key_file}: not an unencrypted PEM key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise CertError(f"{key_file}: a key type reconciler does not sign with")
    if spki(key.public_key()) != spki(cert.public_key()):
        raise CertError(f"{key_file} is not the key of {cert_file}")
    return Authority(cert, key)


def template_of(cert: x509.Certificate, ca: Authority | x509.Certificate) -> Template:
    """The subject and names of a current certificate, once this CA is shown to have signed it (a host cannot make
    reconciler sign names its CA never gave it); CertError otherwise."""
    ca_cert = ca.cert if isinstance(ca, Authority) else ca
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception as exc:  # InvalidSignature, or a key type that cannot have signed it
        raise CertError(
            f"it was not signed by the CA {ca_cert.subject.rfc4514_string()[:200]} ({type(exc).__name__})"
        ) from None
    if is_ca(cert):
        raise CertError("it is a CA certificate: a master's leaf is never one")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        server = ExtendedKeyUsageOID.SERVER_AUTH in usages
        client = ExtendedKeyUsageOID.CLIENT_AUTH in usages
    except x509.ExtensionNotFound:
        server = client = True
    return Template(cert.subject, dns, ips, server, client)


def _authority_key_id(ca: Authority) -> x509.AuthorityKeyIdentifier:
    """The CA's own subject key identifier when it has one (clients match the two), else one from its key."""
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def names_problem(template: Template, host: str, address: str) -> str:
    """Pure: why `template` is not a certificate of this host ("" when it is): with names, they must name the host
    (its address or its name: a current certificate that names only others is another's), and none may be a
    wildcard."""
    names = [*template.dns, *template.ips]
    if any("*" in n for n in names):
        return "it names a wildcard: not renewed"
    if names and address not in template.ips and host not in template.dns:
        return f"its names ({', '.join(names)[:200]}) include neither {host} nor {address}: another's certificate"
    return ""


def attributes(name: x509.Name) -> list[tuple[str, str]]:
    """Pure: a name's attributes, in one order (two names with the same attributes are the same identity)."""
    return sorted((a.oid.dotted_string, str(a.value)) for a in name)


def subject_problem(template: Template, pinned: str | None) -> str:
    """Pure: why a certificate of `template` is not renewed at a path whose spec pins `pinned` ("" when it is): the
    subject must be the pinned one; one that names no host (a client's) is renewed only with a pinned subject, since
    nothing else ties its identity to this master (a certificate is no secret: a master must not get a new key for
    one it copied from elsewhere)."""
    if pinned is not None:
        want = x509.Name.from_rfc4514_string(pinned)
        if attributes(template.subject) != attributes(want):  # in any order: an external signer writes its own
            return f"its subject is {template.subject.rfc4514_string()[:200]}, the spec renews only {pinned[:200]}"
        return ""
    if not template.dns and not template.ips:
        return "it names no host (a client's certificate): renewed only when the spec pins its subject (renew.subject)"
    return ""


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def requested_key(csr_pem: bytes, key_type: str | None = None) -> PublicKey:
    """The key a master's CSR proves it holds; CertError when the CSR does not prove it or its key is not of
    `key_type` (rsa-2048: RSA of at least 2048 bits; ecdsa-p256: EC)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem[:MAX_PEM])
    except ValueError:
        raise CertError("the master sent something that is not a PEM certificate request") from None
    if not csr.is_signature_valid:
        raise CertError("the certificate request's signature is not valid: it does not prove its key")
    public = csr.public_key()
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < 2048:
        raise CertError(f"an RSA key of {public.key_size} bits (at least 2048)")
    if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise CertError("a key type reconciler does not issue for")
    if isinstance(public, ec.EllipticCurvePublicKey) and not isinstance(public.curve, ec.SECP256R1 | ec.SECP384R1):
        raise CertError(
            f"an EC key on {public.curve.name} (Go's TLS, etcd's and the apiserver's, takes P-256 or P-384)"
        )
    wanted = {"rsa-2048": rsa.RSAPublicKey, "ecdsa-p256": ec.EllipticCurvePublicKey}.get(key_type or "")
    if wanted is not None and not isinstance(public, wanted):
        raise CertError(f"the master made a key that is not {key_type}")
    return public


def issue(
    ca: Authority,
    csr_pem: bytes,
    template: Template,
    lifetime: datetime.timedelta,
    now: datetime.datetime,
    key_type: str | None = None,
) -> x509.Certificate:
    """A leaf for the CSR's key (`requested_key`), saying what `template` says."""
    public = requested_key(csr_pem, key_type)
    if lifetime < datetime.timedelta(hours=1):
        raise CertError("a lifetime under an hour")
    not_after = min(now + lifetime, ca.cert.not_valid_after_utc)
    if not_after <= now + datetime.timedelta(hours=1):
        raise CertError(
            f"the CA {ca.name} expires at {ca.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: rotate it first"
        )
    usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, template.server), (ExtendedKeyUsageOID.CLIENT_AUTH, template.client)) if on]  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(template.subject)
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=isinstance(public, rsa.RSAPublicKey),
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(_authority_key_id(ca), critical=False)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in template.dns]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in template.ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    algorithm = None if isinstance(ca.key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(ca.key, algorithm)  # type: ignore[arg-type]
