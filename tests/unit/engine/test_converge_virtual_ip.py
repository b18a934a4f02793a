"""VirtualIP: which front host holds the VIP, observed on in-process hosts and reported in /status, the status
table and `reconciler_vip_held` (the alert rules on it are tested by promtool: test_prometheus_files)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from reconciler.engine.converge import converge
from reconciler.errors import SpecError
from reconciler.output import Style, render_status
from reconciler.spec.isolate import load_desired
from reconciler.status.ledger import Ledger
from reconciler.status.metrics import Metrics
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from testbed import pki
from tests.support.specs import copy_specs

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[3]
VIP = "198.18.0.100"


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    """The bundled specs with the HA front enabled on every master, as docs/ha.md says."""
    d = copy_specs(tmp_path / "specs")
    docs = list(yaml.safe_load_all((d / "inventory.yaml").read_text()))
    for doc, priority in zip(docs, (150, 140, 130), strict=True):
        doc["metadata"]["labels"]["ha"] = "front"
        doc["spec"]["vars"].update(vip=VIP, vip_interface="host0", vrrp_priority=priority)
    (d / "inventory.yaml").write_text(yaml.safe_dump_all(docs))
    return d


def test_the_ha_front_renders_for_labelled_hosts_only(specs: Path) -> None:
    desired = load_desired(specs)
    m1 = desired.hosts["master-1"]
    assert m1.addresses == {"apiserver": VIP}
    cfg = m1.files["/etc/keepalived/keepalived.conf"].content.decode()
    peers = cfg.split("unicast_peer {")[1].split("}")[0]
    assert "priority 150" in cfg and "unicast_src_ip 198.18.0.11" in cfg
    # its peers, whose adverts come over no router (VRRP sends TTL 255: one that crossed a router is forged)
    assert "198.18.0.12 min_ttl 255 max_ttl 255\n" in peers and "198.18.0.13 min_ttl 255 max_ttl 255\n" in peers
    assert "198.18.0.11" not in peers  # never its own peer
    # a stopped or killed HAProxy gives the VIP up at once: its unit sets the file keepalived watches
    assert 'file "/run/haproxy-stopped"' in cfg and "track_file {\n    haproxy_stopped" in cfg
    # issue 26: adverts only from the other front hosts; on a cold start both trackers fail until HAProxy answered
    assert "vrrp_check_unicast_src" in cfg.split("global_defs {")[1].split("}")[0]
    assert "init_fail" in cfg.split("vrrp_script haproxy {")[1].split("}")[0]
    assert "init_file 1\n" in cfg.split("track_file haproxy_stopped {")[1].split("}")[0]
    unit = m1.files["/etc/systemd/system/haproxy.service"].content.decode()
    assert "ExecStopPost=/bin/sh -c 'echo 1 > /run/haproxy-stopped'" in unit
    assert "ExecStartPost=/bin/sh -c 'echo 0 > /run/haproxy-stopped'" in unit
    haproxy = m1.files["/etc/haproxy/haproxy.cfg"].content.decode()
    assert "server master-3 198.18.0.13:6443" in haproxy and "check-ssl" in haproxy and "httpchk" in haproxy
    assert "ssl-hello-chk" not in haproxy  # kubeadm's mistake: a handshake-only check passes an apiserver's 500
    plain = load_desired(REPO / "specs").hosts["master-1"]  # the bundled inventory does not enable it
    assert not plain.addresses and "/etc/haproxy/haproxy.cfg" not in plain.files


def test_haproxy_accepts_the_rendered_config(specs: Path, tmp_path: Path) -> None:
    """Debian's haproxy (scripts/install-deps installs it) checks what specs/ha/ renders, as the unit's
    ExecStartPre does on a host: a typo in an option fails here, not in a rollout."""
    cfg = tmp_path / "haproxy.cfg"
    text = load_desired(specs).hosts["master-2"].files["/etc/haproxy/haproxy.cfg"].content.decode()
    assert "ca-file /etc/kubernetes/ssl/ca.pem" in text  # read at start: a master has it, this machine a copy
    ca = pki.generate(tmp_path / "pki", [], []) / "ca.pem"
    cfg.write_text(text.replace("ca-file /etc/kubernetes/ssl/ca.pem", f"ca-file {ca}"))
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    broken = tmp_path / "broken.cfg"
    broken.write_text(cfg.read_text().replace("fastinter 200ms", "fastinterval 200ms"))
    assert subprocess.run(["haproxy", "-c", "-f", str(broken)], capture_output=True, timeout=30).returncode != 0


def test_keepalived_accepts_the_rendered_config(specs: Path, tmp_path: Path) -> None:
    """Debian's keepalived checks what specs/ha/ renders (`keepalived -t`): a misspelt keyword (it would be
    ignored with a line in the journal, and the protection with it) fails here. As root, in a network namespace
    of its own with the config's interface (host0) in it, the whole check must pass."""
    conf = tmp_path / "keepalived.conf"
    conf.write_bytes(load_desired(specs).hosts["master-1"].files["/etc/keepalived/keepalived.conf"].content)
    broken = tmp_path / "broken.conf"
    broken.write_text(conf.read_text().replace("init_fail", "init_failed"))

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        if os.geteuid() != 0:  # no namespace: only the keywords are checked (the interface is missing)
            return subprocess.run(["keepalived", "-t", "-f", str(path)], capture_output=True, text=True, timeout=30)
        script = f"ip link add host0 type veth peer name peer0 && ip link set host0 up && keepalived -t -f {path}"
        return subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=30)

    good, bad = check(conf), check(broken)
    assert "Unknown keyword" not in good.stdout + good.stderr, good.stdout + good.stderr
    assert os.geteuid() != 0 or good.returncode == 0, good.stdout + good.stderr
    assert bad.returncode != 0 and "Unknown keyword 'init_failed'" in bad.stdout + bad.stderr


