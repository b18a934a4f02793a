"""End to end on 3 real systemd hosts: converge from bare, idempotence, drift repair, reloads, failures.

The tests share one testbed and run in file order; each leaves the hosts converged on the bundled specs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed import Testbed
from tests.support.cli import reconciler
from tests.support.observed import (
    SSL,
    UNITS,
    all_starts,
    assert_files_match_specs,
    daemon_reloads_since,
    journal_cursor,
    restart_window,
)
from tests.support.specs import BUNDLED as SPECS
from tests.support.specs import REPO

pytestmark = pytest.mark.testbed


def test_converge_from_bare_hosts(testbed: Testbed) -> None:
    for host in testbed.hosts:  # as Debian's etcd-server package leaves a host: its own etcd.service enabled
        host.ssh("systemctl enable etcd.service")
        assert host.ssh("systemctl is-enabled etcd.service").stdout.strip() == "enabled"
        assert host.ssh("test ! -e /etc/systemd/system/etcd.service", check=False).returncode == 0
    plan = reconciler("plan", str(SPECS))
    assert plan.code == 2, plan.out + plan.err
    assert "+ start etcd.service" in plan.out and "<sensitive:" in plan.out
    assert "+ enable etcd.service: unit file rewritten (was enabled)" in plan.out  # ours replaces Debian's
    assert "0b3c2a7e5f1d4c6b9a8e7d6c5b4a3f2e" not in plan.out  # the token never shows

    result = reconciler("apply", str(SPECS))
    assert result.code == 0, result.out + result.err
    for host in testbed.hosts:
        assert f"{host.name}: converged" in result.out
        active = host.ssh("systemctl is-active " + " ".join(UNITS)).stdout.split()
        assert active == ["active"] * 4, (host.name, active)
        enabled = host.ssh("systemctl is-enabled " + " ".join(UNITS)).stdout.split()
        assert enabled == ["enabled"] * 4, (host.name, enabled)
        for port in ("10251", "10252"):
            assert host.ssh(f"curl -sf http://127.0.0.1:{port}/healthz").stdout == "ok"
        assert host.ssh(f"curl -sf http://{host.address}:8080/healthz").stdout == "ok"
        assert '"health":"true"' in host.ssh(f"curl -sf {SSL} https://{host.address}:2379/health").stdout
    endpoints = ",".join(f"https://{h.address}:2379" for h in testbed.hosts)
    members = testbed.hosts[0].ssh(f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} {SSL} member list").stdout
    assert len(members.strip().splitlines()) == 3, members
    assert "Healthy" in result.out and "Unhealthy" not in result.out
    assert_files_match_specs(testbed)


def test_second_apply_changes_nothing(converged: Testbed) -> None:
    before = all_starts(converged)
    cursors = {h.name: journal_cursor(h) for h in converged.hosts}
    result = reconciler("apply", str(SPECS))
    assert result.code == 0, result.out + result.err
    assert result.out.count("converged (0 change(s) applied)") == 3, result.out
    assert all_starts(converged) == before
    assert all(daemon_reloads_since(h, cursors[h.name]) == 0 for h in converged.hosts)
    assert reconciler("plan", str(SPECS)).code == 0


def test_hand_edit_is_shown_as_that_diff_and_restored(converged: Testbed) -> None:
    m2 = converged.hosts[1]
    m2.ssh(
        "sed -i 's/--leader-elect=true --address=127.0.0.1/--leader-elect=false --address=127.0.0.1/' /etc/kubernetes/scheduler"
    )
    before = all_starts(converged)

    plan = reconciler("plan", str(SPECS))
    assert plan.code == 2, plan.out + plan.err
    assert "master-1: no changes" in plan.out and "master-3: no changes" in plan.out
    section = plan.out.split("master-2:", 1)[1].split("master-3:", 1)[0]
    assert "2 change(s)" in section
    assert "~ write /etc/kubernetes/scheduler" in section
    assert '-KUBE_SCHEDULER_ARGS="--leader-elect=false --address=127.0.0.1"' in section
    assert '+KUBE_SCHEDULER_ARGS="--leader-elect=true --address=127.0.0.1"' in section
    assert "* restart kube-scheduler.service" in section

    result = reconciler("apply", str(SPECS))
    assert result.code == 0, result.out + result.err
    after = all_starts(converged)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {("master-2", "kube-scheduler.service")}
    assert_files_match_specs(converged)
    backups = m2.ssh("cat /var/backups/reconciler/etc/kubernetes/scheduler/*").stdout
    assert "--leader-elect=false" in backups


def test_unit_file_changes_bring_exactly_one_daemon_reload(converged: Testbed, spec_copy: Path) -> None:
    k8s = spec_copy / "kubernetes.yaml"
    text = k8s.read_text()
    for name in ("Kubernetes Controller Manager", "Kubernetes Scheduler Plugin"):
        text = text.replace(f"Description={name}\n", f"Description={name}\n    Environment=RECONCILER_TEST=1\n")
    k8s.write_text(text)
    before = all_starts(converged)
    cursors = {h.name: journal_cursor(h) for h in converged.hosts}

    result = reconciler("apply", str(spec_copy))
    assert result.code == 0, result.out + result.err
    after = all_starts(converged)
    for host in converged.hosts:
        assert daemon_reloads_since(host, cursors[host.name]) == 1, host.name
        assert before[(host.name, "etcd.service")] == after[(host.name, "etcd.service")]
        assert before[(host.name, "kube-apiserver.service")] == after[(host.name, "kube-apiserver.service")]
        for unit in ("kube-controller-manager.service", "kube-scheduler.service"):
            assert before[(host.name, unit)] != after[(host.name, unit)]
    assert_files_match_specs(converged, spec_copy)

    restored = reconciler("apply", str(SPECS))
    assert restored.code == 0, restored.out + restored.err
    assert_files_match_specs(converged)


def test_etcd_restarts_one_member_at_a_time(converged: Testbed, spec_copy: Path) -> None:
    etcd = spec_copy / "etcd.yaml"
    etcd.write_text(etcd.read_text().replace("ETCD_ELECTION_TIMEOUT: 1000", "ETCD_ELECTION_TIMEOUT: 1500"))
    cursors = {h.name: journal_cursor(h) for h in converged.hosts}
    result = reconciler("apply", str(spec_copy))
    assert result.code == 0, result.out + result.err
    windows = sorted(restart_window(h, cursors[h.name]) for h in converged.hosts)
    for (_, previous_started), (next_stopping, _) in zip(windows, windows[1:]):
        assert next_stopping > previous_started, windows  # never two members down at once
    for host in converged.hosts:
        assert "ETCD_ELECTION_TIMEOUT=1500" in host.ssh("cat /etc/etcd/etcd.conf").stdout
        assert '"health":"true"' in host.ssh(f"curl -sf {SSL} https://{host.address}:2379/health").stdout
    assert reconciler("apply", str(SPECS)).code == 0


def test_quorum_guard_refuses_while_another_member_is_unhealthy(converged: Testbed, spec_copy: Path) -> None:
    m3 = converged.hosts[2]
    # A change for master-1 and -2 only (master-3, the unhealthy one, has none): a file etcd restarts on, given to
    # the hosts labelled touched (timeouts differing between members would be refused: every member runs the same)
    inventory = spec_copy / "inventory.yaml"
    inventory.write_text(
        inventory.read_text().replace(
            "labels: {role: master, etcd: member}", 'labels: {role: master, etcd: member, touched: "yes"}', 2
        )
    )
    etcd = spec_copy / "etcd.yaml"
    etcd.write_text(
        etcd.read_text().replace("restartOn: [etcd-conf]", "restartOn: [etcd-conf, etcd-note]")
        + """
