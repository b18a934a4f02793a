"""The CA rotated on the testbed (`reconciler certs rotate-ca`), as the rotation tests drive it: a new CA beside the
testbed's, the clients outside (the testbed's pki directory, etcdctl's) given both CAs first, and at the end the
testbed's own CA and pairs back on every master, one master at a time (the testbed is shared by the tests after)."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from reconciler.certs.authority import load
from testbed import Testbed
from tests.support.certs import SSL
from tests.support.daemon import wait_for
from tests.support.pki import ca_files
from tests.support.tuning import etcdctl

CA_FILES = ("ca.pem", "kubernetes.pem", "kubernetes-key.pem", "admin.pem", "admin-key.pem")
KUBE = "etcd kube-apiserver kube-controller-manager kube-scheduler"


@dataclass(frozen=True)
class Rotation:
    args: list[str]  # --new-ca, --new-ca-key, --old-ca: what every rotate-ca phase is given
    new_ca: Path
    new_key: Path


def resigned(cert_file: Path, ca_cert: Path, ca_key: Path) -> bytes:
    """The same certificate (subject, names, usages, key) issued again by another CA: a client's new certificate."""
    ca = load(ca_cert, ca_key)
    current = x509.load_pem_x509_certificate(cert_file.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(current.subject)
        .issuer_name(ca.cert.subject)
        .public_key(current.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for ext in current.extensions:
        if isinstance(ext.value, x509.SubjectAlternativeName | x509.ExtendedKeyUsage | x509.BasicConstraints):
            builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def replace_file(path: Path, data: bytes) -> None:
    """Atomically, as a client must never read half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(path.stat().st_mode & 0o777)
    tmp.rename(path)


def rolled(bed: Testbed, files: dict[str, dict[str, bytes]]) -> None:
    """Files written on each master, then its components restarted, one master at a time (etcd waited for)."""
    for h in bed.hosts:
        for name, data in files[h.name].items():
            (h.root / f"{SSL.lstrip('/')}/{name}").write_bytes(data)
        h.ssh(f"systemctl restart {KUBE}")
        wait_for(
            f"{h.name}'s etcd back",
            lambda h=h: etcdctl(bed, "endpoint", "health", endpoints=[h]).returncode == 0,  # type: ignore[misc]
        )


def rejections(bed: Testbed, since: float) -> dict[str, str]:
    """Per master, what its etcd logged since `since` of a certificate it refused ("" for none): not the serial
    checks' handshakes, which offer none (refused, as they must be), nor a client that closed before its handshake
    ended ("EOF": etcdctl dials every endpoint, uses one)."""
    log = f"journalctl -u etcd --since @{int(since)} --no-pager | grep 'rejected connection' | grep -Ei 'x509|cert'"
    return {h.name: h.ssh(f'{log} | grep -v "didn\'t provide a certificate" || true').stdout.strip() for h in bed.hosts}


@contextlib.contextmanager
def rotation(bed: Testbed, where: Path) -> Iterator[Rotation]:
    """A new CA made under `where`; the pki directory's ca.pem holds both CAs for the block; afterwards the
    testbed's own CA and pairs are put back: both CAs trusted, the old pairs, then the old CA alone."""
    pki = bed.pki_dir
    new_ca, new_key = ca_files(where / "new-ca")
    old_ca = where / "old-ca.pem"
    old_ca.write_bytes((pki / "ca.pem").read_bytes())
    originals = {h.name: {n: (h.root / f"{SSL.lstrip('/')}/{n}").read_bytes() for n in CA_FILES} for h in bed.hosts}
    local = {n: (pki / n).read_bytes() for n in ("ca.pem", "kubernetes.pem")}
    both = local["ca.pem"] + new_ca.read_bytes()
    try:
        replace_file(pki / "ca.pem", both)  # the clients outside trust both CAs first
        yield Rotation(
            ["--new-ca", str(new_ca), "--new-ca-key", str(new_key), "--old-ca", str(old_ca)], new_ca, new_key
        )
    finally:
        rolled(bed, {h.name: {"ca.pem": both} for h in bed.hosts})
        replace_file(pki / "kubernetes.pem", local["kubernetes.pem"])
        rolled(bed, {h: {n: originals[h][n] for n in CA_FILES if n != "ca.pem"} for h in originals})
        rolled(bed, {h: {"ca.pem": originals[h]["ca.pem"]} for h in originals})
        replace_file(pki / "ca.pem", local["ca.pem"])