def test_an_address_that_is_not_an_ip_is_a_located_error(specs: Path) -> None:
    inv = specs / "inventory.yaml"
    inv.write_text(inv.read_text().replace(f"vip: {VIP}", "vip: not-an-address", 1))
    with pytest.raises(SpecError) as err:
        load_desired(specs)
    assert any(
        "keepalived.yaml" in i.file and i.field == "spec.address" and "not an IP address" in i.message
        for i in err.value.issues
    ), err.value.issues


async def test_the_holder_is_reported_in_status_and_metrics(specs: Path) -> None:
    desired = load_desired(specs)
    hosts = {name: SimHost(name) for name in desired.hosts}
    hosts["master-2"].addresses.add(VIP)
    result = await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    ledger = Ledger("specs", Metrics())
    ledger.spec_loaded(desired.hosts, [])
    for outcome in result.outcomes.values():
        ledger.pass_done(desired, outcome, seconds=0.1, reconcile_id="r", generation=1)
    doc = ledger.status_document(ready=True, queue_depth=0, in_flight=[], retry_in={})
    assert doc["virtual_ips"] == {"apiserver": {"holders": ["master-2"], "not_holding": ["master-1", "master-3"]}}
    metrics = ledger.metrics.exposition().decode()
    assert 'reconciler_vip_held{host="master-2",vip="apiserver"} 1.0' in metrics
    assert 'reconciler_vip_held{host="master-1",vip="apiserver"} 0.0' in metrics
    assert "virtual IP apiserver: held by master-2" in render_status(doc, "x", Style(False), time.time())

    hosts["master-3"].addresses.add(VIP)  # split brain: two holders, said so
    result = await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    ledger.pass_done(desired, result.outcomes["master-3"], seconds=0.1, reconcile_id="r", generation=1)
    doc = ledger.status_document(ready=True, queue_depth=0, in_flight=[], retry_in={})
    assert doc["virtual_ips"]["apiserver"]["holders"] == ["master-2", "master-3"]
    assert "(more than one!)" in render_status(doc, "x", Style(False), time.time())
    ledger.spec_loaded(["master-1", "master-2"], ["master-3"])  # a host that leaves takes its series along
    assert 'reconciler_vip_held{host="master-3"' not in ledger.metrics.exposition().decode()


def test_a_host_cannot_report_a_virtual_ip_it_was_not_asked_about() -> None:
    from reconciler.observe.facts import ObservationError, parse_observation

    out = "@@NOW 1\n@@A apiserver 1\n@@A other-vip 1\n@@END\n"
    snapshot = parse_observation("m", out, addresses=["apiserver"])
    assert snapshot.addresses == {"apiserver": True}  # other-vip: not this host's to report, not counted
    with pytest.raises(ValueError):
        parse_observation("m", "@@NOW 1\n@@A apiserver 1\n@@A apiserver 0\n@@END\n", addresses=["apiserver"])
    assert issubclass(ObservationError, ValueError)
