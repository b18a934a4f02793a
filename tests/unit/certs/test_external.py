"""certs.external, pure: what an external signer is asked (the template in RECONCILER_* variables, cfssl's subject
file among them) and what of its answer is installed: only a leaf the spec's CA signed for the master's key, with
the template's subject (in any order) and exactly its names and usages, valid now, within the lifetime asked.
Everything else a signer could hand back (another CA's, another key's, a CA certificate, a name more or less, a
usage less, ten years) is refused, saying why."""

from __future__ import annotations

import datetime
import ipaddress
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reconciler.certs.authority import Authority, CertError, Template, load, requested_key
from reconciler.certs.external import accept, certificate_of, environment
from tests.support.pki import NOW, ca_files, csr

SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "k8s"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "System"),
        x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes"),
    ]
)
TEMPLATE = Template(SUBJECT, ("kubernetes", "master-1"), ("198.18.0.11",), server=True, client=True)
YEAR = datetime.timedelta(days=365)
Edit = Callable[[x509.CertificateBuilder], x509.CertificateBuilder]


def signed(ca: Authority, public: object, edit: Edit | None = None, **kw: object) -> x509.Certificate:
    """What a signer could answer: by default exactly what reconciler's CA would issue."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(kw.get("subject", SUBJECT))  # type: ignore[arg-type]
        .issuer_name(ca.cert.subject)
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(kw.get("start", NOW - datetime.timedelta(minutes=5)))  # type: ignore[arg-type]
        .not_valid_after(kw.get("end", NOW + YEAR))  # type: ignore[arg-type]
    )
    if kw.get("constraints", True):
        builder = builder.add_extension(x509.BasicConstraints(ca=bool(kw.get("is_ca", False)), path_length=None), critical=True)  # fmt: skip
    usages = kw.get("usages", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)  # type: ignore[arg-type]
    names = kw.get("names", [x509.DNSName("kubernetes"), x509.DNSName("master-1"), x509.IPAddress(ipaddress.ip_address("198.18.0.11"))])  # fmt: skip
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)  # type: ignore[arg-type]
    if edit:
        builder = edit(builder)
    return builder.sign(ca.key, kw.get("hash", hashes.SHA256()))  # type: ignore[arg-type]


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return load(*ca_files(tmp_path))


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_what_reconcilers_own_ca_would_issue_is_accepted_whatever_the_order_of_its_subject(
    ca: Authority, key: ec.EllipticCurvePrivateKey
) -> None:
    public = requested_key(csr(key=key))
    assert accept(signed(ca, public), ca.cert, public, TEMPLATE, YEAR, NOW).subject == SUBJECT
    # cfssl writes a subject in its own order (C, O, OU, ..., CN): the same attributes are the same subject
    reordered = x509.Name(sorted(SUBJECT, key=lambda a: a.oid.dotted_string))
    assert accept(signed(ca, public, subject=reordered), ca.cert, public, TEMPLATE, YEAR, NOW)
    # a signer that rounds the lifetime up to whole days, or gives less than asked
    assert accept(signed(ca, public, end=NOW + YEAR + datetime.timedelta(hours=20)), ca.cert, public, TEMPLATE, YEAR, NOW)  # fmt: skip
    assert accept(signed(ca, public, end=NOW + datetime.timedelta(days=30)), ca.cert, public, TEMPLATE, YEAR, NOW)


def _another_ca(tmp_path: Path) -> Authority:
    return load(*ca_files(tmp_path / "another"))


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("another CA", "not signed by the CA CN=test-ca"),
        ("another key", "for another key than the one the master made"),
        ("a CA certificate", "issued a CA certificate"),
        ("keyCertSign", "may sign certificates"),
        ("another subject", "says CN=master-2"),
        ("a subject attribute more", "says O=system:masters,CN=kubernetes"),
        ("a name more", "adds master-2"),
        ("a name less", "lacks 198.18.0.11"),
        ("an email name", "adds 1 name(s) of another kind"),
        ("no client usage", "is for server, not exactly client, server"),
        ("a usage more", "is for 1.3.6.1.5.5.7.3.3, client, server, not exactly"),
        ("no usage said", "is for none, not exactly"),
        ("no basicConstraints", "does not say it is no CA"),
        ("cRLSign", "may sign certificates or CRLs"),
        ("an unknown critical extension", "critical extension reconciler does not know (1.2.3.4)"),
        ("past the CA", "ends after its CA"),
        ("ten years", "past the 365-day lifetime"),
        ("starts tomorrow", "later than now"),
        ("ends within the hour", "within an hour"),
    ],
)
def test_anything_else_a_signer_answers_is_refused_saying_why(
    tmp_path: Path, ca: Authority, key: ec.EllipticCurvePrivateKey, answer: str, said: str
) -> None:
    public = requested_key(csr(key=key))
    extra_name = [x509.DNSName("kubernetes"), x509.DNSName("master-1"), x509.DNSName("master-2"), x509.IPAddress(ipaddress.ip_address("198.18.0.11"))]  # fmt: skip
    key_usage = x509.KeyUsage(True, False, False, False, False, True, False, False, False)  # keyCertSign
    crl_usage = x509.KeyUsage(True, False, False, False, False, False, True, False, False)  # cRLSign
    cert = {
        "another CA": lambda: signed(_another_ca(tmp_path), public),
        "another key": lambda: signed(ca, ec.generate_private_key(ec.SECP256R1()).public_key()),
        "a CA certificate": lambda: signed(ca, public, is_ca=True),
        "keyCertSign": lambda: signed(ca, public, edit=lambda b: b.add_extension(key_usage, critical=True)),
        "another subject": lambda: signed(
            ca, public, subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "master-2")])
        ),  # fmt: skip
        "a subject attribute more": lambda: signed(
            ca, public, subject=x509.Name([*SUBJECT, x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters")])
        ),
        "a name more": lambda: signed(ca, public, names=extra_name),
        "a name less": lambda: signed(ca, public, names=[x509.DNSName("kubernetes"), x509.DNSName("master-1")]),
        "an email name": lambda: signed(ca, public, names=[*extra_name[:2], extra_name[3], x509.RFC822Name("a@b.c")]),
        "no client usage": lambda: signed(ca, public, usages=[ExtendedKeyUsageOID.SERVER_AUTH]),
        "a usage more": lambda: signed(
            ca,
            public,
            usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.CODE_SIGNING],
        ),  # fmt: skip
        "no usage said": lambda: signed(ca, public, usages=None),
        "no basicConstraints": lambda: signed(ca, public, constraints=False),
        "cRLSign": lambda: signed(ca, public, edit=lambda b: b.add_extension(crl_usage, critical=True)),
        "an unknown critical extension": lambda: signed(
            ca,
            public,
            edit=lambda b: b.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"), critical=True
            ),  # fmt: skip
        ),
        "past the CA": lambda: signed(ca, public, end=ca.cert.not_valid_after_utc + datetime.timedelta(days=1)),
        "ten years": lambda: signed(ca, public, end=NOW + datetime.timedelta(days=3650)),
        "starts tomorrow": lambda: signed(ca, public, start=NOW + datetime.timedelta(days=1)),
        "ends within the hour": lambda: signed(ca, public, end=NOW + datetime.timedelta(minutes=30)),
    }[answer]()
    with pytest.raises(CertError) as refused:
        accept(cert, ca.cert, public, TEMPLATE, YEAR, NOW)
    assert said in str(refused.value)


def test_the_answers_first_certificate_is_read_and_anything_else_refused(ca: Authority) -> None:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = signed(ca, public).public_bytes(serialization.Encoding.PEM)
    chain = b"2026/12/07 [INFO] signed certificate\n" + pem + ca.cert.public_bytes(serialization.Encoding.PEM)
    assert certificate_of(chain).public_key() == public
    with pytest.raises(CertError, match="holds no PEM certificate"):
        certificate_of(b'{"cert": "..."}')
    with pytest.raises(CertError, match="not a certificate"):
        certificate_of(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")


def test_the_signer_is_told_the_templates_subject_names_usages_and_lifetime() -> None:
    env = environment(TEMPLATE, YEAR, "master-1", "/etc/kubernetes/ssl/kubernetes.pem")
    assert env["RECONCILER_SUBJECT"] == "CN=kubernetes,OU=System,O=k8s,C=CN"
    assert json.loads(env["RECONCILER_SUBJECT_JSON"]) == {
        "CN": "kubernetes",
        "names": [{"C": "CN"}, {"O": "k8s"}, {"OU": "System"}],
    }
    assert env["RECONCILER_SANS"] == "kubernetes,master-1,198.18.0.11"
    assert (env["RECONCILER_DNS_NAMES"], env["RECONCILER_IP_ADDRESSES"]) == ("kubernetes,master-1", "198.18.0.11")
    assert env["RECONCILER_USAGES"] == "server,client" and env["RECONCILER_LIFETIME_HOURS"] == "8760"
    assert env["RECONCILER_HOST"] == "master-1"
    client = Template(SUBJECT, (), (), server=False, client=True)
    assert environment(client, YEAR, "m", "/p")["RECONCILER_SANS"] == ""
    # a name no command line should carry (a comma would split it in two for cfssl's -hostname)
    with pytest.raises(CertError, match="cannot be given"):
        environment(Template(SUBJECT, ("a,b",), (), True, True), YEAR, "m", "/p")
