"""tuning.policy, pure: when to raise etcd's heartbeat and election timeouts (enough warnings on one member within the
window, a burst judged whole, restarts ignored), by how much, never lower, never past the ceiling or within the
cooldown; and the suspected cause."""

from __future__ import annotations

from reconciler.tuning.etcdlog import HeartbeatWarning
from reconciler.tuning.policy import BURST_LONGEST_S, TuningPolicy, decide, suspected_cause


def warnings(member: str, n: int, at: float, gap: float = 601.8) -> dict[str, list[HeartbeatWarning]]:
    return {member: [HeartbeatWarning(at + i * 0.1, 100.0, gap) for i in range(n)]}


def test_policy_raises_to_cover_the_worst_gap_with_margin() -> None:
    d = decide(TuningPolicy(), 1000.0, warnings("m1", 3, 990.0), [], (100, 1000), None)
    assert d.outcome == "raised"
    assert (d.heartbeat_ms, d.election_ms) == (500, 5000)  # 601.8 x 1.5 / 2 = 451 -> 500 (rounded up to 50)


def test_policy_needs_n_warnings_on_one_member_within_the_window() -> None:
    p = TuningPolicy(warnings=3, window_seconds=60)
    spread = {**warnings("m1", 2, 990.0), **warnings("m2", 2, 990.0)}
    assert decide(p, 1000.0, spread, [], (100, 1000), None).outcome == "quiet"
    assert decide(p, 1000.0, warnings("m1", 3, 900.0), [], (100, 1000), None).outcome == "quiet"  # outside the window


def test_a_burst_is_judged_whole_once_it_pauses_or_has_gone_on_long_enough() -> None:
    p = TuningPolicy()
    first = warnings("m1", 3, 999.0, gap=480)  # the burst's first warnings, the last 0.8 s ago
    waiting = decide(p, 1000.0, first, [], (100, 1000), None)
    assert waiting.outcome == "quiet" and "would raise heartbeat to 400 ms" in waiting.reason
    # Its worst warning came last: the one raise covers it (a decision on the first three would have
    # raised to 400 ms, and this one to 500 ms, a second rolling restart of every member).
    whole = {"m1": [*first["m1"], HeartbeatWarning(1000.5, 100.0, 620)]}
    assert decide(p, 1001.0, whole, [], (100, 1000), None).outcome == "quiet"
    raised = decide(p, 1002.6, whole, [], (100, 1000), None)
    assert (raised.outcome, raised.heartbeat_ms) == ("raised", 500)
    # Overload that never pauses: decided once the warnings have gone on for BURST_LONGEST_S.
    steady = {"m1": [HeartbeatWarning(1000.0 + i * 0.5, 100.0, 480) for i in range(int(BURST_LONGEST_S * 2) + 1)]}
    assert decide(p, 1000.0 + BURST_LONGEST_S - 0.5, steady, [], (100, 1000), None).outcome == "quiet"
    assert decide(p, 1000.0 + BURST_LONGEST_S + 0.1, steady, [], (100, 1000), None).outcome == "raised"
    # A warning near a restart neither counts nor keeps a burst open.
    near = decide(TuningPolicy(restart_grace_seconds=0.2), 1001.5, whole, [(1000.4, 1000.45)], (100, 1000), None)
    assert (near.outcome, near.heartbeat_ms, near.ignored) == ("raised", 400, 1)


def test_warnings_around_restarts_do_not_count() -> None:
    p = TuningPolicy(restart_grace_seconds=30)
    w = warnings("m1", 5, 990.0)
    assert decide(p, 1000.0, w, [(980.0, 985.0)], (100, 1000), None).outcome == "quiet"
    assert decide(p, 1000.0, w, [(995.0, None)], (100, 1000), None).ignored == 5  # a restart still open
    assert decide(p, 1000.0, w, [(900.0, 905.0)], (100, 1000), None).outcome == "raised"


def test_policy_only_raises_and_respects_cooldown_and_ceiling() -> None:
    p = TuningPolicy(max_heartbeat_ms=300, cooldown_seconds=600)
    assert decide(p, 1000.0, warnings("m1", 3, 990.0, gap=250), [], (200, 2000), None).outcome == "covered"
    assert decide(p, 1000.0, warnings("m1", 3, 990.0), [], (100, 1000), 700.0).outcome == "cooldown"
    capped = decide(p, 1000.0, warnings("m1", 3, 990.0), [], (100, 1000), 100.0)
    assert (capped.outcome, capped.heartbeat_ms, capped.election_ms) == ("raised", 300, 3000)
    assert decide(p, 1000.0, warnings("m1", 3, 990.0), [], (300, 3000), None).outcome == "ceiling"
    # Never lowers an election timeout the operator set higher; never above 50000 ms; always >= 5 x heartbeat.
    high = decide(TuningPolicy(), 1000.0, warnings("m1", 3, 990.0), [], (100, 9000), None)
    assert (high.heartbeat_ms, high.election_ms) == (500, 9000)
    huge = decide(
        TuningPolicy(max_heartbeat_ms=10000, election_multiplier=50),
        1000.0,
        warnings("m1", 3, 990.0, gap=20000),
        [],
        (100, 1000),
        None,
    )
    assert huge.election_ms == 50000 and huge.heartbeat_ms is not None and huge.election_ms >= 5 * huge.heartbeat_ms


def test_suspected_cause_from_wal_fsync_latency() -> None:
    assert suspected_cause({"m1": 25.0, "m2": 1.0}).startswith("slow disk")
    assert suspected_cause({"m1": 1.0}).startswith("CPU starvation or network")
    assert "not available" in suspected_cause({})
