"""Faults on the testbed: a connection cut mid-write, a full disk, the daemon SIGKILLed mid-rollout,
a host cut off the network. Each ends with nothing lost: files are old or new, never partial, and the
next pass completes the work. RELIABILITY.md tabulates these.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from reconciler.settings import DaemonSettings
from reconciler.spec.watch import LONGEST_BURST_S
from testbed import Testbed, TestHost
from tests.support.cli import reconciler
from tests.support.daemon import RunningDaemon, all_converged, wait_for
from tests.support.observed import assert_files_match_specs, journal_cursor, restart_window
from tests.support.specs import BUNDLED as SPECS
from tests.support.specs import REPO
from tests.support.tuning import conf_values, running_values

pytestmark = pytest.mark.testbed


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def find_writer(path: str) -> tuple[int, int] | None:
    """(pid of the `dd` receiving the content for `path`, pid of the sshd session above it), if running now."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if cmdline(pid)[:1] != ["dd"]:
            continue
        parent = ppid(pid)
        args = cmdline(parent)
        if "reconciler-write" in args and path in args:
            return pid, ppid(parent)
    return None


IN_FLIGHT = 4 * 1024 * 1024  # more than the host's pipe (64 KiB) and sshd's channel window (2 MiB) can hold


def cut_mid_write(spec_dir: Path, path: str, size: int) -> tuple[subprocess.Popen[str], str, str] | None:
    """Start `apply`, stop its `dd` and kill the SSH session carrying it while more than IN_FLIGHT bytes of
    the content have not reached the host; None (after letting that apply finish) when the transfer was
    already too far along for the cut to lose data."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler.cli",
            "apply",
            "--host",
            "master-1",
            "--connect-attempts",
            "1",
            str(spec_dir),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        found = wait_for(
            "the write to start streaming", lambda: find_writer(path) or proc.poll() is not None, timeout=120
        )
        if found is True:
            proc.communicate(timeout=120)
            return None
        writer, session = found  # type: ignore[misc]
        try:
            os.kill(writer, signal.SIGSTOP)  # hold the transfer ...
            late = os.stat(f"/proc/{writer}/fd/1").st_size > size - IN_FLIGHT
        except (ProcessLookupError, FileNotFoundError):  # dd already had it all and exited
            late = True
        if late:  # ... too late for the cut to lose anything: let it finish, next try
            with contextlib.suppress(ProcessLookupError):
                os.kill(writer, signal.SIGCONT)
            proc.communicate(timeout=120)
            return None
        os.kill(session, signal.SIGKILL)  # ... cut the SSH session carrying it ...
        os.kill(writer, signal.SIGCONT)  # ... and let the script see its stdin end early
        out, err = proc.communicate(timeout=120)
        return proc, out, err
    finally:
        proc.kill()


def test_connection_cut_in_the_middle_of_a_write_installs_nothing(converged: Testbed, spec_copy: Path) -> None:
    m1 = converged.hosts[0]
    path = "/etc/kubernetes/big.txt"
    line = "0123456789abcdef" * 4 + "\n"
    content = line * (16 * 1024 * 1024 // 65)  # 258111 lines: rendered from a loop (a spec file is at most 4 MiB)
    template = "{% for i in range(3) %}{% for j in range(86037) %}" + line + "{% endfor %}{% endfor %}"
    (spec_copy / "big.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "reconciler/v1",
                "kind": "File",
                "metadata": {"name": "big"},
                "spec": {"path": path, "content": template},
            },
            width=1000,
        )
    )
    for _ in range(5):
        (m1.root / path.lstrip("/")).write_text("old content\n")
        cut = cut_mid_write(spec_copy, path, len(content))
        if cut:
            break
    assert cut, "in 5 tries the transfer never was cut with more than IN_FLIGHT bytes still to come"
    proc, out, err = cut
    assert proc.returncode == 1 and "master-1: FAILED" in out, out + err
    assert (m1.root / path.lstrip("/")).read_text() == "old content\n"  # the old content, not a partial new one
    # The host's script outlives the session: it sees its stdin end, finds the content incomplete and removes
    # its temp file (after the client has already reported the cut), even though its stderr is gone too.
    wait_for("the temp file's removal", lambda: not list((m1.root / "etc/kubernetes").glob(".big.txt.reconciler.*")))
    result = reconciler("apply", "--host", "master-1", str(spec_copy))  # the next pass completes it
    assert result.code == 0, result.out + result.err
    assert (m1.root / path.lstrip("/")).read_text() == content
    m1.ssh(f"rm -f {path}")


def test_full_disk_fails_the_write_cleanly_and_keeps_the_old_file(converged: Testbed, spec_copy: Path) -> None:
    m2 = converged.hosts[1]
    m2.ssh(
        "cp -a /etc/kubernetes /root/k8s-saved && mount -t tmpfs -o size=512k tmpfs /etc/kubernetes && "
        "cp -a /root/k8s-saved/. /etc/kubernetes/ && (dd if=/dev/zero of=/etc/kubernetes/filler bs=4k 2>/dev/null; true)"
    )
    try:
        before = (m2.root / "etc/kubernetes/apiserver").read_bytes()
        kube = spec_copy / "kubernetes.yaml"
        text = kube.read_text()
        args = next(line for line in text.splitlines(keepends=True) if line.startswith('    KUBE_API_ARGS="'))
        kube.write_text(text.replace(args, args + "    # " + "x" * 600_000 + "\n", 1))  # too big for the full disk
        result = reconciler("apply", "--connect-attempts", "1", str(spec_copy))
        assert result.code == 1
        assert "master-2: FAILED: write /etc/kubernetes/apiserver failed" in result.out, result.out
        assert "No space left on device" in result.out, result.out
        assert "master-1: converged" in result.out and "master-3: converged" in result.out
        assert (m2.root / "etc/kubernetes/apiserver").read_bytes() == before  # the old file, intact
        assert not list((m2.root / "etc/kubernetes").glob(".*.reconciler.*"))
        m2.ssh("rm -f /etc/kubernetes/filler")
        kube.write_text((SPECS / "kubernetes.yaml").read_text())
    finally:
        m2.ssh("umount /etc/kubernetes; rm -rf /root/k8s-saved", check=False)
    assert reconciler("apply", str(SPECS)).code == 0
    assert_files_match_specs(converged)


def test_daemon_sigkilled_mid_etcd_rollout_resumes_without_leaving_a_member_down(
    converged: Testbed, spec_copy: Path, run_daemon: Callable[..., RunningDaemon]
) -> None:
    daemon = run_daemon(spec_copy, "--resync", "600")
    wait_for("convergence", lambda: all_converged(daemon), daemon=daemon)
    cursors = {h.name: journal_cursor(h) for h in converged.hosts}
    etcd = spec_copy / "etcd.yaml"
    etcd.write_text(etcd.read_text().replace("ETCD_ELECTION_TIMEOUT: 1000", "ETCD_ELECTION_TIMEOUT: 1400"))
    wait_for(
        "the first member's turn",
        lambda: any(conf_values(h)["ETCD_ELECTION_TIMEOUT"] == "1400" for h in converged.hosts),
        daemon=daemon,
    )
    daemon.proc.kill()  # SIGKILL: no chance to finish anything
    daemon.proc.wait(30)
    # Whatever the kill interrupted, systemd on the host finishes a restart it was asked for: no member stays down.
    wait_for(
        "every member active and healthy",
        lambda: all(h.ssh("systemctl is-active etcd", check=False).stdout.strip() == "active" for h in converged.hosts),
        timeout=60,
    )
    again = run_daemon(spec_copy, "--resync", "600")
    wait_for(
        "the rollout to resume and finish",
        lambda: (
            all_converged(again)
            and all(running_values(h).get("ETCD_ELECTION_TIMEOUT") == "1400" for h in converged.hosts)
        ),
        daemon=again,
        timeout=240,
    )
    windows = sorted(restart_window(h, cursors[h.name]) for h in converged.hosts)  # once each ...
    for (_, previous_started), (next_stopping, _) in zip(windows, windows[1:]):
        assert next_stopping > previous_started, windows  # ... and never two at once, across both daemons
    again.stop()
    assert reconciler("apply", str(SPECS)).code == 0


def test_host_cut_off_the_network_converges_after_it_returns(
    converged: Testbed, spec_copy: Path, run_daemon: Callable[..., RunningDaemon]
) -> None:
    m3 = converged.hosts[2]
    link = f"vb-{m3.name}"
    daemon = run_daemon(
        spec_copy, "--resync", "1", "--backoff-base", "0.5", "--backoff-cap", "2", "--connect-attempts", "1"
    )
    wait_for("convergence", lambda: all_converged(daemon), daemon=daemon)
    subprocess.run(["ip", "link", "set", link, "down"], check=True)
    try:
        edited = time.time()
        kube = spec_copy / "kubernetes.yaml"
        kube.write_text(kube.read_text().replace('--address=127.0.0.1"', '--address=127.0.0.1 --v=3"'))
        status = wait_for(
            "master-1 and -2 to converge while master-3 is unreachable",
            lambda: (
                (s := daemon.status())
                and all(
                    s["hosts"][n]["status"] == "converged" and s["hosts"][n]["last_run"] > edited
                    for n in ("master-1", "master-2")
                )
                and s["hosts"]["master-3"]["failures"] >= 1
                and s
            ),
            daemon=daemon,
        )
        assert status["hosts"]["master-3"]["status"] == "failed"
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    wait_for(
        "master-3 to converge once it is back", lambda: all_converged(daemon, after=edited), daemon=daemon, timeout=180
    )
    assert_files_match_specs(converged, spec_copy)
    daemon.stop()
    assert reconciler("apply", str(SPECS)).code == 0


def test_hundreds_of_spec_edits_are_coalesced_into_a_few_passes(
    converged: Testbed, spec_copy: Path, run_daemon: Callable[..., RunningDaemon]
) -> None:
    daemon = run_daemon(spec_copy, "--resync", "600")
    wait_for("convergence", lambda: all_converged(daemon), daemon=daemon)
    passes_before = daemon.sample("reconciler_reconciles", "_total")
    reloads_before = daemon.sample("reconciler_spec_reloads", "_total")
    kube = spec_copy / "kubernetes.yaml"
    original = kube.read_text()
    started = time.time()
    for i in range(300):  # a script hammering the directory for ~3 s (paced load, not a wait)
        kube.write_text(original.replace('--address=127.0.0.1"', f'--address=127.0.0.1 --v={i % 7}"'))
        time.sleep(0.01)
    kube.write_text(original.replace('--address=127.0.0.1"', '--address=127.0.0.1 --v=9"'))
    wrote = time.time() - started
    wait_for(
        "the last edit to converge",
        lambda: (
            all_converged(daemon, after=started)
            and all("--v=9" in (h.root / "etc/kubernetes/scheduler").read_text() for h in converged.hosts)
        ),
        daemon=daemon,
    )
    wait_for(
        "the queue to drain",
        lambda: daemon.status()["summary"]["queue_depth"] == 0 and not daemon.status()["summary"]["in_flight"],
        daemon=daemon,
    )
    reloads = daemon.sample("reconciler_spec_reloads", "_total") - reloads_before
    passes = daemon.sample("reconciler_reconciles", "_total") - passes_before
    print(f"301 edits in {wrote:.2f}s -> {reloads:.0f} spec reloads, {passes:.0f} passes over 3 hosts")
    # A reload once the directory is quiet (or every LONGEST_BURST_S under non-stop edits), and a queue
    # that holds each host once: a handful of reloads and passes, not hundreds.
    assert 1 <= reloads <= wrote / max(LONGEST_BURST_S, 10 * DaemonSettings().debounce_ms / 1000) + 2, reloads
    assert passes <= 3 * (reloads + 1), (reloads, passes)
    kube.write_text(original)
    daemon.stop()
    assert reconciler("apply", str(SPECS)).code == 0


def etcd_healthy(host: TestHost) -> bool:
    from tests.support.observed import SSL

    return (
        '"health":"true"'
        in host.ssh(f"curl -s --max-time 2 {SSL} https://{host.address}:2379/health", check=False, timeout=15).stdout
    )


def etcd_started_at(host: TestHost, after: float) -> float:
    """When systemd first reported etcd started (Type=notify: serving) after `after`, from the host's journal."""
    out = host.ssh("journalctl -q -o short-unix -u etcd.service -g 'Started etcd.service'").stdout
    return min(t for t in (float(line.split()[0]) for line in out.splitlines()) if t > after)


