"""engine.drain, pure: HAProxy's answer read (`show servers state`: each server's state, drained, maintenance,
weight; `show stat`: its connections), total on odd answers; which backends a host's server is drained from (only
where it runs and another serves: never the last; one left drained put back; one in maintenance never touched),
and which balancers drain for a restart (the bundled HA front's HAProxy, for etcd and the apiserver only)."""

from __future__ import annotations

from pathlib import Path

import yaml

from reconciler.engine.drain import Choice, Server, chosen, fronts, servers
from reconciler.spec.isolate import load_desired
from tests.support.specs import copy_specs

ANSWER = """\
1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change
3 kube-apiserver 1 master-1 198.18.0.11 2 0 1 1 20
3 kube-apiserver 2 master-2 198.18.0.12 2 0 1 1 20
3 kube-apiserver 3 master-3 198.18.0.13 0 0 1 1 20
4 solo 1 master-1 198.18.0.11 2 0 1 1 20
5 insecure 1 master-1 198.18.0.11 0 0 1 1 20
5 insecure 2 master-2 198.18.0.12 2 8 1 1 20
5 insecure 3 master-3 198.18.0.13 2 1 1 1 20
6 light 1 master-1 198.18.0.11 2 0 1 1 20
6 light 2 master-2 198.18.0.12 2 0 0 1 20

# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight
kube-apiserver,FRONTEND,,,3,5,4000,10,0,0,0,0,0,,,,,OPEN,
kube-apiserver,master-1,0,0,2,3,,7,0,0,,0,,0,0,0,0,UP,1
kube-apiserver,master-2,0,0,1,2,,3,0,0,,0,,0,0,0,0,UP 1/2,1
"""


def test_haproxys_answer_is_read_by_its_headers() -> None:
    found = servers("\n" + ANSWER + "\n")
    assert found[0] == Server("kube-apiserver", "master-1", True, False, False, 1, 2)
    assert [(s.backend, s.name, s.serving) for s in found] == [
        ("kube-apiserver", "master-1", True),
        ("kube-apiserver", "master-2", True),
        ("kube-apiserver", "master-3", False),  # its checks say it is down
        ("solo", "master-1", True),
        ("insecure", "master-1", False),
        ("insecure", "master-2", False),  # drained
        ("insecure", "master-3", False),  # in maintenance
        ("light", "master-1", True),
        ("light", "master-2", False),  # weight 0: takes no new connection
    ]
    assert servers("Unknown command.\n") == [] and servers("# be_id x\n1 2\n") == []


def test_an_odd_answer_gives_servers_or_none_never_an_error() -> None:
    """A front that answers oddly (compromised, another version) is said, never the restart's end."""
    odd = ANSWER.replace("3 kube-apiserver 1 master-1 198.18.0.11 2 0 1 1 20", "3 kube-apiserver 1 master-1 x ² ² ² 1")
    odd = odd.replace("kube-apiserver,master-1,0,0,2,", "kube-apiserver,master-1,0,0,²,") + '"' + "x" * 200_000 + "\n"
    found = servers(odd)
    assert found[0] == Server("kube-apiserver", "master-1", False, False, False, 0, 0)
    assert servers("# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\nshort\n") == []


def test_a_server_is_drained_only_where_another_serves() -> None:
    found = servers(ANSWER)
    choice = chosen(found, ["kube-apiserver", "solo", "insecure", "light", "absent"], "master-1")
    assert choice.drain == ["kube-apiserver"] and choice.now == []
    assert choice.said == [
        "solo/master-1 is the last server up",
        "insecure/master-1 is down",
        "light/master-1 is the last server up",  # master-2 there has weight 0
    ]
    assert chosen(found, ["kube-apiserver"], "master-3").said == ["kube-apiserver/master-3 is down"]
    assert chosen(found, ["kube-apiserver"], "master-9") == Choice([], [], [])  # not a server there
    assert chosen(found, ["insecure"], "master-3").said == ["insecure/master-3 is in maintenance"]  # never touched


def test_a_server_left_drained_is_put_back_after_or_at_once_when_it_is_the_last() -> None:
    up, drained = Server("b", "master-2", True, False, False, 1), Server("b", "master-1", False, True, False, 1)
    assert chosen([drained, up], ["b"], "master-1") == Choice(["b"], [], [])  # drained on, put back after
    assert chosen([drained], ["b"], "master-1") == Choice([], ["b"], [])  # the last one: put back now
    # another drained already (a run cut off): this one is the last serving
    others = [Server("b", "master-1", True, False, False, 1), Server("b", "master-2", True, True, False, 1)]
    assert chosen(others, ["b"], "master-1").said == ["b/master-1 is the last server up"]


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
