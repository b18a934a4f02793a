"""certs.authority: the operator's CA read safely (a key others can read, a link, a key of another certificate, a
certificate that is no CA: refused) and what it signs for a master: only a key the CSR proves, with the subject and
names of the certificate this CA gave the master before, never the CSR's own (another master's name, a CA:TRUE
request), never past the CA's own end."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from reconciler.certs.authority import CertError, Template, issue, load, template_of
from tests.support.pki import NOW, ca_files, csr, name


def leaf_of(ca_cert: Path, ca_key: Path) -> x509.Certificate:
    """The master's current certificate, as the operator's CA made it."""
    ca = load(ca_cert, ca_key)
    t = Template(name("kubernetes"), ("kubernetes", "master-1"), ("198.18.0.11",), server=True, client=True)
    return issue(ca, csr(), t, datetime.timedelta(days=365), NOW)


def test_the_issued_leaf_says_the_templates_names_never_the_csrs(tmp_path: Path) -> None:
    files = ca_files(tmp_path)
    ca = load(*files)
    current = leaf_of(*files)
    template = template_of(current, ca)
    requested = csr("master-2", sans=["master-2", "kubernetes.default"], ca=True)  # a hostile master's wishes
    new = issue(ca, requested, template, datetime.timedelta(days=365), NOW)
    assert new.subject == name("kubernetes")
    san = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["kubernetes", "master-1"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("198.18.0.11")]
    assert new.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = new.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    new.verify_directly_issued_by(ca.cert)
    assert new.not_valid_before_utc < NOW < new.not_valid_after_utc == NOW + datetime.timedelta(days=365)
    assert new.serial_number != current.serial_number


def test_a_csr_that_does_not_prove_its_key_or_a_weak_key_is_refused(tmp_path: Path) -> None:
    ca = load(*ca_files(tmp_path))
    template = Template(name("kubernetes"), (), (), True, True)
    good = csr()
    body = bytearray(x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER))
    body[-10] ^= 0xFF  # the signature changed
    forged = x509.load_der_x509_csr(bytes(body)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertError, match="does not prove its key"):
        issue(ca, forged, template, datetime.timedelta(days=1), NOW)
    with pytest.raises(CertError, match="RSA key of 1024 bits"):
        issue(ca, csr(key=rsa.generate_private_key(65537, 1024)), template, datetime.timedelta(days=1), NOW)
    with pytest.raises(CertError, match="not a PEM certificate request"):
        issue(ca, b"garbage", template, datetime.timedelta(days=1), NOW)


def test_never_past_the_cas_own_end_and_refused_near_it(tmp_path: Path) -> None:
    ca = load(*ca_files(tmp_path, days=30))
    template = Template(name("kubernetes"), (), (), True, True)
    new = issue(ca, csr(), template, datetime.timedelta(days=365), NOW)
    assert new.not_valid_after_utc == ca.cert.not_valid_after_utc
    with pytest.raises(CertError, match="rotate it first"):
        issue(ca, csr(), template, datetime.timedelta(days=365), NOW + datetime.timedelta(days=30))


def test_a_certificate_another_ca_signed_gives_no_template(tmp_path: Path) -> None:
    ours = load(*ca_files(tmp_path / "ours"))
    theirs_leaf = leaf_of(*ca_files(tmp_path / "theirs"))
    with pytest.raises(CertError, match="not signed by the CA"):
        template_of(theirs_leaf, ours)
    with pytest.raises(CertError, match="a CA certificate"):
        template_of(ours.cert, ours)  # self-signed by it, but a CA


def test_the_ca_key_must_be_its_owners_alone_a_file_and_the_cas(tmp_path: Path) -> None:
    cert, key = ca_files(tmp_path / "a")
    key.chmod(0o640)
    with pytest.raises(CertError, match="readable by others"):
        load(cert, key)
    key.chmod(0o600)
    link = tmp_path / "link.pem"
    link.symlink_to(key)
    with pytest.raises(CertError):
        load(cert, link)
    _, other_key = ca_files(tmp_path / "b")
    with pytest.raises(CertError, match="is not the key of"):
        load(cert, other_key)
    not_ca, not_ca_key = ca_files(tmp_path / "c", ca=False)
    with pytest.raises(CertError, match="not a CA certificate"):
        load(not_ca, not_ca_key)
    assert os.stat(key).st_mode & 0o777 == 0o600


def test_a_key_of_another_type_or_curve_and_a_lifetime_under_an_hour_are_refused(tmp_path: Path) -> None:
    ca = load(*ca_files(tmp_path))
    t = Template(name("kubernetes"), (), (), True, True)
    with pytest.raises(CertError, match="not rsa-2048"):
        issue(ca, csr(), t, datetime.timedelta(days=1), NOW, "rsa-2048")  # an EC key
    with pytest.raises(CertError, match="an EC key on secp192r1"):
        issue(ca, csr(key=ec.generate_private_key(ec.SECP192R1())), t, datetime.timedelta(days=1), NOW)
    with pytest.raises(CertError, match="a lifetime under an hour"):
        issue(ca, csr(), t, datetime.timedelta(minutes=30), NOW)


def test_an_encrypted_ca_key_is_said_not_raised(tmp_path: Path) -> None:
    cert, key_file = ca_files(tmp_path)
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(CertError, match="an unencrypted PEM key"):
        load(cert, key_file)


@pytest.mark.parametrize(
    ("dns", "ips", "said"),
    [
        (("master-1", "kubernetes"), ("198.18.0.11",), ""),
        (("kubernetes",), ("198.18.0.11",), ""),  # its address
        (("master-2",), ("198.18.0.12",), "another's certificate"),  # a hostile master answering with another's
        (("*.cluster.local", "master-1"), (), "wildcard"),
        ((), (), ""),  # a client certificate: no names
    ],
)
def test_a_current_certificate_must_name_its_own_host(dns: tuple[str, ...], ips: tuple[str, ...], said: str) -> None:
    from reconciler.certs.authority import names_problem

    problem = names_problem(Template(name("kubernetes"), dns, ips, True, True), "master-1", "198.18.0.11")
    assert (said in problem) if said else problem == ""


@pytest.mark.parametrize(
    ("subject", "dns", "pinned", "said"),
    [
        ("CN=admin,O=system:masters", (), "CN=admin,O=system:masters", ""),  # the pinned client certificate
        ("O=system:masters,CN=admin", (), "CN=admin,O=system:masters", ""),  # in another order (cfssl's): the same
        ("CN=admin,O=system:masters,O=x", (), "CN=admin,O=system:masters", "the spec renews only"),  # one more
        ("CN=admin,O=system:masters", (), None, "renewed only when the spec pins its subject"),  # copied from anywhere
        ("CN=admin,O=system:masters", (), "CN=kube-proxy", "the spec renews only CN=kube-proxy"),
        ("CN=kubernetes", ("master-1",), None, ""),  # a host's certificate: its names tie it to the host
        ("CN=kubernetes", ("master-1",), "CN=other", "the spec renews only CN=other"),
    ],
)
def test_a_client_certificate_is_renewed_only_for_the_subject_the_spec_pins(
    subject: str, dns: tuple[str, ...], pinned: str | None, said: str
) -> None:
    """A certificate is no secret: a master that copied the admin's (system:masters) must not get a new key for it."""
    from reconciler.certs.authority import subject_problem

    problem = subject_problem(Template(x509.Name.from_rfc4514_string(subject), dns, (), False, True), pinned)
    assert (said in problem) if said else problem == ""