---
apiVersion: reconciler/v1
kind: File
metadata: {name: etcd-note}
spec:
  path: /etc/etcd/note.conf
  hosts: {matchLabels: {touched: "yes"}}
  content: "a change for this member\\n"
"""
    )
    before = all_starts(converged)
    pid = m3.ssh("systemctl show -p MainPID --value etcd").stdout.strip()
    m3.ssh(f"kill -STOP {pid}")  # master-3's etcd stops answering: its health check fails
    try:
        result = reconciler("apply", "--wait", "5", str(spec_copy))
    finally:
        m3.ssh(f"kill -CONT {pid}", check=False)
    assert result.code == 1
    assert "master-1: FAILED: not restarting etcd.service: other member(s) unhealthy: master-3" in result.out
    after = all_starts(converged)
    for name in ("master-1", "master-2"):
        assert after[(name, "etcd.service")] == before[(name, "etcd.service")], name
        assert not (converged.host(name).root / "etc/etcd/note.conf").exists(), name  # a refused turn writes nothing
    # Once master-3 answers again, the same apply finishes the rollout.
    assert reconciler("apply", str(spec_copy)).code == 0
    assert all((converged.host(n).root / "etc/etcd/note.conf").exists() for n in ("master-1", "master-2"))
    for name in ("master-1", "master-2"):
        converged.host(name).ssh("rm -f /etc/etcd/note.conf")
    assert reconciler("apply", str(SPECS)).code == 0


def test_wrong_host_key_is_refused(converged: Testbed, spec_copy: Path) -> None:
    real = converged.known_hosts_path.read_text().splitlines()
    m1_key = next(line for line in real if line.startswith("198.18.0.11 ")).split(" ", 1)[1]
    m2_key = next(line for line in real if line.startswith("198.18.0.12 ")).split(" ", 1)[1]
    forged = spec_copy.parent / "known_hosts"
    forged.write_text("\n".join(line.replace(m1_key, m2_key) for line in real) + "\n")
    inventory = spec_copy / "inventory.yaml"
    inventory.write_text(inventory.read_text().replace(str(converged.known_hosts_path), str(forged)))

    result = reconciler("plan", str(spec_copy))
    assert result.code == 1
    assert "master-1: FAILED" in result.out and "host key verification failed" in result.out
    assert "master-2: no changes" in result.out and "master-3: no changes" in result.out
    assert "master-1" in result.err


def test_stopped_host_fails_while_the_others_converge(converged: Testbed) -> None:
    m1, m3 = converged.hosts[0], converged.hosts[2]
    m1.ssh("echo '# drift' >> /etc/kubernetes/controller-manager")
    m3.stop()
    try:
        result = reconciler("apply", "--connect-attempts", "2", str(SPECS))
        assert result.code == 1
        assert "master-3: FAILED" in result.out
        assert "master-1: converged (2 change(s) applied)" in result.out
        assert "master-2: converged (0 change(s) applied)" in result.out
        assert "1 of 3 host(s) failed: master-3" in result.err
    finally:
        m3.start()
    result = reconciler("apply", str(SPECS))
    assert result.code == 0, result.out + result.err
    assert_files_match_specs(converged)


HOSTILE_ENV = {
    "SUBST": "$(touch /tmp/pwned-a) `touch /tmp/pwned-b` 'q' \\ ; touch /tmp/pwned-c",
    "DOLLAR": "$HOME ${PATH} \\$x",
    "QUOTES": '"double" \'single\' \\" mixed',
    "SPACES": "  leading and trailing  ",
    "TAB": "a\tb",
    "UNICODE": "é∂ƒ漢字 \u202e rtl",
    "EQUALS": "a=b=c",
    "HASH": "#not a comment ; nor this",
    "EMPTY": "",
    "BACKSLASH_END": "ends with a backslash\\",
    "SEMI": "; reboot",
}


def test_hostile_values_reach_hosts_as_data_not_commands(converged: Testbed, spec_copy: Path) -> None:
    import yaml

    docs = [
        {
            "apiVersion": "reconciler/v1",
            "kind": "File",
            "metadata": {"name": "hostile"},
            "spec": {"path": "/etc/kubernetes/hostile.env", "env": HOSTILE_ENV},
        },
        {
            "apiVersion": "reconciler/v1",
            "kind": "File",
            "metadata": {"name": "hostile-content"},
            "spec": {
                "path": "/etc/kubernetes/hostile.txt",
                "content": "'; touch /tmp/pwned-d; echo '\n$(touch /tmp/pwned-e)\n",
            },
        },
    ]
    (spec_copy / "hostile.yaml").write_text(yaml.safe_dump_all(docs, allow_unicode=True))
    result = reconciler("apply", str(spec_copy))
    assert result.code == 0, result.out + result.err
    assert_files_match_specs(converged, spec_copy)
    for host in converged.hosts:
        assert host.ssh("ls /tmp/pwned-* 2>/dev/null", check=False).stdout == "", host.name
    # systemd reads back exactly the intended values (what every unit with this EnvironmentFile gets).
    out = subprocess.run(
        [
            *converged.hosts[0].ssh_args(),
            "systemd-run --pipe --wait --quiet -p EnvironmentFile=/etc/kubernetes/hostile.env /usr/bin/env -0",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    seen = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    for key, value in HOSTILE_ENV.items():
        assert seen.get(key) == value, (key, seen.get(key), value)
    for host in converged.hosts:
        host.ssh("rm -f /etc/kubernetes/hostile.env /etc/kubernetes/hostile.txt")


def test_env_value_with_a_nul_byte_is_refused(spec_copy: Path) -> None:
    (spec_copy / "nul.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: File\nmetadata: {name: nul}\nspec:\n"
        '  path: /etc/kubernetes/nul.env\n  env:\n    A: "x\\0y"\n'
    )
    result = reconciler("validate", str(spec_copy))
    assert result.code == 1 and "nul.yaml:7: spec.env.A: value must not contain a NUL byte" in result.err, result.err


def test_host_that_comes_back_during_backoff_converges(converged: Testbed) -> None:
    m3 = converged.hosts[2]
    m3.ssh("echo '# drift' >> /etc/kubernetes/scheduler")
    m3.stop()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "apply", "--connect-attempts", "8", str(SPECS)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait for the first failed attempt on master-3, then power it on
            if "ssh connect retry" in line and "master-3" in line:
                break
        else:
            raise AssertionError("no retry was logged for master-3")
        m3.start()
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    # the drift is a comment, and kube-scheduler started after it (the host booted): rewritten, not restarted
    assert "master-3: converged (1 change(s) applied)" in out
    assert "format only, no restart: kube-scheduler.service" in out
