"""plan_host: writes only what differs, one daemon-reload, restarts exactly the units whose inputs changed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reconciler.observe.snapshot import FileFact, HostSnapshot, UnitFact
from reconciler.plan.actions import Kind
from reconciler.plan.diff import plan_host
from reconciler.spec.desired import DesiredHost
from tests.support.snapshots import STARTED, converged, desired, edit

SPECS = Path(__file__).resolve().parents[3] / "specs"


def test_no_drift_is_an_empty_plan() -> None:
    host = desired()
    assert plan_host(host, converged(host)).empty


def test_bare_host_gets_every_file_one_reload_enable_and_start() -> None:
    host = desired()
    bare = HostSnapshot(
        host.name,
        {p: FileFact(p, False) for p in host.files},
        {u.name: UnitFact(u.name, "not-found", "inactive", "dead", "", None) for u in host.units},
    )
    kinds = [a.kind for a in plan_host(host, bare).actions]
    assert kinds.count(Kind.WRITE) == len(host.files)
    assert kinds.count(Kind.DAEMON_RELOAD) == 1
    assert kinds.count(Kind.ENABLE) == kinds.count(Kind.START) == 4
    assert Kind.RESTART not in kinds
    assert kinds.index(Kind.DAEMON_RELOAD) > max(i for i, k in enumerate(kinds) if k is Kind.WRITE)
    assert kinds.index(Kind.DAEMON_RELOAD) < kinds.index(Kind.START)


def test_env_file_edit_restarts_only_its_reader() -> None:
    host = desired()
    snap = edit(converged(host), "/etc/kubernetes/scheduler", b"KUBE_SCHEDULER_ARGS=--v=9\n")
    plan = plan_host(host, snap)
    assert [(a.kind, a.target) for a in plan.actions] == [
        (Kind.WRITE, "/etc/kubernetes/scheduler"),
        (Kind.RESTART, "kube-scheduler.service"),
    ]
    diff = plan.actions[0].diff
    assert (
        "-KUBE_SCHEDULER_ARGS=--v=9" in diff
        and '+KUBE_SCHEDULER_ARGS="--leader-elect=true --address=127.0.0.1"' in diff
    )


def test_shared_config_restarts_all_its_readers_once() -> None:
    host = desired()
    plan = plan_host(host, edit(converged(host), "/etc/kubernetes/config", b""))
    restarts = [a.target for a in plan.actions if a.kind is Kind.RESTART]
    assert restarts == ["kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service"]


def older(host: DesiredHost, path: str) -> bytes:
    """The unit file as it was before an edit that left its [Install] section alone."""
    return host.files[path].content.replace(b"[Service]\n", b"[Service]\nNice=1\n")


def test_unit_file_change_brings_one_daemon_reload_and_its_restart() -> None:
    host = desired()
    path = "/usr/lib/systemd/system/kube-apiserver.service"
    plan = plan_host(host, edit(converged(host), path, older(host, path)))
    assert [(a.kind, a.target) for a in plan.actions] == [
        (Kind.WRITE, "/usr/lib/systemd/system/kube-apiserver.service"),
        (Kind.DAEMON_RELOAD, ""),
        (Kind.RESTART, "kube-apiserver.service"),
    ]


def test_etcd_config_waits_for_its_members_turn() -> None:
    """etcd.conf is written in the member's guarded turn, just before its restart, never earlier."""
    host = desired()
    plan = plan_host(host, edit(converged(host), "/etc/etcd/etcd.conf", b"ETCD_NAME=x\n"))
    assert plan.now() == ()
    [group] = plan.rollouts()
    assert [(a.kind, a.target) for a in group] == [(Kind.WRITE, "/etc/etcd/etcd.conf"), (Kind.RESTART, "etcd.service")]


def test_etcd_unit_file_change_reloads_inside_the_turn() -> None:
    host = desired()
    path = "/etc/systemd/system/etcd.service"
    plan = plan_host(host, edit(converged(host), path, older(host, path)))
    assert plan.now() == ()
    [group] = plan.rollouts()
    assert [a.kind for a in group] == [Kind.WRITE, Kind.DAEMON_RELOAD, Kind.RESTART]


def test_a_unit_file_written_over_the_distributions_is_enabled_after_the_reload() -> None:
    """Debian's etcd.service (in /usr/lib, enabled with its etcd2.service alias) counts as enabled until ours is
    written in /etc: then it is `indirect`. Whether it is enabled is decided on the new unit file, in the same pass."""
    host = desired()
    path = "/etc/systemd/system/etcd.service"
    files = dict(converged(host).files)
    files[path] = FileFact(path, False)
    plan = plan_host(host, HostSnapshot(host.name, files, converged(host).units))
    assert plan.now() == ()
    [group] = plan.rollouts()
    assert [(a.kind, a.target) for a in group] == [
        (Kind.WRITE, path),
        (Kind.DAEMON_RELOAD, ""),
        (Kind.ENABLE, "etcd.service"),
        (Kind.RESTART, "etcd.service"),
    ]
    assert "was enabled" in group[2].reason


def test_a_new_install_section_is_enabled_after_the_reload() -> None:
    host = desired()
    path = "/usr/lib/systemd/system/kube-apiserver.service"
    old = host.files[path].content.replace(b"WantedBy=multi-user.target", b"WantedBy=graphical.target")
    assert old != host.files[path].content
    plan = plan_host(host, edit(converged(host), path, old))
    assert [(a.kind, a.target) for a in plan.actions] == [
        (Kind.WRITE, path),
        (Kind.DAEMON_RELOAD, ""),
        (Kind.ENABLE, "kube-apiserver.service"),
        (Kind.RESTART, "kube-apiserver.service"),
    ]