def etcd_killed_at(host: TestHost, after: float) -> float:
    """When etcd's main process died of SIGKILL after `after`, by the host's journal (the real start of the outage)."""
    out = host.ssh("journalctl -q -o short-unix -u etcd.service -g 'Main process exited, code=killed'").stdout
    return min(t for t in (float(line.split()[0]) for line in out.splitlines()) if t > after)


def turns_begun(daemon: RunningDaemon, host: str) -> list[float]:
    """When the quorum guard let this host's turn begin (the daemon logs "rollout restart" right after it)."""
    from datetime import datetime

    return [
        datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        for e in daemon.events()
        if e.get("event") == "rollout restart" and e.get("host") == host
    ]


def test_member_down_mid_rollout_pauses_it_until_quorum_is_safe(
    converged: Testbed, spec_copy: Path, run_daemon: Callable[..., RunningDaemon]
) -> None:
    """Two faults in one rollout: a member host rebooted, then another member's etcd crashing (SIGKILL)."""
    daemon = run_daemon(spec_copy, "--resync", "2", "--backoff-cap", "2", "--connect-attempts", "1")
    wait_for("convergence", lambda: all_converged(daemon), daemon=daemon)
    etcd = spec_copy / "etcd.yaml"
    etcd.write_text(etcd.read_text().replace("ETCD_ELECTION_TIMEOUT: 1000", "ETCD_ELECTION_TIMEOUT: 1600"))
    first = wait_for(
        "the first member's turn",
        lambda: next((h for h in converged.hosts if conf_values(h)["ETCD_ELECTION_TIMEOUT"] == "1600"), None),
        daemon=daemon,
    )
    rebooted, crashed = [h for h in converged.hosts if h is not first]
    down: list[tuple[str, float, float]] = []

    rebooted.stop()  # reboot: power off (down for sure once this returns), power on, wait until etcd serves
    began = time.time()
    rebooted.start()
    wait_for(f"{rebooted.name}'s etcd back", lambda: etcd_healthy(rebooted), timeout=120)
    down.append((rebooted.name, began, etcd_started_at(rebooted, began)))  # the host's own clock of its return

    if conf_values(crashed)["ETCD_ELECTION_TIMEOUT"] != "1600":  # still waiting for its turn: crash its etcd
        began = time.time()
        crashed.ssh("systemctl kill -s SIGKILL etcd")
        wait_for(f"{crashed.name}'s etcd back (Restart=on-failure)", lambda: etcd_healthy(crashed), timeout=120)
        killed = etcd_killed_at(crashed, began - 1)
        down.append((crashed.name, killed, etcd_started_at(crashed, killed)))

    wait_for(
        "the rollout to finish",
        lambda: (
            all_converged(daemon)
            and all(running_values(h).get("ETCD_ELECTION_TIMEOUT") == "1600" for h in converged.hosts)
        ),
        daemon=daemon,
        timeout=240,
    )
    for name, start, end in down:  # while a member was down, the guard let no other member's turn begin
        for host in converged.hosts:
            if host.name != name:
                inside = [t for t in turns_begun(daemon, host.name) if start < t < end]
                assert not inside, (host.name, "turn began while", name, "was down", inside, start, end)
    assert all(etcd_healthy(h) for h in converged.hosts)
    daemon.stop()
    assert reconciler("apply", str(SPECS)).code == 0


