"""`apply --break-glass` is refused unless this run asked etcd itself, and it relaxes etcd's guard only.

Before, the refusal ("etcd still answers a quorum read") only worked when etcd's members had an HTTP rollout check:
with a `tcp:` check nothing asked etcd, and `apply --break-glass` restarted all 3 healthy members within 4 ms; it also
dropped the guard of every other rollout unit (HAProxy, keepalived).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from reconciler.engine.break_glass import cannot_ask
from reconciler.engine.converge import converge
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session

REPO = Path(__file__).resolve().parents[3]
HTTP_CHECK = """  http:
    url: "https://{{ host.address }}:2379/health"
    caFile: /etc/kubernetes/ssl/ca.pem
    certFile: /etc/kubernetes/ssl/kubernetes.pem
    keyFile: /etc/kubernetes/ssl/kubernetes-key.pem
"""


def with_tcp_check(specs: Path) -> None:
    etcd = specs / "etcd.yaml"
    text = etcd.read_text()
    assert text.count(HTTP_CHECK) == 1
    etcd.write_text(text.replace(HTTP_CHECK, '  tcp: {host: "{{ host.address }}", port: 2379}\n'))


def test_a_tcp_check_cannot_ask_etcd_so_the_glass_stays_whole(specs: Path) -> None:
    with_tcp_check(specs)
    why = cannot_ask(load_desired(specs))
    assert "cannot ask etcd whether it lost its quorum: etcd.service on master-1, master-2, master-3" in why


def test_the_cli_refuses_before_touching_any_host(specs: Path) -> None:
    with_tcp_check(specs)
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "apply", str(specs), "--break-glass"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "refusing --break-glass: cannot ask etcd" in proc.stderr, proc.stderr
    assert "converged" not in proc.stdout


def test_an_etcd_unit_of_another_name_is_found_by_its_program(specs: Path) -> None:
    """No EtcdTuning and a unit not named etcd.service: it still is etcd (its ExecStart runs etcd), so its guard
    stays whole and --break-glass asks it."""
    etcd = specs / "etcd.yaml"
    text = etcd.read_text()
    text = text[: text.index("---\n# When etcd logs")]  # no EtcdTuning
    etcd.write_text(text.replace("kind: Unit\nmetadata:\n  name: etcd\n", "kind: Unit\nmetadata:\n  name: etcd-main\n"))
    desired = load_desired(specs)
    assert desired.tuning is None and desired.etcd_unit == "etcd-main.service"
    assert cannot_ask(desired) == ""


def test_without_etcd_there_is_no_glass_to_break(specs: Path) -> None:
    (specs / "etcd.yaml").unlink()
    kube = specs / "kubernetes.yaml"
    kube.write_text(kube.read_text().replace("After=etcd.service", ""))
    desired = load_desired(specs)
    assert desired.etcd_unit is None and "no etcd unit in the specs" in cannot_ask(desired)


async def test_breaking_the_glass_leaves_other_units_guards_whole(specs: Path) -> None:
    """kube-apiserver rolled out one at a time: with the glass broken, a healthy member still waits for an
    unhealthy peer; etcd's members restart without the guard."""
    kube = specs / "kubernetes.yaml"
    anchor = "  restartOn: [kube-config, kube-apiserver-env, token-csv]\n"
    rollout = "  rollout: {strategy: OneAtATime, healthCheck: kube-apiserver, timeoutSeconds: 1}\n"
    kube.write_text(kube.read_text().replace(anchor, anchor + rollout))
    desired = load_desired(specs)
    hosts = {name: SimHost(name) for name in desired.hosts}
    await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)

    kube.write_text(kube.read_text().replace("--service-node-port-range=", "--v=2 --service-node-port-range="))
    conf = specs / "etcd.yaml"
    conf.write_text(conf.read_text().replace("ETCD_HEARTBEAT_INTERVAL: 100", "ETCD_HEARTBEAT_INTERVAL: 150"))
    changed = load_desired(specs)
    hosts["master-2"].units["kube-apiserver.service"].active = False  # its peer is down
    hosts["master-2"].units["etcd.service"].active = False
    hosts["master-3"].units["etcd.service"].active = False  # etcd lost its quorum
    session = Session(fake_connector(hosts))
    result = await converge(changed, session, wait=0.1, interval=0.01, only=["master-1"], break_glass=True)
    outcome = result.outcomes["master-1"]
    restarted = [unit for _, unit in hosts["master-1"].restarted]
    assert "etcd.service" in restarted
    assert "kube-apiserver.service" not in restarted
    assert "not restarting kube-apiserver.service: other member(s) unhealthy: master-2" in outcome.error
