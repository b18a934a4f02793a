"""engine.drain, pure: HAProxy's `show stat` read (servers, their state and open connections), which backends a
host's server is drained from (only where it is up and another server is up: never the last one), and which
balancers drain for a restart (the bundled HA front's HAProxy, for etcd and the apiserver; none for the others)."""

from __future__ import annotations

from pathlib import Path

import yaml

from reconciler.engine.drain import Server, chosen, fronts, servers
from reconciler.spec.isolate import load_desired
from tests.support.specs import copy_specs

STAT = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight
kube-apiserver,FRONTEND,,,3,5,4000,10,0,0,0,0,0,,,,,OPEN,
kube-apiserver,master-1,0,0,2,3,,7,0,0,,0,,0,0,0,0,UP,1
kube-apiserver,master-2,0,0,1,2,,3,0,0,,0,,0,0,0,0,UP 1/2,1
kube-apiserver,master-3,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1
kube-apiserver,BACKEND,0,0,3,5,,10,0,0,0,0,,0,0,0,0,UP,2
solo,master-1,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,1
solo,BACKEND,0,0,0,0,,0,0,0,0,0,,0,0,0,0,UP,1
insecure,master-1,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1
insecure,master-2,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1
"""


def test_show_stat_is_read_by_its_header() -> None:
    found = servers("\n" + STAT + "\n")
    assert found[0] == Server("kube-apiserver", "master-1", "UP", 2)
    assert [(s.backend, s.name, s.up) for s in found] == [
        ("kube-apiserver", "master-1", True),
        ("kube-apiserver", "master-2", True),  # UP 1/2: up, going down
        ("kube-apiserver", "master-3", False),
        ("solo", "master-1", True),  # a server without checks
        ("insecure", "master-1", False),
        ("insecure", "master-2", True),
    ]
    assert servers("Unknown command.\n") == [] and servers("# pxname,svname\nx,y\n") == []


def test_a_server_is_drained_only_where_another_is_up() -> None:
    found = servers(STAT)
    assert chosen(found, ["kube-apiserver", "solo", "insecure", "absent"], "master-1") == (
        ["kube-apiserver"],
        ["solo/master-1 is the last server up", "insecure/master-1 is DOWN"],
    )
    assert chosen(found, ["kube-apiserver"], "master-3") == ([], ["kube-apiserver/master-3 is DOWN"])
    assert chosen(found, ["kube-apiserver"], "master-9") == ([], [])  # not a server there: nothing to say
    # the others drained already (a run cut off before it put them back): this one is the last up
    drained = [
        Server("b", "master-1", "UP", 0),
        Server("b", "master-2", "DRAIN", 0),
        Server("b", "master-3", "MAINT", 0),
    ]
    assert chosen(drained, ["b"], "master-1") == ([], ["b/master-1 is the last server up"])
    # this one found drained (a run cut off before it put it back): drained again, so put back after
    assert chosen([Server("b", "master-1", "DRAIN", 0), Server("b", "master-2", "UP", 0)], ["b"], "master-1") == (
        ["b"],
        [],
    )
    # one in maintenance (the operator's) is left as it is
    assert chosen([Server("b", "master-1", "MAINT", 0), Server("b", "master-2", "UP", 0)], ["b"], "master-1") == (
        [],
        ["b/master-1 is MAINT"],
    )


def test_the_bundled_front_drains_for_etcd_and_the_apiserver_only(tmp_path: Path) -> None:
    specs = copy_specs(tmp_path / "specs")
    docs = list(yaml.safe_load_all((specs / "inventory.yaml").read_text()))
    for doc, priority in zip(docs, (150, 140, 130), strict=True):
        doc["metadata"]["labels"]["ha"] = "front"
        doc["spec"]["vars"].update(vip="198.18.0.100", vrrp_priority=priority)
    (specs / "inventory.yaml").write_text(yaml.safe_dump_all(docs))
    desired = load_desired(specs)
    for units in (["etcd.service"], ["kube-apiserver.service"], ["etcd.service", "kube-apiserver.service"]):
        found = fronts(desired, units)
        assert [f.host.name for f in found] == ["master-1", "master-2", "master-3"]
        assert found[0].balancer.backends == ("kube-apiserver", "kube-apiserver-insecure", "kube-apiserver-readyz")
        assert found[0].balancer.ready_check == "kube-apiserver" and found[0].balancer.drain_seconds == 10
    assert fronts(desired, ["kube-scheduler.service"]) == [] and fronts(desired, ["haproxy.service"]) == []
    assert fronts(load_desired(copy_specs(tmp_path / "bare", ha=False)), ["etcd.service"]) == []
