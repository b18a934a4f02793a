"""engine.cert_renewal: reload_readers on in-process hosts (the units whose reloadOn names a Certificate listing a
file just replaced, a CA bundle or a pair, are reloaded and stamped, the others and the inactive ones left), and
presented_at (where a renewed certificate is looked for on the wire: etcd's client and peer ports apart)."""

from __future__ import annotations

from pathlib import Path

from reconciler.engine.cert_renewal import etcd_leader, in_turn, leader_last, managed, presented_at, reload_readers
from reconciler.engine.converge import converge
from reconciler.spec.desired import DesiredHost, DesiredUnit
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.certs import managed_specs
from tests.support.etcd_members import fleet
from tests.support.specs import copy_specs

CA = "/etc/kubernetes/ssl/ca.pem"
UNIT = "kube-scheduler.service"


async def test_readers_of_a_replaced_file_are_reloaded_and_stamped_and_no_other(tmp_path: Path) -> None:
    specs = copy_specs(tmp_path / "specs")
    kube = specs / "kubernetes.yaml"
    text = kube.read_text().replace("restartOn: [kube-config, kube-scheduler-env, kubeconfig]", "restartOn: [kube-config, kube-scheduler-env, kubeconfig]\n  reloadOn: [kubernetes-ssl]")  # fmt: skip
    assert text != kube.read_text()
    kube.write_text(text)
    desired = load_desired(specs)
    hosts = {name: SimHost(name) for name in desired.hosts}
    session = Session(fake_connector(hosts))
    assert {o.status for o in (await converge(desired, session, wait=1.0, interval=0.01)).outcomes.values()} == {"converged"}  # fmt: skip
    host, sim = desired.hosts["master-1"], hosts["master-1"]
    unit = next(u for u in host.units if u.name == UNIT)
    said: list[str] = []

    assert await reload_readers(session, host, ["/etc/kubernetes/ssl/kubernetes.pem"], said.append) == ""
    assert await reload_readers(session, host, ["/etc/other.pem"], said.append) == ""  # read by no unit
    assert [u for _, u in sim.reloaded] == [UNIT] and unit.reload_stamp in sim.files  # the pair: kubernetes-ssl's
    assert said == [f"master-1: {UNIT} reloaded (/etc/kubernetes/ssl/kubernetes.pem changed)"]

    sim.units[UNIT].active = False  # stopped: it reads the files when it starts
    assert await reload_readers(session, host, [CA], said.append) == ""
    assert len(sim.reloaded) == 1 and len(said) == 1


# -- where a renewed certificate is looked for on the wire -----------------------------------------------------------

PEM = "/etc/kubernetes/ssl/kubernetes.pem"


def units_of(specs: Path) -> tuple[DesiredHost, dict[str, DesiredUnit]]:
    host = load_desired(specs).hosts["master-1"]
    return host, {u.spec_name: u for u in host.units}


def test_etcd_is_looked_at_on_each_port_that_presents_the_file_and_only_there(tmp_path: Path) -> None:
    host, units = units_of(copy_specs(tmp_path / "specs"))
    address = host.target.address
    # the seed's: one pair for the clients and the peers
    assert presented_at(host, units["etcd"], PEM) == [(address, 2379), (address, 2380)]
    assert presented_at(host, units["kube-apiserver"], PEM) == [(address, 6443)]  # its health check's URL
    assert presented_at(host, units["kube-scheduler"], PEM) == []  # no https check: nothing to look at
    assert presented_at(host, units["etcd"], "/etc/kubernetes/ssl/admin.pem") == []  # not a file etcd serves

    split = copy_specs(tmp_path / "split")
    etcd_yaml = split / "etcd.yaml"
    etcd_yaml.write_text(etcd_yaml.read_text().replace("ETCD_PEER_CERT_FILE: /etc/kubernetes/ssl/kubernetes.pem", "ETCD_PEER_CERT_FILE: /etc/etcd/peer.pem"))  # fmt: skip
    host, units = units_of(split)
    assert presented_at(host, units["etcd"], PEM) == [(address, 2379)]  # the clients' only
    assert presented_at(host, units["etcd"], "/etc/etcd/peer.pem") == [(address, 2380)]  # the peers' only