def test_etcd_member_crashing_during_tuning_pauses_the_rollout(
    converged: Testbed, spec_copy: Path, tmp_path: Path, run_daemon: Callable[..., RunningDaemon]
) -> None:
    from tests.support.tuning import leader, pulse, tuning_specs, wait_past_recent_restarts

    specs = tuning_specs(spec_copy)
    daemon = run_daemon(specs, "--resync", "2", "--backoff-cap", "2", "--state-dir", str(tmp_path / "state"))
    wait_for(
        "convergence and journals followed",
        lambda: (
            all_converged(daemon)
            and all(m["journal"]["following"] for m in daemon.status()["tuning"]["members"].values())
        ),
        daemon=daemon,
    )
    wait_past_recent_restarts(converged)
    pulse(leader(converged, converged.hosts))
    overlay = wait_for("a raise", lambda: daemon.status()["tuning"]["overlay"], daemon=daemon, timeout=60)
    want = str(overlay["heartbeat_ms"])
    waiting = [h for h in converged.hosts if conf_values(h)["ETCD_HEARTBEAT_INTERVAL"] != want]
    assert waiting, "the rollout finished before a member could crash"
    victim = waiting[-1]
    asked = time.time()
    victim.ssh("systemctl kill -s SIGKILL etcd")  # crashes; Restart=on-failure brings it back after RestartSec
    wait_for(f"{victim.name}'s etcd back", lambda: etcd_healthy(victim), timeout=120)
    began = etcd_killed_at(victim, asked - 1)  # the outage by the host's own journal: from the kill ...
    ended = etcd_started_at(victim, began)  # ... until systemd says etcd serves again
    wait_for(
        "the tuning rollout to finish",
        lambda: (
            all_converged(daemon)
            and all(running_values(h).get("ETCD_HEARTBEAT_INTERVAL") == want for h in converged.hosts)
        ),
        daemon=daemon,
        timeout=240,
    )
    for host in converged.hosts:  # a turn already past the guard finishes; no new one begins meanwhile
        if host is not victim:
            inside = [t for t in turns_begun(daemon, host.name) if began < t < ended]
            assert not inside, (host.name, "turn began while", victim.name, "was down", inside)
    daemon.stop()
    assert reconciler("tuning", "clear", "--state-dir", str(tmp_path / "state")).code == 0
    assert reconciler("apply", str(SPECS)).code == 0
