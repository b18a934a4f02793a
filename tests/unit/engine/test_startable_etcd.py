"""An etcd member started on a version its cluster accepts (engine.startable, components.etcd_versions), on
in-process hosts: a rolling upgrade one minor version up converges; a downgrade once the cluster runs the new
version, or a skipped minor version, is a plan-time error and the host is left untouched; a cluster that does not
answer (being built) leaves the versions unchecked."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.engine.converge import converge, plan_all
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.fake_programs import SimProgram
from reconciler.transport.session import Session

HELP = "Usage:\n\n  etcd [flags]\n\nmember flags:\n\n" + "".join(
    f"  --{n} 'x'\n      what it does\n"
    for n in (
        "name data-dir wal-dir snapshot-count heartbeat-interval election-timeout listen-peer-urls "
        "listen-client-urls max-snapshots max-wals quota-backend-bytes initial-cluster"
    ).split()
)
OLD, NEW, NEWER = "/usr/bin/etcd", "/opt/etcd-v3.5/etcd", "/opt/etcd-v3.6/etcd"
BINARIES = {
    OLD: SimProgram(help=HELP, version="etcd Version: 3.4.23"),
    NEW: SimProgram(help=HELP + "  --experimental-x\n", version="etcd Version: 3.5.16"),
    NEWER: SimProgram(help=HELP + "  --experimental-y\n", version="etcd Version: 3.6.0"),
}


pytestmark = pytest.mark.usefixtures("no_flag_books")  # nothing learnt of any binary before a test


def fleet(names: list[str], cluster: str | None) -> dict[str, SimHost]:
    hosts = {n: SimHost(n) for n in names}
    for h in hosts.values():
        h.programs.update(BINARIES)
        h.etcd_version = {"etcdserver": "3.4.23", "etcdcluster": cluster} if cluster else None
    return hosts


def on_master_1(specs: Path, binary: str) -> None:
    inventory = specs / "inventory.yaml"
    inventory.write_text(inventory.read_text().replace(f"etcd_binary: {OLD}", f"etcd_binary: {binary}", 1))


async def converged(specs: Path, hosts: dict[str, SimHost]) -> None:
    result = await converge(load_desired(specs), Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert {o.status for o in result.outcomes.values()} == {"converged"}, result.outcomes


def exec_start(host: SimHost) -> str:
    unit = host.files["/etc/systemd/system/etcd.service"].content.decode()
    return next(line for line in unit.splitlines() if line.startswith("ExecStart="))


async def test_one_minor_version_up_converges_and_back_is_refused_once_the_cluster_runs_it(specs: Path) -> None:
    hosts = fleet(["master-1", "master-2", "master-3"], cluster="3.4.0")
    await converged(specs, hosts)
    on_master_1(specs, NEW)
    await converged(specs, hosts)  # 3.5 joins a cluster at 3.4
    assert exec_start(hosts["master-1"]) == f"ExecStart={NEW}"
    assert any("+help" in q for path, q in hosts["master-1"].asked if path == NEW)  # its version asked: no flags

    for h in hosts.values():  # every member on 3.5: the cluster's version goes up
        h.etcd_version = {"etcdserver": "3.5.16", "etcdcluster": "3.5.0"}
    (specs / "inventory.yaml").write_text((specs / "inventory.yaml").read_text().replace(NEW, OLD))
    changes = hosts["master-1"].changes
    planned = await plan_all(load_desired(specs), Session(fake_connector(hosts)))
    outcome = planned.outcomes["master-1"]
    assert outcome.status == "failed" and outcome.plan is not None and outcome.plan.actions
    assert outcome.error == (
        f"etcd.service on master-1 would run {OLD} (etcd 3.4.23), older than the cluster, which runs at version 3.5 "
        "since every member runs it: the cluster would refuse the member. Going back to 3.4 takes a restore from a "
        "snapshot taken before the upgrade"
    )
    result = await converge(load_desired(specs), Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert result.outcomes["master-1"].status == "failed" and not result.outcomes["master-1"].applied
    assert hosts["master-1"].changes == changes and exec_start(hosts["master-1"]) == f"ExecStart={NEW}"


async def test_back_down_is_allowed_while_the_cluster_still_runs_the_old_version(specs: Path) -> None:
    hosts = fleet(["master-1", "master-2", "master-3"], cluster="3.4.0")
    on_master_1(specs, NEW)
    await converged(specs, hosts)
    (specs / "inventory.yaml").write_text((specs / "inventory.yaml").read_text().replace(NEW, OLD))
    await converged(specs, hosts)
    assert exec_start(hosts["master-1"]) == f"ExecStart={OLD}"


async def test_a_skipped_minor_version_is_refused(specs: Path) -> None:
    hosts = fleet(["master-1", "master-2", "master-3"], cluster="3.4.0")
    await converged(specs, hosts)
    on_master_1(specs, NEWER)
    planned = await plan_all(load_desired(specs), Session(fake_connector(hosts)))
    assert planned.outcomes["master-1"].status == "failed"
    assert "etcd upgrades one minor version at a time (every member on 3.5 first)" in planned.outcomes["master-1"].error
    assert {planned.outcomes[n].status for n in ("master-2", "master-3")} == {"converged"}


async def test_a_cluster_that_does_not_answer_leaves_the_version_unchecked(specs: Path) -> None:
    hosts = fleet(["master-1", "master-2", "master-3"], cluster=None)  # being built: no member answers yet
    on_master_1(specs, NEWER)
    await converged(specs, hosts)
    assert exec_start(hosts["master-1"]) == f"ExecStart={NEWER}"