def test_file_shared_with_a_plain_unit_is_written_at_once() -> None:
    host = desired()
    shared = "/etc/kubernetes/config"
    units = tuple(replace(u, restart_on=(*u.restart_on, shared)) if u.name == "etcd.service" else u for u in host.units)
    plan = plan_host(replace(host, units=units), edit(converged(host), shared, b""))
    assert plan.now()[0] == plan.actions[0] and plan.now()[0].target == shared
    [group] = plan.rollouts()
    assert [a.kind for a in group] == [Kind.RESTART]


def test_a_stopped_etcd_gets_its_config_and_a_start_without_waiting() -> None:
    host = desired()
    snap = edit(converged(host), "/etc/etcd/etcd.conf", b"ETCD_NAME=x\n")
    units = dict(snap.units)
    units["etcd.service"] = UnitFact("etcd.service", "loaded", "inactive", "dead", "enabled", None)
    plan = plan_host(host, HostSnapshot(snap.host, snap.files, units))
    assert [(a.kind, a.target) for a in plan.actions] == [
        (Kind.WRITE, "/etc/etcd/etcd.conf"),
        (Kind.START, "etcd.service"),
    ]
    assert plan.rollouts() == ()


def test_file_changed_after_unit_started_is_restarted_even_if_content_now_matches() -> None:
    """Level-based: a pass that wrote but died before restarting is finished by the next one."""
    host = desired()
    path = "/etc/kubernetes/controller-manager"
    snap = edit(converged(host), path, host.files[path].content, mtime=STARTED + 1)
    assert [(a.kind, a.target) for a in plan_host(host, snap).actions] == [
        (Kind.RESTART, "kube-controller-manager.service")
    ]


def test_sensitive_file_diff_is_redacted() -> None:
    host = desired()
    path = "/etc/kubernetes/token.csv"
    plan = plan_host(host, edit(converged(host), path, b"oldsecret,kubelet-bootstrap\n"))
    diff = plan.actions[0].diff
    assert "oldsecret" not in diff and "kubelet-bootstrap" not in diff and "redacted" in diff
    assert "redacted" in plan.render() and "0b3c2a7e" not in plan.render()


def test_mode_drift_fixes_attributes_without_restart() -> None:
    host = desired()
    snap = converged(host)
    files = dict(snap.files)
    f = files["/etc/kubernetes/token.csv"]
    files[f.path] = FileFact(f.path, True, 0o644, "root", "root", f.mtime, f.content)
    plan = plan_host(host, HostSnapshot(host.name, files, snap.units))
    assert [(a.kind, a.target) for a in plan.actions] == [(Kind.ATTRS, "/etc/kubernetes/token.csv")]


def test_stopped_unit_is_started_not_restarted() -> None:
    host = desired()
    snap = converged(host)
    units = dict(snap.units)
    units["kube-scheduler.service"] = UnitFact("kube-scheduler.service", "loaded", "failed", "failed", "enabled", None)
    plan = plan_host(host, edit(HostSnapshot(host.name, snap.files, units), "/etc/kubernetes/scheduler", b""))
    assert [(a.kind, a.target) for a in plan.actions] == [
        (Kind.WRITE, "/etc/kubernetes/scheduler"),
        (Kind.START, "kube-scheduler.service"),
    ]


DROP_IN = "/etc/systemd/system/kube-scheduler.service.d/10-limits.conf"


def with_drop_in(host: DesiredHost, etcd: bool = False) -> DesiredHost:
    """The host with a drop-in File for kube-scheduler (or etcd, a rollout unit) in its unit's restartOn."""
    unit = "etcd.service" if etcd else "kube-scheduler.service"
    path = DROP_IN.replace("kube-scheduler.service", unit)
    content = b"[Service]\nLimitNOFILE=65536\n"
    files = {**host.files, path: replace(next(iter(host.files.values())), path=path, content=content)}
    units = tuple(replace(u, restart_on=(*u.restart_on, path)) if u.name == unit else u for u in host.units)
    return replace(host, files=files, units=units)


def test_a_drop_in_change_reloads_systemd_before_restarting_its_unit() -> None:
    host = with_drop_in(desired())
    snap = edit(converged(host), DROP_IN, b"[Service]\nLimitNOFILE=1024\n")
    assert [(a.kind, a.target) for a in plan_host(host, snap).actions] == [
        (Kind.WRITE, DROP_IN),
        (Kind.DAEMON_RELOAD, ""),
        (Kind.RESTART, "kube-scheduler.service"),
    ]
    comment = edit(converged(host), DROP_IN, b"# limits\n[Service]\nLimitNOFILE=65536\n", mtime=STARTED - 5)
    actions = plan_host(host, comment).actions
    assert [a.kind for a in actions] == [Kind.WRITE] and "format only" in actions[0].reason


def test_a_rollout_units_drop_in_is_reloaded_in_its_turn() -> None:
    host = with_drop_in(desired(), etcd=True)
    path = DROP_IN.replace("kube-scheduler.service", "etcd.service")
    actions = plan_host(host, edit(converged(host), path, b"[Service]\nLimitNOFILE=1\n")).actions
    assert [(a.kind, a.target, a.rollout) for a in actions] == [
        (Kind.WRITE, path, True),
        (Kind.DAEMON_RELOAD, "", True),
        (Kind.RESTART, "etcd.service", True),
    ]
