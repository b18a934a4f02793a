"""etcd tuning end to end on the testbed's real 3-member etcd: overload pulses on the leader -> raised timeouts.

Overload is induced as docs/daemon.md "etcd tuning when etcd is overloaded" describes: SIGSTOP/SIGCONT pulses on
the leader's etcd, which then logs the seed's "failed to send out heartbeat on time" lines. A client writes through all
endpoints meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed import Testbed
from tests.support.cli import reconciler
from tests.support.daemon import RunningDaemon, all_converged, wait_for
from tests.support.observed import journal_cursor, restart_window
from tests.support.specs import BUNDLED as SPECS
from tests.support.tuning import (
    GRACE,
    Writer,
    conf_values,
    etcdctl,
    leader,
    pulse,
    running_values,
    tuning_specs,
    wait_past_recent_restarts,
)

pytestmark = pytest.mark.testbed


def test_overload_raises_timeouts_on_every_member_one_at_a_time(
    converged: Testbed, spec_copy: Path, tmp_path: Path, run_daemon: Callable[..., RunningDaemon]
) -> None:
    specs, state = tuning_specs(spec_copy), tmp_path / "state"
    daemon = run_daemon(specs, "--resync", "600", "--state-dir", str(state))
    wait_for(
        "convergence and journals followed",
        lambda: (
            all_converged(daemon)
            and all(m["journal"]["following"] for m in daemon.status()["tuning"]["members"].values())
        ),
        daemon=daemon,
    )
    wait_past_recent_restarts(converged)
    cursors = {h.name: journal_cursor(h) for h in converged.hosts}
    writer = Writer(converged)
    writer.start()
    try:
        pulse(leader(converged, converged.hosts))
        overlay = wait_for("a raise", lambda: daemon.status()["tuning"]["overlay"], daemon=daemon, timeout=60)
        want = {
            "ETCD_HEARTBEAT_INTERVAL": str(overlay["heartbeat_ms"]),
            "ETCD_ELECTION_TIMEOUT": str(overlay["election_ms"]),
        }
        assert overlay["heartbeat_ms"] > 100 and overlay["election_ms"] >= 10 * overlay["heartbeat_ms"]
        seen: dict[str, Any] = {}

        def raised_everywhere() -> bool:
            # Passes that finished after the decision (the daemon's clock, not when this test saw it: the first
            # member's pass may end before a slow poll here returns).
            seen["hosts"] = {
                name: (record["status"], (record["last_run"] or 0) > overlay["decided_at"])
                for name, record in daemon.status()["hosts"].items()
            }
            seen["values"] = {h.name: (conf_values(h), running_values(h)) for h in converged.hosts}
            return bool(
                all_converged(daemon, after=overlay["decided_at"])
                and all(conf == want and running == want for conf, running in seen["values"].values())
            )

        try:
            wait_for("every member to run the raised values", raised_everywhere, daemon=daemon, timeout=240)
        except AssertionError as failed:
            raise AssertionError(f"want {want}, last seen {seen}") from failed
    finally:
        writer.stop()
    # Exactly one restart per member, never two at once.
    windows = sorted(restart_window(h, cursors[h.name]) for h in converged.hosts)
    for (_, previous_started), (next_stopping, _) in zip(windows, windows[1:]):
        assert next_stopping > previous_started, windows
    # No acknowledged write lost.
    stored = set(etcdctl(converged, "get", "--prefix", "--keys-only", "/tuning-test/").stdout.split())
    assert len(writer.acked) > 20 and set(writer.acked) <= stored, (len(writer.acked), writer.failed)
    # The restarts' own warnings (if any) did not start a second round, cooldown 0 notwithstanding.
    last_start = windows[-1][1]
    wait_for(
        "the tuner to evaluate past the restarts' grace window",
        lambda: (daemon.status()["tuning"]["evaluated_at"] or 0) > last_start + GRACE + 2,
        daemon=daemon,
    )
    status = daemon.status()["tuning"]
    assert status["overlay"]["history"] == [] and status["overlay"]["heartbeat_ms"] == overlay["heartbeat_ms"]
    assert daemon.sample("reconciler_etcd_tuning_decisions", "_total", outcome="raised") == 1
    assert daemon.sample("reconciler_etcd_heartbeat_warnings", "_total", counted="true") >= 3
    assert "CPU starvation or network" in status["overlay"]["cause"]  # the testbed's WAL fsync is fast
    for host in converged.hosts:
        assert (
            daemon.sample("reconciler_etcd_heartbeat_interval_seconds", host=host.name)
            == overlay["heartbeat_ms"] / 1000
        )

    # A daemon restart keeps the overlay: nothing to change, nothing restarted.
    assert daemon.stop() == 0
    before = {h.name: h.ssh("systemctl show -p ActiveEnterTimestamp --value etcd").stdout for h in converged.hosts}
    again = run_daemon(specs, "--resync", "600", "--state-dir", str(state))
    wait_for("the restarted daemon to converge", lambda: all_converged(again), daemon=again)
    assert again.status()["tuning"]["overlay"]["heartbeat_ms"] == overlay["heartbeat_ms"]
    assert all(r["applied"] == [] for r in again.status()["hosts"].values())
    assert before == {
        h.name: h.ssh("systemctl show -p ActiveEnterTimestamp --value etcd").stdout for h in converged.hosts
    }
    plan = reconciler("plan", "--state-dir", str(state), str(specs))
    assert plan.code == 0 and f"heartbeat {overlay['heartbeat_ms']} ms" in plan.out, plan.out + plan.err
    again.stop()

    # Cleared from the CLI, the spec values come back (one member at a time).
    assert reconciler("tuning", "clear", "--state-dir", str(state)).code == 0
    assert "no etcd tuning overlay" in reconciler("tuning", "show", "--state-dir", str(state)).out
    assert reconciler("apply", str(SPECS)).code == 0
    assert all(conf_values(h)["ETCD_HEARTBEAT_INTERVAL"] == "100" for h in converged.hosts)


def test_with_a_member_down_nothing_restarts_and_status_says_why(
    converged: Testbed, spec_copy: Path, tmp_path: Path, run_daemon: Callable[..., RunningDaemon]
) -> None:
    specs, state = tuning_specs(spec_copy), tmp_path / "state"
    m1, m2, m3 = converged.hosts
    daemon = run_daemon(
        specs, "--resync", "2", "--backoff-cap", "2", "--connect-attempts", "1", "--state-dir", str(state)
    )
    wait_for("convergence", lambda: all_converged(daemon), daemon=daemon)
    wait_past_recent_restarts(converged)
    m3.stop()
    try:
        before = {h.name: h.ssh("systemctl show -p ActiveEnterTimestamp --value etcd").stdout for h in (m1, m2)}
        pulse(leader(converged, [m1, m2]))
        wait_for("a raise", lambda: daemon.status()["tuning"]["overlay"], daemon=daemon, timeout=60)
        decided = time.time()

        def blocked() -> bool:
            status = daemon.status()
            members = status["tuning"]["members"]
            return all(
                "other member(s) unhealthy: master-3" in members[n]["rollout"]
                and (status["hosts"][n]["last_run"] or 0) > decided
                for n in ("master-1", "master-2")
            )

        wait_for("/status to say why the rollout waits", blocked, daemon=daemon)
        for host in (m1, m2):
            assert host.ssh("systemctl show -p ActiveEnterTimestamp --value etcd").stdout == before[host.name]
            assert conf_values(host)["ETCD_HEARTBEAT_INTERVAL"] == "100", host.name  # untouched until its turn
    finally:
        m3.start()
    overlay = daemon.status()["tuning"]["overlay"]
    want = str(overlay["heartbeat_ms"])
    wait_for(
        "the rollout to finish once master-3 is back",
        lambda: (
            all_converged(daemon)
            and all(running_values(h).get("ETCD_HEARTBEAT_INTERVAL") == want for h in converged.hosts)
        ),
        daemon=daemon,
        timeout=240,
    )
    daemon.stop()
    assert reconciler("tuning", "clear", "--state-dir", str(state)).code == 0
    assert reconciler("apply", str(SPECS)).code == 0
