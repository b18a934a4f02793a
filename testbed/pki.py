"""The testbed's PKI, made with the openssl CLI.

Owns one CA (ca.pem, ca-key.pem), one certificate for servers and clients alike (kubernetes.pem,
kubernetes-key.pem; serverAuth + clientAuth, SANs for loopback, every host's address and name) and the admin
client certificate (admin.pem, admin-key.pem; O=system:masters), as the seed's cfssl step makes them, and their installation into a host root at /etc/kubernetes/ssl.
Called by Testbed.start() once per testbed, before the hosts boot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from testbed.layout import VIP
from testbed.system import run

SSL_DIR = Path("etc/kubernetes/ssl")
DAYS = "3650"
CERTS = ("ca.pem", "kubernetes.pem", "admin.pem")
KEYS = ("ca-key.pem", "kubernetes-key.pem", "admin-key.pem")

_CA_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = reconciler-testbed-ca
O = reconciler-testbed
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
"""

_LEAF_EXT = """\
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {sans}
"""

# the seed's admin.pem: a client of the apiserver in the system:masters group (kubectl, and here the controller-manager
# and scheduler's kubeconfig)
_CLIENT_EXT = """\
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def subject_alt_names(names: list[str], addresses: list[str]) -> list[str]:
    """SAN entries of the kubernetes certificate: as the seed's kubernetes-csr.json, every master and the virtual IP
    in front of them (a client of the HA front checks the apiserver's certificate against the VIP)."""
    return (
        ["DNS:localhost", "DNS:kubernetes"]
        + [f"DNS:{n}" for n in names]
        + ["IP:127.0.0.1"]
        + [f"IP:{a}" for a in addresses]
        + [f"IP:{VIP}"]
    )


def generate(pki_dir: Path, names: list[str], addresses: list[str]) -> Path:
    """Create a fresh CA and kubernetes certificate in `pki_dir` (replacing any old ones); return it."""
    shutil.rmtree(pki_dir, ignore_errors=True)
    pki_dir.mkdir(parents=True, mode=0o700)
    ca_cnf = pki_dir / "ca.cnf"
    ca_cnf.write_text(_CA_CONFIG)
    ext = pki_dir / "kubernetes.ext"
    ext.write_text(_LEAF_EXT.format(sans=", ".join(subject_alt_names(names, addresses))))
    rsa = ["-newkey", "rsa:2048", "-nodes"]
    run(
        [
            "openssl",
            "req",
            "-x509",
            *rsa,
            "-config",
            str(ca_cnf),
            "-extensions",
            "v3_ca",
            "-days",
            DAYS,
            "-keyout",
            str(pki_dir / "ca-key.pem"),
            "-out",
            str(pki_dir / "ca.pem"),
        ]
    )
    _leaf(pki_dir, "kubernetes", "/O=k8s/CN=kubernetes", ext)
    client = pki_dir / "admin.ext"
    client.write_text(_CLIENT_EXT)
    _leaf(pki_dir, "admin", "/O=system:masters/CN=admin", client)
    for path in (ca_cnf, ext, client):
        path.unlink()
    for name in KEYS:
        (pki_dir / name).chmod(0o600)
    for name in CERTS:
        (pki_dir / name).chmod(0o644)
    return pki_dir


def _leaf(pki_dir: Path, name: str, subject: str, ext: Path) -> None:
    """<name>.pem and <name>-key.pem, signed by the CA with the v3_leaf extensions of `ext`."""
    csr = pki_dir / f"{name}.csr"
    run(
        ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", subject]
        + ["-keyout", str(pki_dir / f"{name}-key.pem"), "-out", str(csr)]
    )
    run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(pki_dir / "ca.pem"),
            "-CAkey",
            str(pki_dir / "ca-key.pem"),
        ]
        + ["-set_serial", "0x" + os.urandom(12).hex(), "-days", DAYS, "-extfile", str(ext), "-extensions", "v3_leaf"]
        + ["-out", str(pki_dir / f"{name}.pem")]
    )
    csr.unlink()


def install(pki_dir: Path, root: Path) -> None:
    """Copy the PKI into a host root at /etc/kubernetes/ssl (dirs 0755, keys 0600, certs 0644)."""
    ssl_dir = root / SSL_DIR
    ssl_dir.mkdir(parents=True, exist_ok=True)
    for directory in (ssl_dir.parent, ssl_dir):
        directory.chmod(0o755)
    for name, mode in [(n, 0o644) for n in CERTS] + [(n, 0o600) for n in KEYS]:
        target = ssl_dir / name
        shutil.copyfile(pki_dir / name, target)
        target.chmod(mode)
        os.chown(target, 0, 0)
