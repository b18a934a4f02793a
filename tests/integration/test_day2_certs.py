"""`reconciler certs check|renew` on the testbed: kubernetes.pem (etcd's server and peer certificate, the apiserver's
serving and etcd client certificate) renewed on all three masters from the testbed's CA, one host at a time, while a
client writes through every etcd endpoint and a read that needs the quorum is sampled: no write fails, no moment
without quorum; each master ends with a certificate of its own (a new key made there, a new serial) that etcd and
the apiserver present on the wire, with the names and subject it had; every component healthy. The testbed's
original pair is put back at the end."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from reconciler.certs.authority import load
from testbed import Testbed
from tests.support.cli import reconciler
from tests.support.daemon import RunningDaemon, wait_for
from tests.support.serving import Quorum
from tests.support.tuning import Writer, etcdctl

pytestmark = pytest.mark.testbed

SSL = "/etc/kubernetes/ssl"


def managed_specs(spec_copy: Path, pki: Path, renew_at: float = 2 / 3) -> Path:
    (spec_copy / "certificates.yaml").write_text(f"""\
apiVersion: reconciler/v1
kind: Certificate
metadata: {{name: kubernetes-ssl}}
spec:
  hosts: {{matchLabels: {{role: master}}}}
  paths: [{SSL}/ca.pem, {SSL}/admin.pem]
---
apiVersion: reconciler/v1
kind: Certificate
metadata: {{name: kubernetes}}
spec:
  hosts: {{matchLabels: {{role: master}}}}
  paths: [{SSL}/kubernetes.pem]
  renew:
    keyFile: {SSL}/kubernetes-key.pem
    caFile: {pki}/ca.pem
    caKeyFile: {pki}/ca-key.pem
    lifetimeDays: 30
    renewAt: {renew_at}
    restart: [etcd, kube-apiserver]
""")
    return spec_copy


def kubernetes_pem(specs: Path) -> dict[str, dict[str, object]]:
    checked = reconciler("certs", "check", str(specs), "--json")
    rows = json.loads(checked.out)
    return {r["host"]: r for r in rows if r["path"].endswith("/kubernetes.pem")}


def test_kubernetes_pem_is_renewed_on_every_master_with_no_write_failed(converged: Testbed, spec_copy: Path) -> None:
    bed = converged
    specs = managed_specs(spec_copy, bed.pki_dir)
    before = kubernetes_pem(specs)
    assert set(before) == {"master-1", "master-2", "master-3"} and all(r["managed"] for r in before.values())
    keys_before = {h.name: (h.root / f"{SSL.lstrip('/')}/kubernetes-key.pem").read_bytes() for h in bed.hosts}

    writer, quorum = Writer(bed), Quorum(bed, bed.hosts)
    writer.start()
    quorum.start()
    began = time.monotonic()
    try:
        renewed = reconciler("certs", "renew", str(specs))
    finally:
        seconds = time.monotonic() - began
        writer.stop()
        quorum.stop()
    said = renewed.out + renewed.err
    assert renewed.code == 0, said
    assert said.count("etcd.service at") == 3 and said.count("kube-apiserver.service at") == 3, said
    assert said.count("presents the new certificate") == 6, said

    after = kubernetes_pem(specs)
    serials = {r["serial"] for r in after.values()}
    assert len(serials) == 3 and not serials & {r["serial"] for r in before.values()}  # one of its own each
    for name, row in after.items():
        assert row["subject"] == before[name]["subject"] and row["issuer"] == before[name]["issuer"]
        assert 29 < float(row["days_left"]) <= 30  # type: ignore[arg-type]
    for h in bed.hosts:  # a new key, made there
        assert (h.root / f"{SSL.lstrip('/')}/kubernetes-key.pem").read_bytes() != keys_before[h.name]
    assert writer.failed == 0 and len(writer.acked) >= 20, (writer.failed, len(writer.acked), writer.errors)
    stored = set(etcdctl(bed, "get", "--prefix", "--keys-only", "/tuning-test/").stdout.split())
    assert set(writer.acked) <= stored
    assert quorum.samples >= 10 and quorum.without == 0, (quorum.samples, quorum.without)
    assert reconciler("check", str(specs)).code == 0
    print(
        f"kubernetes.pem renewed on 3 masters in {seconds:.1f} s: {len(writer.acked)} writes acknowledged, 0 failed; "
        f"{quorum.samples} quorum samples, 0 without"
    )

    put_back(bed, specs)


def put_back(bed: Testbed, specs: Path) -> None:
    """The testbed's own pair on every master again, one member at a time."""
    for h in bed.hosts:
        for name in ("kubernetes.pem", "kubernetes-key.pem"):
            (h.root / f"{SSL.lstrip('/')}/{name}").write_bytes((bed.pki_dir / name).read_bytes())
        h.ssh("systemctl restart etcd kube-apiserver")
        wait_for(
            f"{h.name}'s etcd on the testbed's pair",
            lambda h=h: etcdctl(bed, "endpoint", "health", endpoints=[h]).returncode == 0,  # type: ignore[misc]
        )
    assert reconciler("check", str(specs)).code == 0


