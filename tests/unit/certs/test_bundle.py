"""certs.bundle and the CA rotation's pure rules (engine.ca_rotation): a trust file read (only PEM certificates, bounded),
a CA added after the others and taken out by its fingerprint; a file the specs name told apart as a trust file, a leaf
of the old or new CA, or another CA's; the units a host's phase restarts, in the specs' order."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from reconciler.certs import bundle
from reconciler.certs.authority import CertError, Template, issue, load
from reconciler.engine.ca_rotation import Leaf, Trust, classify
from tests.support.pki import NOW, ca_files, csr, name


def cas(tmp_path: Path) -> tuple:  # type: ignore[type-arg]
    old, new = load(*ca_files(tmp_path / "old")), load(*ca_files(tmp_path / "new"))
    return old, new


def test_a_ca_is_added_last_once_and_taken_out_by_its_fingerprint(tmp_path: Path) -> None:
    old, new = cas(tmp_path)
    certs = bundle.certificates(bundle.pem([old.cert]))
    both = bundle.with_ca(certs, new.cert)
    assert [bundle.fingerprint(c) for c in both] == [bundle.fingerprint(old.cert), bundle.fingerprint(new.cert)]
    assert bundle.with_ca(both, new.cert) == both  # once
    assert bundle.without_ca(both, old.cert) == [new.cert]
    again = bundle.certificates(bundle.pem(both))  # written and read back: the same certificates
    assert [bundle.fingerprint(c) for c in again] == [bundle.fingerprint(c) for c in both]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (b"", "besides PEM certificates"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "besides PEM certificates"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a certificate"),
        (b"x" * (bundle.MAX_BYTES + 1), "larger than"),
    ],
)
def test_a_file_that_is_not_only_certificates_is_refused_never_rewritten(text: bytes, said: str) -> None:
    with pytest.raises(CertError, match=said):
        bundle.certificates(text)


def test_a_key_beside_the_certificates_is_refused(tmp_path: Path) -> None:
    old, _ = cas(tmp_path)
    key = old.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CertError, match="besides PEM certificates"):
        bundle.certificates(bundle.pem([old.cert]) + key)


def test_too_many_certificates_are_refused(tmp_path: Path) -> None:
    old, _ = cas(tmp_path)
    with pytest.raises(CertError, match="more than"):
        bundle.certificates(bundle.pem([old.cert] * (bundle.MAX_CERTS + 1)))


def test_each_file_the_specs_name_is_told_apart(tmp_path: Path) -> None:
    old, new = cas(tmp_path)
    other = load(*ca_files(tmp_path / "other"))
    t = Template(name("kubernetes"), ("master-1",), (), True, True)
    leaf_old = issue(old, csr(), t, datetime.timedelta(days=30), NOW)
    leaf_new = issue(new, csr(), t, datetime.timedelta(days=30), NOW)
    assert classify("/ca.pem", [old.cert], old.cert, new.cert, False) == Trust("/ca.pem", [old.cert], True, False)
    assert classify("/ca.pem", [old.cert, new.cert], old.cert, new.cert, False).new  # type: ignore[union-attr]
    assert classify("/k.pem", [leaf_old], old.cert, new.cert, True) == Leaf("/k.pem", "old", True)
    assert classify("/k.pem", [leaf_new], old.cert, new.cert, False) == Leaf("/k.pem", "new", False)
    assert classify("/front-proxy-ca.pem", [other.cert], old.cert, new.cert, False) is None  # another CA: left alone
    foreign = issue(other, csr(), t, datetime.timedelta(days=30), NOW)
    assert classify("/x.pem", [foreign], old.cert, new.cert, False) == Leaf("/x.pem", "other", False)
