"""The real Kubernetes v1.20.2 binaries on the testbed (scripts/build-kube; testbed.kube): the bundled specs run a
real control plane against the testbed's 3-member etcd over TLS, healthy by /readyz; `kubectl get cs` and the
apiserver's verbose /readyz answer as the seed's last step expects; the scheduler's and controller-manager's
Leases exist and move when their holder stops; a flag the real binary does not define (the seed's
--experimental-bootstrap-token-auth) is refused at plan time, nothing written; a value it accepts but fails on
(a certificate that is not there) is rolled back with the apiserver's own error quoted; behind the HA front, a
rolling restart of the apiservers drains through the VIP without a failed request; masters built by hand on the
real binaries are imported exactly.

The module swaps the stand-ins for the real binaries on the session's testbed and back (restarting the three
components each way: reconciler restarts on a file change, not on a binary swapped under a running unit)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import Testbed, TestHost, kube
from testbed.ha import VIP, Traffic, enable_ha, holders
from tests.support.cli import reconciler
from tests.support.daemon import wait_for
from tests.support.specs import BUNDLED as SPECS

from .handbuilt import build_by_hand

pytestmark = pytest.mark.testbed

UNITS = "kube-apiserver kube-controller-manager kube-scheduler"
KUBECTL = "kubectl --kubeconfig /etc/kubernetes/kubeconfig --request-timeout 10s"


def swap(bed: Testbed, kind: str) -> None:
    for h in bed.hosts:
        kube.install(h.root, kind)
    for h in bed.hosts:
        h.ssh(f"systemctl restart {UNITS}", timeout=180)
    result = reconciler("apply", str(SPECS), "--verify-wait", "180")
    assert result.code == 0, result.out + result.err


@pytest.fixture(scope="module")
def real(converged: Testbed) -> Iterator[Testbed]:
    swap(converged, "real")
    try:
        yield converged
    finally:
        swap(converged, "standins")


def kubectl(host: TestHost, args: str) -> str:
    return str(host.ssh(f"{KUBECTL} {args}", timeout=60).stdout)


def test_the_bundled_specs_run_a_real_control_plane(real: Testbed) -> None:
    for h in real.hosts:
        assert kube.kind_of(h.root) == "real"
        version = h.ssh("/usr/local/bin/kube-apiserver --version").stdout.strip()
        assert version == f"Kubernetes {kube.VERSION}"
        assert (
            h.ssh("systemctl is-active kube-apiserver kube-controller-manager kube-scheduler").stdout.split()
            == ["active"] * 3
        )
    result = reconciler("check", str(SPECS), "--json")
    assert result.code == 0, result.out + result.err
    hosts = json.loads(result.out)["hosts"]
    assert {n: h["status"] for n, h in hosts.items()} == dict.fromkeys((h.name for h in real.hosts), "converged")
    assert reconciler("plan", str(SPECS)).code == 0  # idempotent: nothing to do on the real control plane


def test_kubectl_get_cs_and_verbose_readyz_as_the_seed_ends(real: Testbed) -> None:
    m1 = real.hosts[0]
    readyz = kubectl(m1, "get --raw '/readyz?verbose'")
    assert "[+]etcd ok" in readyz and readyz.rstrip().endswith("readyz check passed"), readyz
    cs = kubectl(m1, "get cs --no-headers")  # deprecated in v1.20, still answered
    rows = {line.split()[0]: line.split()[1] for line in cs.splitlines() if line.strip()}
    assert rows == {
        "scheduler": "Healthy",
        "controller-manager": "Healthy",
        "etcd-0": "Healthy",
        "etcd-1": "Healthy",
        "etcd-2": "Healthy",
    }, cs


def holder(host: TestHost, lease: str) -> str:
    out = kubectl(host, f"-n kube-system get lease {lease} -o jsonpath='{{.spec.holderIdentity}}'").strip()
    return out.split("_", 1)[0]  # "<hostname>_<uuid>"


@pytest.mark.parametrize("component", ["kube-scheduler", "kube-controller-manager"])
def test_a_components_lease_moves_when_its_holder_stops(real: Testbed, component: str) -> None:
    m1 = real.hosts[0]
    first = wait_for(f"{component}'s lease held", lambda: holder(m1, component), timeout=60)
    assert first in {h.name for h in real.hosts}
    stopped = real.host(first)
    stopped.ssh(f"systemctl stop {component}")
    try:
        began = time.monotonic()
        moved = wait_for(
            f"{component}'s lease to move off {first}",
            lambda: (h := holder(m1, component)) != first and h,
            timeout=90,
        )
        print(f"{component}: lease moved from {first} to {moved} in {time.monotonic() - began:.1f} s")
    finally:
        stopped.ssh(f"systemctl start {component}")


def test_a_flag_the_real_apiserver_does_not_define_is_refused_at_plan_time(real: Testbed, spec_copy: Path) -> None:
    spec = spec_copy / "kubernetes.yaml"
    spec.write_text(spec.read_text().replace(" --enable-bootstrap-token-auth", " --experimental-bootstrap-token-auth"))
    before = {h.name: (h.root / "etc/kubernetes/apiserver").read_bytes() for h in real.hosts}
    for command in ("plan", "apply"):
        result = reconciler(command, str(spec_copy))
        out = result.out + result.err
        assert result.code == 1, out
        for h in real.hosts:
            assert (
                f"--experimental-bootstrap-token-auth is not a flag /usr/local/bin/kube-apiserver (Kubernetes v1.20.2) "
                f"on {h.name} accepts (kube-apiserver.service would not start): given by "
            ) in out, out
            assert "KUBE_API_ARGS in /etc/kubernetes/apiserver line" in out
    assert {h.name: (h.root / "etc/kubernetes/apiserver").read_bytes() for h in real.hosts} == before


def test_a_certificate_the_real_apiserver_cannot_open_is_rolled_back_with_its_error(
    real: Testbed, spec_copy: Path
) -> None:
    spec = spec_copy / "kubernetes.yaml"
    text = spec.read_text()
    spec.write_text(
        text.replace(
            "--tls-cert-file=/etc/kubernetes/ssl/kubernetes.pem", "--tls-cert-file=/etc/kubernetes/ssl/nope.pem"
        )
    )
    m2 = real.hosts[1]
    before = (m2.root / "etc/kubernetes/apiserver").read_text()
    result = reconciler("apply", "--host", m2.name, str(spec_copy))
    out = result.out + result.err
    assert result.code == 1 and f"{m2.name}: ROLLED BACK: kube-apiserver.service failed on the new config" in out, out
    assert "/etc/kubernetes/ssl/nope.pem: no such file or directory" in out, out  # the real apiserver's own words
    assert (m2.root / "etc/kubernetes/apiserver").read_text() == before
    wait_for(
        f"{m2.name}'s apiserver ready again",
        lambda: "ok" == m2.ssh(f"{KUBECTL} get --raw /readyz", check=False).stdout.strip(),
        timeout=120,
    )


def test_a_rolling_apiserver_restart_drains_through_the_vip_without_a_failed_request(
    real: Testbed, tmp_path: Path
) -> None:
    """The HA front (specs/ha) before the real apiservers, kube-apiserver given a rollout (docs/ha.md): reconciler
    restarts them one at a time, each next one once the last passes /readyz; each, told to stop, fails /readyz at once and serves 5 s more
    (--shutdown-delay-duration), so HAProxy's /readyz check takes it out before it stops answering. A client
    asking /version through the VIP's TLS frontend the whole time sees no failed request. Before it, kubectl through
    the VIP (the demo's last step)."""
    spec_dir = tmp_path / "specs"
    shutil.copytree(SPECS, spec_dir)
    enable_ha(spec_dir, insecure_on_vip=False)
    kube_spec = spec_dir / "kubernetes.yaml"
    anchor = "  restartOn: [kube-config, kube-apiserver-env, token-csv]\n"
    rollout = "  rollout: {strategy: OneAtATime, healthCheck: kube-apiserver, timeoutSeconds: 120}\n"
    kube_spec.write_text(kube_spec.read_text().replace(anchor, anchor + rollout))  # as docs/ha.md advises
    try:
        result = reconciler("apply", str(spec_dir), "--verify-wait", "180")
        assert result.code == 0, result.out + result.err
        wait_for("one VIP holder", lambda: len(holders(real)) == 1)
        # the seed's last step through the VIP, the apiserver's certificate checked against it (it names the VIP)
        readyz = kubectl(real.hosts[1], f"--server https://{VIP}:8443 get --raw '/readyz?verbose'")
        assert readyz.rstrip().endswith("readyz check passed"), readyz
        cs = kubectl(real.hosts[1], f"--server https://{VIP}:8443 get cs --no-headers")
        rows = {line.split()[0]: line.split()[1] for line in cs.splitlines() if line.strip()}
        # behind the HA front each apiserver uses its own etcd member (testbed.ha.enable_ha): one etcd row
        assert rows == {"scheduler": "Healthy", "controller-manager": "Healthy", "etcd-0": "Healthy"}, cs
        started = {
            h.name: h.ssh("systemctl show -p ActiveEnterTimestamp --value kube-apiserver").stdout for h in real.hosts
        }
        kube_spec.write_text(kube_spec.read_text().replace("--audit-log-maxage=30", "--audit-log-maxage=31"))
        with Traffic(url=f"https://{VIP}:8443/version") as client:
            wait_for("requests through the VIP", lambda: client.sent() > 10)
            began = time.monotonic()
            result = reconciler("apply", str(spec_dir), "--verify-wait", "180")
            ended = time.monotonic()
        out = result.out + result.err
        assert result.code == 0, out
        for h in real.hosts:  # each restarted
            assert h.ssh("systemctl show -p ActiveEnterTimestamp --value kube-apiserver").stdout != started[h.name]
        assert client.sent(began) > 100, client.sent(began)
        assert client.failed(began) == [], client.failed(began)[:5]
        print(f"3 apiservers restarted in turn in {ended - began:.1f} s: {client.sent(began)} requests, none failed")
    finally:
        for h in real.hosts:  # the HA front off again; the bundled specs do not manage it
            h.ssh("systemctl disable --now keepalived haproxy", check=False)
        result = reconciler("apply", str(SPECS), "--verify-wait", "180")
        assert result.code == 0, result.out + result.err


def test_masters_built_by_hand_on_the_real_binaries_are_imported_exactly(real: Testbed, tmp_path: Path) -> None:
    """The seed's guide followed by hand on v1.20 (tests/support/seed.as_v1_20: its texts, with what v1.20 needs
    changed), on the real binaries: the control plane answers `kubectl get cs`, and `reconciler import` of it is
    exact: a plan of the imported directory has nothing to change on any host."""
    build_by_hand(real, "v1.20")
    try:
        cs = kubectl(real.hosts[0], "get cs --no-headers")
        assert [line.split()[1] for line in cs.splitlines() if line.strip()] == ["Healthy"] * 5, cs
        out = tmp_path / "adopted"
        imported = reconciler("import", "--inventory", str(SPECS / "inventory.yaml"), str(out))
        assert imported.code == 0, imported.out + imported.err
        assert "finds nothing to change on any host" in imported.out
        plan = reconciler("plan", str(out))
        assert plan.code == 0, plan.out + plan.err  # 0: nothing to change (2 would mean changes)
    finally:
        result = reconciler("apply", str(SPECS), "--verify-wait", "180")
        assert result.code == 0, result.out + result.err
