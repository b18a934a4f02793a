"""The testbed itself: hosts boot, answer ssh with strict host keys, carry the PKI and stand-ins,
power-cycle, and leave nothing behind (mounts, processes, bridge) after stop().

Uses the session's testbed (conftest.py); runs after test_converge.py, and its last test stops the
testbed, checks that nothing is left, and boots it again for whatever runs next."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testbed import BRIDGE, Testbed

pytestmark = pytest.mark.testbed


def test_hosts_answer_ssh_with_strict_host_key_checking(testbed: Testbed) -> None:
    known = testbed.known_hosts_path.read_text().splitlines()
    assert [line.split()[:2] for line in known] == [[h.address, "ssh-ed25519"] for h in testbed.hosts]
    for host in testbed.hosts:
        args = host.ssh_args()
        assert "StrictHostKeyChecking=yes" in args and f"UserKnownHostsFile={testbed.known_hosts_path}" in args
        assert host.ssh("hostname").stdout.strip() == host.name
        assert host.ssh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded")


def test_wrong_host_key_is_refused(testbed: Testbed, tmp_path: Path) -> None:
    first, second = testbed.hosts[:2]
    swapped = tmp_path / "known_hosts"
    key_of_second = testbed.known_hosts_path.read_text().splitlines()[1].split(None, 1)[1]
    swapped.write_text(f"{first.address} {key_of_second}\n")
    args = [a if not a.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={swapped}" for a in first.ssh_args()]
    proc = subprocess.run([*args, "true"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 255


def test_pki_installed_and_verifies(testbed: Testbed) -> None:
    for host in testbed.hosts:
        out = host.ssh("cd /etc/kubernetes/ssl && openssl verify -CAfile ca.pem kubernetes.pem admin.pem").stdout
        assert "kubernetes.pem: OK" in out and "admin.pem: OK" in out
        subject = host.ssh("openssl x509 -noout -subject -in /etc/kubernetes/ssl/admin.pem").stdout
        assert subject.strip() == "subject=O = system:masters, CN = admin"  # the seed's admin: cluster admin
        modes = host.ssh("stat -c '%n %a' /etc/kubernetes/ssl /etc/kubernetes/ssl/*.pem").stdout.split("\n")
        assert sorted(filter(None, modes)) == sorted(
            [
                "/etc/kubernetes/ssl 755",
                "/etc/kubernetes/ssl/admin-key.pem 600",
                "/etc/kubernetes/ssl/admin.pem 644",
                "/etc/kubernetes/ssl/ca-key.pem 600",
                "/etc/kubernetes/ssl/ca.pem 644",
                "/etc/kubernetes/ssl/kubernetes-key.pem 600",
                "/etc/kubernetes/ssl/kubernetes.pem 644",
            ]
        )
        sans = host.ssh("openssl x509 -in /etc/kubernetes/ssl/kubernetes.pem -noout -ext subjectAltName").stdout
        assert f"IP Address:{host.address}" in sans and f"DNS:{host.name}" in sans
    assert (testbed.pki_dir / "ca.pem").exists()


def test_standin_runs_under_systemd(testbed: Testbed) -> None:
    host = testbed.hosts[0]
    host.ssh(
        "systemd-run --unit=t-sched -p Type=notify /usr/local/bin/kube-scheduler --logtostderr=true "
        "--v=0 --master=http://127.0.0.1:8080 --leader-elect=true --address=127.0.0.1 --port=20251"
    )
    try:
        assert host.ssh("curl -sf http://127.0.0.1:20251/healthz").stdout == "ok"
        assert host.ssh("systemctl is-active t-sched").stdout.strip() == "active"
    finally:
        host.ssh("systemctl stop t-sched")
    assert host.ssh("systemctl is-active t-sched", check=False).stdout.strip() in ("inactive", "unknown")


def test_apiserver_standin_unhealthy_without_etcd(testbed: Testbed) -> None:
    host = testbed.hosts[1]
    ssl = "/etc/kubernetes/ssl"
    host.ssh(
        f"systemd-run --unit=t-api -p Type=notify /usr/local/bin/kube-apiserver --logtostderr=true "
        f"--etcd-servers=https://127.0.0.1:1 --insecure-bind-address={host.address} --insecure-port=28080 "
        f"--experimental-bootstrap-token-auth --etcd-cafile={ssl}/ca.pem "
        f"--etcd-certfile={ssl}/kubernetes.pem --etcd-keyfile={ssl}/kubernetes-key.pem"
    )
    try:
        out = host.ssh(f"curl -s -o /dev/null -w '%{{http_code}}' http://{host.address}:28080/healthz").stdout
        assert out == "500"
    finally:
        host.ssh("systemctl stop t-api")


ETCD_HEALTH = (
    "curl -sf -o /dev/null --cacert /etc/kubernetes/ssl/ca.pem --cert /etc/kubernetes/ssl/kubernetes.pem"
    " --key /etc/kubernetes/ssl/kubernetes-key.pem https://{address}:2379/health"
)


def test_apiserver_standin_follows_its_etcd_over_kept_connections(converged: Testbed) -> None:
    """The stand-in keeps its etcd connection (as a real apiserver does): a member stopped after a healthy answer
    still makes /healthz fail at once, and a member started again makes it pass (a new connection)."""
    host = converged.hosts[2]
    ssl = "/etc/kubernetes/ssl"
    host.ssh(
        f"systemd-run --unit=t-api2 -p Type=notify /usr/local/bin/kube-apiserver --etcd-servers=https://{host.address}:2379"
        f" --insecure-bind-address=127.0.0.1 --insecure-port=28081 --etcd-cafile={ssl}/ca.pem"
        f" --etcd-certfile={ssl}/kubernetes.pem --etcd-keyfile={ssl}/kubernetes-key.pem"
    )
    status = "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:28081/healthz"
    try:
        assert host.ssh(status).stdout == "200"
        assert host.ssh(status).stdout == "200"  # on the kept connection
        host.ssh("systemctl stop etcd")
        assert host.ssh(status).stdout == "500"
        host.ssh("systemctl start etcd")
        # the member answers 200 once it has rejoined its cluster: wait for that, then the stand-in must follow
        host.ssh(
            f"for i in $(seq 300); do {ETCD_HEALTH.format(address=host.address)} && exit 0; sleep 0.1; done; exit 1"
        )
        assert host.ssh(status).stdout == "200"
    finally:
        host.ssh("systemctl stop t-api2; systemctl start etcd", check=False)


def test_host_stop_and_start(testbed: Testbed) -> None:
    host, other = testbed.hosts[:2]
    host.ssh("echo persisted > /root/marker")
    host.stop()
    assert not host.is_running
    assert other.ssh("hostname").stdout.strip() == other.name
    host.start()
    assert host.is_running
    assert host.ssh("cat /root/marker").stdout.strip() == "persisted"
    assert other.ssh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded")


def test_stop_leaves_nothing_behind(testbed: Testbed) -> None:
    """Runs last: stops the session's testbed, checks, and boots it again."""
    testbed.stop()
    mounts = Path("/proc/self/mounts").read_text()
    assert str(testbed.state_dir) not in mounts
    assert not any(line.split()[2] == "overlay" and "lowerdir=/," in line for line in mounts.splitlines())
    assert subprocess.run(["pgrep", "-x", "systemd-nspawn"], capture_output=True).returncode == 1
    assert not Path("/sys/class/net", BRIDGE).exists()
    assert not any(h.is_running for h in testbed.hosts)
    testbed.stop()  # idempotent
    testbed.start()
    assert all(h.is_running for h in testbed.hosts)
