"""Rollouts that cannot hurt, on the testbed: etcd's own rules refused at validate; a member (and a
kube-apiserver) that fails on new config is rolled back to its previous config, with the value and the
component's own error line reported; the daemon does not try the same config again until the specs change.
RELIABILITY.md tabulates these.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed import Testbed, TestHost
from tests.support.cli import reconciler
from tests.support.daemon import RunningDaemon, all_converged, wait_for
from tests.support.tuning import Writer, etcdctl

pytestmark = pytest.mark.testbed

BAD_DATA_DIR = "/etc/hostname/default.etcd"  # passes every static rule; etcd cannot make a directory under a file


def without_tuning(spec_dir: Path) -> Path:
    etcd = spec_dir / "etcd.yaml"
    text = etcd.read_text()
    etcd.write_text(text[: text.index("# When etcd logs")].rstrip().removesuffix("---"))
    return spec_dir


def etcd_state(host: TestHost) -> tuple[str, str, str]:
    """(etcd.conf, MainPID, ActiveEnterTimestamp): all three unchanged means the member was never touched."""
    pid = host.ssh("systemctl show -p MainPID,ActiveEnterTimestamp --value etcd").stdout.split("\n")
    return (host.root / "etc/etcd/etcd.conf").read_text(), pid[0], pid[1]


def healthy_members(bed: Testbed) -> int:
    out = etcdctl(bed, "endpoint", "health", timeout=20).stdout + etcdctl(bed, "endpoint", "health", timeout=20).stderr
    return out.count("is healthy")


def starts_since(host: TestHost, unit: str, since: float) -> int:
    out = host.ssh(f"journalctl -q -o cat _PID=1 --since=@{since:.0f} --no-pager", check=False).stdout
    description = {"etcd.service": "Etcd Server", "kube-apiserver.service": "Kubernetes API Service"}[unit]
    return len(
        re.findall(rf"^Started ({re.escape(unit)} - )?{description}", out, re.M)
    )  # systemd 252: "unit - description"


def test_heartbeat_420_with_election_1000_is_refused_at_validate(spec_copy: Path) -> None:
    specs = without_tuning(spec_copy)
    etcd = specs / "etcd.yaml"
    etcd.write_text(etcd.read_text().replace("ETCD_HEARTBEAT_INTERVAL: 100", "ETCD_HEARTBEAT_INTERVAL: 420"))
    result = reconciler("validate", str(specs))
    assert result.code == 1
    assert (
        "etcd.yaml:29: spec.env.ETCD_ELECTION_TIMEOUT: ETCD_ELECTION_TIMEOUT=1000 on host 'master-1': election "
        "timeout 1000 ms is below 5 x the heartbeat interval 420 ms: etcd refuses to start" in result.out + result.err
    )
    plan = reconciler("plan", str(specs))  # nothing is observed or written with such a spec
    assert plan.code == 1 and "master-1: no changes" not in plan.out


def test_a_member_failing_on_new_config_is_rolled_back_and_the_others_are_never_touched(
    converged: Testbed, spec_copy: Path
) -> None:
    specs = without_tuning(spec_copy)
    etcd = specs / "etcd.yaml"
    etcd.write_text(
        etcd.read_text().replace("ETCD_DATA_DIR: /var/lib/etcd/default.etcd", f"ETCD_DATA_DIR: {BAD_DATA_DIR}")
    )
    assert reconciler("validate", str(specs)).code == 0  # nothing static to object to
    before = {h.name: etcd_state(h) for h in converged.hosts}
    writer = Writer(converged)
    writer.start()
    try:
        began = time.time()
        result = reconciler("apply", str(specs), timeout=900)
    finally:
        writer.stop()
    out = result.out + result.err
    assert result.code == 1, out
    rolled = [h for h in converged.hosts if f"{h.name}: ROLLED BACK:" in out]
    assert len(rolled) == 1, out  # the first member's turn failed; the rollout stopped there
    first = rolled[0]
    assert f"ETCD_DATA_DIR={BAD_DATA_DIR}" in out  # the value
    assert "rolled back to the previous config, healthy again" in out
    said = re.search(r"etcd\.service said: (.*)", out)
    # etcd's own line. Which one depends on how far etcd gets with an empty data dir: a member whose ID is the one
    # its peer URLs give (the cluster as created) fails on the directory ("error listing data dir: ..."); a member
    # that was replaced earlier on this shared testbed (test_etcd_replace: a new ID from `member add`) fails first on
    # the cluster's membership ("failed to find member ... in cluster ..."). Either is etcd naming why it did not start.
    assert said and (f"data dir: {BAD_DATA_DIR}" in said.group(1) or "failed to find member" in said.group(1)), out
    assert etcd_state(first)[0] == before[first.name][0]  # its config restored byte for byte
    assert starts_since(first, "etcd.service", began) >= 1
    for other in converged.hosts:
        if other is not first:
            assert etcd_state(other) == before[other.name], other.name  # config, process, start time: untouched
    assert healthy_members(converged) == 3
    missing = [k for k in writer.acked if etcdctl(converged, "get", k, "--print-value-only").stdout.strip() == ""]
    assert writer.acked and not missing, f"{len(missing)} acknowledged writes lost"


def test_the_daemon_holds_a_rolled_back_config_until_the_specs_change(
    converged: Testbed, spec_copy: Path, run_daemon: Callable[..., RunningDaemon]
) -> None:
    specs = without_tuning(spec_copy)
    etcd = specs / "etcd.yaml"
    good = etcd.read_text()
    etcd.write_text(good.replace("ETCD_DATA_DIR: /var/lib/etcd/default.etcd", f"ETCD_DATA_DIR: {BAD_DATA_DIR}"))
    began = time.time()
    state = spec_copy.parent / "state"  # what is held is kept here: a restarted daemon must not try it again
    args = ("--resync", "1", "--backoff-base", "0.5", "--backoff-cap", "1", "--state-dir", str(state))
    daemon = run_daemon(specs, *args)
    status = wait_for(
        "a member rolled back",
        lambda: (s := daemon.status()) and any(h["status"] == "rolled-back" for h in s["hosts"].values()) and s,
        daemon=daemon,
        timeout=300,
    )
    name = next(n for n, h in status["hosts"].items() if h["status"] == "rolled-back")
    first = next(h for h in converged.hosts if h.name == name)
    assert BAD_DATA_DIR in status["hosts"][name]["error"]
    assert daemon.sample("reconciler_rolled_back", host=name) == 1
    assert daemon.sample("reconciler_rollbacks", "_total", host=name, unit="etcd.service") == 1
    passes = daemon.sample("reconciler_reconciles", "_total", host=name, result="rolled-back")
    wait_for(
        "5 more passes over the held member",
        lambda: daemon.sample("reconciler_reconciles", "_total", host=name, result="rolled-back") >= passes + 5,
        daemon=daemon,
    )
    assert starts_since(first, "etcd.service", began) == 1  # the rollback's start only: no restart loop
    assert daemon.sample("reconciler_rollbacks", "_total", host=name, unit="etcd.service") == 1
    assert "held: not tried again" in daemon.status()["hosts"][name]["error"]
    assert daemon.stop() == 0
    daemon = run_daemon(specs, *args)  # a new daemon on the same state dir: the held config stays held
    wait_for(
        "3 passes of the new daemon over the held member",
        lambda: daemon.sample("reconciler_reconciles", "_total", host=name, result="rolled-back") >= 3,
        daemon=daemon,
    )
    assert starts_since(first, "etcd.service", began) == 1  # still only the rollback's start
    assert "held: not tried again" in daemon.status()["hosts"][name]["error"]
    fixed = time.time()
    etcd.write_text(good)  # the specs change (back): the member converges, nothing left held
    wait_for("every host converged after the fix", lambda: all_converged(daemon, after=fixed), daemon=daemon)
    assert daemon.sample("reconciler_rolled_back", host=name) == 0
    assert healthy_members(converged) == 3


def test_a_kube_apiserver_flag_that_makes_it_exit_is_rolled_back(converged: Testbed, spec_copy: Path) -> None:
    kube = spec_copy / "kubernetes.yaml"
    text = kube.read_text()
    assert 'KUBE_API_ARGS="' in text
    kube.write_text(text.replace('KUBE_API_ARGS="', 'KUBE_API_ARGS="--insecure-port=eighty ', 1))
    m2 = converged.hosts[1]
    before = (m2.root / "etc/kubernetes/apiserver").read_text()
    result = reconciler("apply", "--host", "master-2", str(spec_copy))
    out = result.out + result.err
    assert result.code == 1 and "master-2: ROLLED BACK: kube-apiserver.service failed on the new config" in out, out
    assert "--insecure-port=eighty" in out
    assert "invalid int value: 'eighty'" in out  # the stand-in's own argparse error, read from its journal
    assert (m2.root / "etc/kubernetes/apiserver").read_text() == before
    assert m2.ssh("systemctl is-active kube-apiserver").stdout.strip() == "active"
    assert reconciler("plan", "--host", "master-2", str(spec_copy)).code == 2  # the spec still asks for it
