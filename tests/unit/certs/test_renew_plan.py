"""What the specs say of a renewed certificate (Certificate.spec.renew) and which are due: one path per renewed
Certificate, `restart` naming the host's Units (said at its line), a path renewed in two documents refused;
`managed` selects by host and document; a certificate is due once `renewAt` of its lifetime is gone."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler.engine.cert_renewal import due_at, managed
from reconciler.errors import SpecError
from reconciler.spec.desired import DesiredRenewal
from reconciler.spec.isolate import load_desired
from tests.support.pki import name
from tests.support.specs import copy_specs

RENEW = """\
  renew:
    keyFile: /etc/kubernetes/ssl/kubernetes-key.pem
    caFile: /etc/reconciler/ca.pem
    caKeyFile: /etc/reconciler/ca-key.pem
    restart: [{restart}]
"""


def specs_with(tmp_path: Path, paths: str, restart: str = "etcd, kube-apiserver", extra: str = "") -> Path:
    specs = copy_specs(tmp_path / "specs", ha=False)
    (specs / "certificates.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Certificate\nmetadata: {name: kubernetes}\nspec:\n"
        f"  hosts: {{matchLabels: {{role: master}}}}\n  paths: [{paths}]\n" + RENEW.format(restart=restart) + extra
    )
    return specs


def test_a_renewed_certificate_is_read_with_its_units_in_order(tmp_path: Path) -> None:
    desired = load_desired(specs_with(tmp_path, "/etc/kubernetes/ssl/kubernetes.pem"))
    found = managed(desired)
    assert [(h.name, c.path) for h, c in found] == [
        (f"master-{i}", "/etc/kubernetes/ssl/kubernetes.pem") for i in (1, 2, 3)
    ]
    assert found[0][1].renew is not None and found[0][1].renew.restart == ("etcd.service", "kube-apiserver.service")
    assert found[0][1].renew.renew_at == pytest.approx(2 / 3) and found[0][1].renew.lifetime_days == 365
    assert [h.name for h, _ in managed(desired, only_host="master-2")] == ["master-2"]
    assert managed(desired, names={"other"}) == []


def test_the_pinned_subject_and_embedding_kubeconfigs_are_read(tmp_path: Path) -> None:
    extra = '    subject: "CN=kubernetes,O=k8s"\n    kubeconfigs: [/etc/kubernetes/admin.conf]\n'
    renew = managed(load_desired(specs_with(tmp_path, "/etc/kubernetes/ssl/kubernetes.pem", extra=extra)))[0][1].renew
    assert renew is not None and renew.subject == "CN=kubernetes,O=k8s"
    assert renew.kubeconfigs == ("/etc/kubernetes/admin.conf",)


@pytest.mark.parametrize(
    ("paths", "restart", "extra", "said"),
    [
        ("/a.pem, /b.pem", "etcd", "", "names one path"),
        ("/etc/kubernetes/ssl/kubernetes.pem", "etcd, kube-nothing", "", "'kube-nothing' is not a Unit of this host"),
        ("/etc/kubernetes/ssl/kubernetes.pem", "etcd", "    renewAt: 0.95\n", "less than or equal to 0.9"),
        ("/etc/kubernetes/ssl/kubernetes.pem", "etcd", "    lifetimeDays: 0.01\n", "greater than or equal to 1"),
        ("/etc/other/kubernetes.pem", "etcd", "", "own key file beside it"),
        ("/etc/kubernetes/ssl/kubernetes.pem", "etcd", "    subject: not a name\n", "not an RFC 4514 name"),
        ("/etc/kubernetes/ssl/kubernetes.pem", "etcd", "    signCommand: [/usr/bin/sign]\n", "one of the two"),
        (
            "/etc/kubernetes/ssl/kubernetes.pem",
            "etcd",
            "---\napiVersion: reconciler/v1\nkind: Certificate\nmetadata: {name: again}\n"
            "spec: {paths: [/etc/kubernetes/ssl/kubernetes.pem], renew: {keyFile: /etc/kubernetes/ssl/k.pem, "
            "caFile: /c.pem, caKeyFile: /ck.pem}}\n",
            "is also renewed by Certificate/kubernetes",
        ),
    ],
)
def test_a_renewal_the_specs_cannot_mean_is_refused(
    tmp_path: Path, paths: str, restart: str, extra: str, said: str
) -> None:
    with pytest.raises(SpecError) as failed:
        load_desired(specs_with(tmp_path, paths, restart, extra))
    assert said in str(failed.value)


def test_an_external_signer_takes_the_place_of_the_ca_key(tmp_path: Path) -> None:
    specs = specs_with(tmp_path, "/etc/kubernetes/ssl/kubernetes.pem")
    text = (specs / "certificates.yaml").read_text()
    signer = "    signCommand: [/usr/local/bin/cfssl-sign, -profile, kubernetes]\n"
    (specs / "certificates.yaml").write_text(text.replace("    caKeyFile: /etc/reconciler/ca-key.pem\n", signer))
    renew = managed(load_desired(specs))[0][1].renew
    assert renew is not None and renew.sign_command == ("/usr/local/bin/cfssl-sign", "-profile", "kubernetes")
    assert renew.ca_key_file == "" and renew.ca_file == "/etc/reconciler/ca.pem"
    for program, said in (("cfssl-sign", "must be absolute"), ("/usr/bin/../sign", "not normalised")):
        (specs / "certificates.yaml").write_text(text.replace("caKeyFile: /etc/reconciler/ca-key.pem", f"signCommand: [{program}]"))  # fmt: skip
        with pytest.raises(SpecError) as failed:
            load_desired(specs)
        assert said in str(failed.value) and "certificates.yaml" in str(failed.value)
    (specs / "certificates.yaml").write_text(text.replace("    caKeyFile: /etc/reconciler/ca-key.pem\n", ""))
    with pytest.raises(SpecError, match="one of the two"):
        load_desired(specs)


def test_due_once_its_share_of_the_lifetime_is_gone() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("x"))
        .issuer_name(name("x"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=300))
        .sign(key, hashes.SHA256())
    )
    renewal = DesiredRenewal("/k", "/c", "/ck", 300, 2 / 3, "rsa-2048", ())
    assert due_at(cert, renewal) == pytest.approx((start + datetime.timedelta(days=200)).timestamp())


def test_a_certificate_reported_by_one_document_and_renewed_by_another_is_renewed(tmp_path: Path) -> None:
    """The bundled kubernetes-ssl document reports kubernetes.pem; a renewing document beside it takes its place."""
    specs = copy_specs(tmp_path / "specs", ha=False)
    (specs / "renew.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Certificate\nmetadata: {name: kubernetes}\nspec:\n"
        "  hosts: {matchLabels: {role: master}}\n  paths: [/etc/kubernetes/ssl/kubernetes.pem]\n"
        + RENEW.format(restart="etcd")
    )
    desired = load_desired(specs)
    assert [c.source for _, c in managed(desired)] == ["Certificate/kubernetes"] * 3
    assert {c.path for c in desired.hosts["master-1"].certificates} >= {"/etc/kubernetes/ssl/ca.pem"}
