"""A trust file (the CA bundle a master's components read: the seed's ca.pem) as a CA rotation sees it: the PEM
certificates in it, told apart by their SHA-256 fingerprint; a CA added to it or taken out of it. Pure.

Used by `engine.ca_rotation`. Bounded: at most MAX_BYTES of a file and MAX_CERTS certificates are read; a file that
holds anything but PEM certificates between them (a key, garbage) is refused, never rewritten.
"""

from __future__ import annotations

import hashlib
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from reconciler.certs.authority import CertError

MAX_BYTES = 65536
MAX_CERTS = 32
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]{1,16384}?-----END CERTIFICATE-----\r?\n?")


def certificates(text: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM file, in order; CertError when it holds anything else (blank lines aside)."""
    if len(text) > MAX_BYTES:
        raise CertError(f"larger than {MAX_BYTES} bytes: not a CA bundle")
    blocks = PEM.findall(text)
    if PEM.sub(b"", text).strip() or not blocks:
        raise CertError("holds something besides PEM certificates: not rewritten")
    if len(blocks) > MAX_CERTS:
        raise CertError(f"holds more than {MAX_CERTS} certificates")
    try:
        return [x509.load_pem_x509_certificate(b) for b in blocks]
    except ValueError:
        raise CertError("holds a PEM block that is not a certificate") from None


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def holds(certs: list[x509.Certificate], ca: x509.Certificate) -> bool:
    return fingerprint(ca) in {fingerprint(c) for c in certs}


def pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def with_ca(certs: list[x509.Certificate], ca: x509.Certificate) -> list[x509.Certificate]:
    """The bundle trusting `ca` too: added last, the others kept in their order."""
    return certs if holds(certs, ca) else [*certs, ca]


def without_ca(certs: list[x509.Certificate], ca: x509.Certificate) -> list[x509.Certificate]:
    drop = fingerprint(ca)
    return [c for c in certs if fingerprint(c) != drop]


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, ValueError, TypeError: not this CA's
        return False
    return True
