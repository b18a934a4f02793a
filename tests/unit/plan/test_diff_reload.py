"""reloadOn: a File whose change reloads its unit (systemctl reload) instead of restarting it, level-based through
the stamp each reload leaves on the host; planned, validated, and converged on in-process hosts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.engine.converge import converge
from reconciler.errors import SpecError
from reconciler.observe.snapshot import FileFact, HostSnapshot, UnitFact
from reconciler.plan.actions import Kind
from reconciler.plan.diff import plan_host
from reconciler.spec.desired import DesiredHost
from reconciler.spec.isolate import load_desired
from reconciler.transport.fake import SimHost, fake_connector
from reconciler.transport.session import Session
from tests.support.specs import copy_specs

REPO = Path(__file__).resolve().parents[3]
STARTED = 1000.0
CFG = "/etc/kubernetes/scheduler"
UNIT = "kube-scheduler.service"


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    d = copy_specs(tmp_path / "specs")
    kube = d / "kubernetes.yaml"
    kube.write_text(
        kube.read_text().replace(
            "restartOn: [kube-config, kube-scheduler-env, kubeconfig]",
            "restartOn: [kube-config, kubeconfig]\n  reloadOn: [kube-scheduler-env]",
        )
    )
    return d


def host_of(specs: Path) -> DesiredHost:
    return load_desired(specs).hosts["master-1"]


def snapshot(
    host: DesiredHost, cfg: bytes | None = None, cfg_mtime: float = STARTED - 10, stamp: float | None = None
) -> HostSnapshot:
    files = {p: FileFact(p, True, f.mode, f.owner, f.group, STARTED - 10, f.content) for p, f in host.files.items()}
    if cfg is not None:
        files[CFG] = replace(files[CFG], content=cfg, mtime=cfg_mtime)
    unit = next(u for u in host.units if u.name == UNIT)
    if stamp is not None:
        files[unit.reload_stamp] = FileFact(unit.reload_stamp, True, 0o644, "root", "root", stamp, b"")
    units = {u.name: UnitFact(u.name, "loaded", "active", "running", "enabled", STARTED) for u in host.units}
    return HostSnapshot(host.name, files, units)


def test_a_change_reloads_instead_of_restarting(specs: Path) -> None:
    host = host_of(specs)
    assert plan_host(host, snapshot(host)).empty
    actions = plan_host(host, snapshot(host, cfg=b"KUBE_SCHEDULER_ARGS=--v=9\n")).actions
    assert [(a.kind, a.target) for a in actions] == [(Kind.WRITE, CFG), (Kind.RELOAD, UNIT)]


def test_level_based_a_file_newer_than_the_last_reload_is_reloaded_once(specs: Path) -> None:
    host = host_of(specs)
    right = host.files[CFG].content
    # written (by us or by hand) after the unit started and never reloaded since: reload it
    pending = plan_host(host, snapshot(host, cfg=right, cfg_mtime=STARTED + 5)).actions
    assert [(a.kind, a.target) for a in pending] == [(Kind.RELOAD, UNIT)]
    # reloaded after the write: nothing more, pass after pass
    assert plan_host(host, snapshot(host, cfg=right, cfg_mtime=STARTED + 5, stamp=STARTED + 6)).empty


def test_a_file_in_both_lists_is_a_located_error(specs: Path) -> None:
    kube = specs / "kubernetes.yaml"
    kube.write_text(kube.read_text().replace("reloadOn: [kube-scheduler-env]", "reloadOn: [kube-config]"))
    with pytest.raises(SpecError) as err:
        load_desired(specs)
    assert any("is in restartOn too" in str(i) and "reloadOn[0]" in str(i) for i in err.value.issues)


async def test_converged_on_in_process_hosts_reloads_and_never_restarts(specs: Path) -> None:
    desired = load_desired(specs)
    hosts = {name: SimHost(name) for name in desired.hosts}
    assert {
        o.status
        for o in (await converge(desired, Session(fake_connector(hosts)), wait=1.0, interval=0.01)).outcomes.values()
    } == {"converged"}
    env = specs / "kubernetes.yaml"
    env.write_text(
        env.read_text().replace(
            'KUBE_SCHEDULER_ARGS="--leader-elect=true', 'KUBE_SCHEDULER_ARGS="--v=2 --leader-elect=true'
        )
    )
    changed = load_desired(specs)
    restarts_before = [len(h.restarted) for h in hosts.values()]
    result = await converge(changed, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert {o.status for o in result.outcomes.values()} == {"converged"}
    assert [len(h.restarted) for h in hosts.values()] == restarts_before
    assert all([u for _, u in h.reloaded] == [UNIT] for h in hosts.values())
    again = await converge(changed, Session(fake_connector(hosts)), wait=1.0, interval=0.01)
    assert all(not o.applied for o in again.outcomes.values()) and all(len(h.reloaded) == 1 for h in hosts.values())


# -- a Certificate in reloadOn: a bundle the unit reads, which reconciler renews or rotates but no File writes -------

CA = "/etc/kubernetes/ssl/ca.pem"


def with_reload_on(specs: Path, names: str) -> Path:
    kube = specs / "kubernetes.yaml"
    kube.write_text(kube.read_text().replace("reloadOn: [kube-scheduler-env]", f"reloadOn: [{names}]"))
    return specs


def test_a_certificate_named_in_reload_on_reloads_the_unit_when_its_files_change(specs: Path) -> None:
    host = host_of(with_reload_on(specs, "kube-scheduler-env, kubernetes-ssl"))
    unit = next(u for u in host.units if u.name == UNIT)
    assert CA in unit.reload_on and CFG in unit.reload_on  # the Certificate's paths beside the File's
    right = host.files[CFG].content
    seen = snapshot(host, cfg=right)
    ca = FileFact(CA, True, 0o644, "root", "root", STARTED - 10, b"")  # stat only: its mtime
    assert plan_host(host, replace(seen, files={**seen.files, CA: ca})).empty
    rotated = {**seen.files, CA: replace(ca, mtime=STARTED + 5)}  # a CA rotation's trust phase, or by hand
    actions = plan_host(host, replace(seen, files=rotated)).actions
    assert [(a.kind, a.target) for a in actions] == [(Kind.RELOAD, UNIT)] and CA in actions[0].because
    stamped = {**rotated, unit.reload_stamp: FileFact(unit.reload_stamp, True, 0o644, "root", "root", STARTED + 6, b"")}
    assert plan_host(host, replace(seen, files=stamped)).empty


def test_a_reload_on_name_of_neither_kind_and_a_certificate_in_restart_on_are_located_errors(specs: Path) -> None:
    with_reload_on(specs, "kube-scheduler-env, nothing-here")
    with pytest.raises(SpecError) as err:
        load_desired(specs)
    assert any("no File or Certificate named 'nothing-here'" in str(i) and "reloadOn[1]" in str(i) for i in err.value.issues)  # fmt: skip
    kube = specs / "kubernetes.yaml"
    kube.write_text(kube.read_text().replace("reloadOn: [kube-scheduler-env, nothing-here]", "reloadOn: [kube-scheduler-env]").replace("restartOn: [kube-config, kubeconfig]", "restartOn: [kube-config, kubeconfig, kubernetes-ssl]"))  # fmt: skip
    with pytest.raises(SpecError) as err:
        load_desired(specs)
    assert any("no File named 'kubernetes-ssl'" in str(i) and "restartOn[2]" in str(i) for i in err.value.issues)


def test_a_certificate_that_does_not_select_the_host_adds_no_path(specs: Path) -> None:
    certs = specs / "certificates.yaml"
    certs.write_text(certs.read_text().replace("hosts: {matchLabels: {role: master}}", "hosts: [master-2]", 1))
    host = host_of(with_reload_on(specs, "kube-scheduler-env, kubernetes-ssl"))
    assert next(u for u in host.units if u.name == UNIT).reload_on == (CFG,)


def test_a_certificate_path_the_specs_write_and_a_name_of_both_kinds_are_located_errors(specs: Path) -> None:
    certs = specs / "certificates.yaml"
    text = certs.read_text()
    # the scheduler's env file listed as a Certificate: restartOn/reloadOn of its File says what its change does
    certs.write_text(text.replace("    - /etc/kubernetes/ssl/admin.pem\n", f"    - /etc/kubernetes/ssl/admin.pem\n    - {CFG}\n"))  # fmt: skip
    with pytest.raises(SpecError) as err:
        load_desired(with_reload_on(specs, "kube-scheduler-env, kubernetes-ssl"))
    assert any(f"lists {CFG}, which the specs write as a file" in str(i) and "reloadOn[1]" in str(i) for i in err.value.issues)  # fmt: skip
    certs.write_text(text.replace("name: kubernetes-ssl", "name: kube-scheduler-env"))  # a File's name too
    with pytest.raises(SpecError) as err:
        load_desired(with_reload_on(specs, "kube-scheduler-env"))
    assert any("a File and a Certificate are both named 'kube-scheduler-env'" in str(i) for i in err.value.issues)


def test_a_certificate_lists_at_most_256_paths(specs: Path) -> None:
    certs = specs / "certificates.yaml"
    many = "".join(f"    - /etc/kubernetes/ssl/c{i}.pem\n" for i in range(257))
    certs.write_text(certs.read_text().replace("    - /etc/kubernetes/ssl/admin.pem\n", many))
    with pytest.raises(SpecError) as err:
        load_desired(specs)
    assert any("spec.paths" in str(i) and "256" in str(i) for i in err.value.issues), err.value.issues


def test_a_file_given_a_future_mtime_is_reloaded_for_once_not_on_every_pass(specs: Path) -> None:
    """cp -p or rsync -a from a machine whose clock is ahead: the mtime stays after every reload's stamp; the
    inode's change time (which no copy sets) says the file has not changed since the last reload."""
    host = host_of(with_reload_on(specs, "kube-scheduler-env, kubernetes-ssl"))
    unit = next(u for u in host.units if u.name == UNIT)
    seen = snapshot(host, cfg=host.files[CFG].content)
    future = STARTED + 10**6

    def with_ca(ctime: float, stamp: float | None) -> HostSnapshot:
        ca = FileFact(CA, True, 0o644, "root", "root", future, b"", stamp=f"2049:7:1200:{future:.9f}:{ctime:.9f}")
        files = {**seen.files, CA: ca}
        if stamp is not None:
            files[unit.reload_stamp] = FileFact(unit.reload_stamp, True, 0o644, "root", "root", stamp, b"")
        return replace(seen, files=files)

    copied = STARTED + 5  # when it was copied in
    assert [a.kind for a in plan_host(host, with_ca(copied, None)).actions] == [Kind.RELOAD]
    assert plan_host(host, with_ca(copied, STARTED + 6)).empty  # reloaded after the copy: not again
    assert [a.kind for a in plan_host(host, with_ca(STARTED + 7, STARTED + 6)).actions] == [Kind.RELOAD]  # copied again