# -- the host of etcd's leader last -------------------------------------------------------------------------------


def test_leader_last_moves_only_the_leaders_host() -> None:
    names = ["master-1", "master-2", "master-3"]
    assert leader_last(names, "master-1") == ["master-2", "master-3", "master-1"]
    assert leader_last(names, "master-3") == names
    assert leader_last(names, None) == names and leader_last(names, "elsewhere") == names


async def test_renewals_that_restart_etcd_take_the_leaders_host_last_and_say_so(tmp_path: Path) -> None:
    specs = managed_specs(copy_specs(tmp_path / "specs"), tmp_path / "pki")  # kubernetes.pem restarts etcd
    desired = load_desired(specs)
    items = managed(desired)
    said: list[str] = []
    hosts = fleet(leader="master-2")
    ordered = await in_turn(Session(fake_connector(hosts)), desired, items, said.append)
    assert [h.name for h, _ in ordered] == ["master-1", "master-3", "master-2"]
    assert said == ["master-2: etcd's leader there: its host goes last (one leader change)"]

    for h in hosts.values():  # no member says it leads (an election under way, or no answer): as they were
        h.etcd_status = None
    assert await in_turn(Session(fake_connector(hosts)), desired, items, said.append) == items and len(said) == 1
    one = managed(desired, only_host="master-2")  # one host: no leader change to spare, nothing asked
    assert await in_turn(Session(fake_connector(fleet(leader="master-2"))), desired, one, said.append) == one


async def test_a_member_that_says_another_leads_does_not_make_its_host_the_leaders(tmp_path: Path) -> None:
    desired = load_desired(copy_specs(tmp_path / "specs"))
    hosts = fleet(leader="master-3")
    hosts["master-3"].etcd_status = None  # the leader's own member silent: the others' word is not taken for it
    assert await etcd_leader(Session(fake_connector(hosts)), desired) is None
    hosts["master-3"].etcd_status = {"header": {"member_id": "13"}, "leader": "13"}  # the gateway's strings
    assert await etcd_leader(Session(fake_connector(hosts)), desired) == "master-3"


def test_a_path_spelled_otherwise_is_the_same_file_and_no_advertised_url_falls_back_to_the_check(
    tmp_path: Path,
) -> None:
    specs = copy_specs(tmp_path / "specs")
    etcd_yaml = specs / "etcd.yaml"
    text = etcd_yaml.read_text()
    etcd_yaml.write_text(text.replace("ETCD_CERT_FILE: /etc/kubernetes/ssl/kubernetes.pem", "ETCD_CERT_FILE: /etc/kubernetes//ssl/./kubernetes.pem"))  # fmt: skip
    host, units = units_of(specs)
    assert presented_at(host, units["etcd"], PEM) == [(host.target.address, 2379), (host.target.address, 2380)]
    # served to its peers, but no peer URL advertised (etcd's default is not ours to guess): its health check's URL
    etcd_yaml.write_text(text.replace('ETCD_INITIAL_ADVERTISE_PEER_URLS: "https://{{ host.address }}:2380"', "ETCD_X: y"))  # fmt: skip
    host, units = units_of(specs)
    assert presented_at(host, units["etcd"], PEM) == [(host.target.address, 2379)]


def test_an_apiserver_serving_another_file_is_not_looked_at_for_its_client_pair(tmp_path: Path) -> None:
    specs = copy_specs(tmp_path / "specs")
    kube = specs / "kubernetes.yaml"
    kube.write_text(kube.read_text().replace("--tls-cert-file=/etc/kubernetes/ssl/kubernetes.pem", "--tls-cert-file=/etc/kubernetes/ssl/apiserver.pem"))  # fmt: skip
    host, units = units_of(specs)
    assert presented_at(host, units["kube-apiserver"], PEM) == []  # its --etcd-certfile: a client's, not served
    assert presented_at(host, units["kube-apiserver"], "/etc/kubernetes/ssl/./apiserver.pem") == [(host.target.address, 6443)]  # fmt: skip
