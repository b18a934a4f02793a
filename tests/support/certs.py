"""The testbed's certificates as the certificate tests manage them: specs that renew kubernetes.pem from the testbed's
CA, and the testbed's own pair put back on every master afterwards (the testbed is shared by the tests after)."""

from __future__ import annotations

from pathlib import Path

from testbed import Testbed
from tests.support.cli import reconciler
from tests.support.daemon import wait_for
from tests.support.tuning import etcdctl

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


def admin_specs(spec_copy: Path, pki: Path, kubeconfigs: str = "") -> Path:
    """kubernetes.pem managed (managed_specs), and the admin's certificate (its subject pinned), restarting the
    controller-manager and the scheduler, with `kubeconfigs` that embed it."""
    specs = managed_specs(spec_copy, pki)
    with (specs / "certificates.yaml").open("a") as f:
        f.write(f"""---
apiVersion: reconciler/v1
kind: Certificate
metadata: {{name: admin}}
spec:
  hosts: {{matchLabels: {{role: master}}}}
  paths: [{SSL}/admin.pem]
  renew: {{keyFile: {SSL}/admin-key.pem, caFile: {pki}/ca.pem, caKeyFile: {pki}/ca-key.pem, lifetimeDays: 30,
          subject: "CN=admin,O=system:masters", restart: [kube-controller-manager, kube-scheduler],
          kubeconfigs: [{kubeconfigs}]}}
""")
    return specs


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