def expiring_in(bed: Testbed, minutes: int) -> None:
    """kubernetes.pem on every master made to expire in `minutes` (backdated 5 minutes), with the testbed CA's names
    and a key of its own, as an operator's short-lived certificate would be; etcd and the apiserver restarted on it."""
    ca = load(bed.pki_dir / "ca.pem", bed.pki_dir / "ca-key.pem")
    current = x509.load_pem_x509_certificate((bed.pki_dir / "kubernetes.pem").read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    for h in bed.hosts:
        key = rsa.generate_private_key(65537, 2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(current.subject)
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(minutes=minutes))
            .add_extension(current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, False)
            .add_extension(current.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value, False)
            .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
        )
        ssl = h.root / SSL.lstrip("/")
        (ssl / "kubernetes-key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (ssl / "kubernetes.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        h.ssh("systemctl restart etcd kube-apiserver")
        wait_for(
            f"{h.name}'s etcd on its short-lived pair",
            lambda h=h: etcdctl(bed, "endpoint", "health", endpoints=[h]).returncode == 0,  # type: ignore[misc]
        )


def test_a_certificate_about_to_expire_is_renewed_by_the_daemon_with_no_person_involved(
    converged: Testbed, spec_copy: Path, run_daemon: Callable[..., RunningDaemon]
) -> None:
    """kubernetes.pem expiring in 10 minutes on every master (a third of its life gone); the daemon, told to renew
    at 34% of a certificate's lifetime, renews each before it expires, on its own, for the spec's 30 days."""
    bed = converged
    specs = managed_specs(spec_copy, bed.pki_dir, renew_at=0.34)
    expiring_in(bed, 10)
    expiring = kubernetes_pem(specs)
    assert all(float(r["days_left"]) * 1440 < 10.1 for r in expiring.values())  # type: ignore[arg-type]

    daemon = run_daemon(specs, "--resync", "600")

    def all_renewed() -> bool:
        entries = daemon.status()["certificate_renewals"]["certificates"]
        return len(entries) == 3 and all(e["serial"] != expiring[e["host"]]["serial"] for e in entries)

    wait_for("the daemon to renew every master's certificate", all_renewed, daemon=daemon, timeout=300)
    renewed = kubernetes_pem(specs)
    for name, row in renewed.items():
        assert row["serial"] != expiring[name]["serial"] and 29 < float(row["days_left"]) <= 30  # type: ignore[arg-type]
    assert time.time() < min(float(r["not_after"]) for r in expiring.values())  # type: ignore[arg-type]  # in time
    assert daemon.sample("reconciler_certificate_renewals", "_total", result="ok") == 3  # once each: no loop
    assert daemon.sample("reconciler_certificate_renewals", "_total", result="failed") == 0
    daemon.stop()
    put_back(bed, specs)
