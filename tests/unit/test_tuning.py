"""etcd tuning, pure parts: log parsing (3.4 text, 3.5 JSON, garbage), the policy, the overlay, cursor resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from reconciler.errors import SpecError
from reconciler.spec.isolate import load_desired
from reconciler.tuning import overlay as store
from reconciler.tuning.etcdlog import HeartbeatWarning, Restart, go_duration_ms, parse_entry, parse_message
from reconciler.tuning.follower import JournalFollower, histogram_quantile, parse_etcd_metrics
from reconciler.tuning.policy import BURST_LONGEST_S, TuningPolicy, decide, suspected_cause

SPECS = Path(__file__).resolve().parents[2] / "specs"
V34 = "failed to send out heartbeat on time (exceeded the 100ms timeout for 401.80886ms, to e23bf6fd185b2dc5)"
V35 = json.dumps(
    {
        "level": "warn",
        "ts": "2026-11-27T03:00:00.000Z",
        "caller": "etcdserver/raft.go:369",
        "msg": "leader failed to send out heartbeat on time; took too long, leader is overloaded likely from slow disk",
        "to": "e23bf6fd185b2dc5",
        "heartbeat-interval": "100ms",
        "expected-duration": "200ms",
        "exceeded-duration": "401.80886ms",
    }
)


def entry(message: str, cursor: str, at: float = 1000.0, pid: str = "321", ident: str = "etcd") -> str:
    return json.dumps(
        {
            "__CURSOR": cursor,
            "__REALTIME_TIMESTAMP": str(int(at * 1e6)),
            "_PID": pid,
            "SYSLOG_IDENTIFIER": ident,
            "MESSAGE": message,
        }
    )


@pytest.mark.parametrize(
    "text,ms",
    [
        ("100ms", 100),
        ("401.80886ms", 401.80886),
        ("1.5s", 1500),
        ("1m2.5s", 62500),
        ("250µs", 0.25),
        ("7ns", 7e-6),
        ("", None),
        ("ms", None),
        ("10 ms", None),
        ("1x", None),
    ],
)
def test_go_durations(text: str, ms: float | None) -> None:
    assert go_duration_ms(text) == (pytest.approx(ms) if ms is not None else None)


def test_both_log_formats_give_the_same_heartbeat_gap() -> None:
    for message in (V34, V35, "etcdserver: " + V34):
        warning = parse_message(message, 5.0)
        assert warning == HeartbeatWarning(5.0, 100.0, pytest.approx(601.80886)), message
        assert warning is not None and warning.late_ms == pytest.approx(401.80886)
    assert parse_message("server is likely overloaded", 5.0) is None
    assert parse_message("heartbeat = 100ms", 5.0) is None


def test_journal_entries_carry_cursor_warnings_and_restarts() -> None:
    assert parse_entry(entry(V34, "c1"), "etcd.service") == (
        "c1",
        HeartbeatWarning(1000.0, 100.0, pytest.approx(601.80886)),
    )
    assert parse_entry(entry("Stopping etcd.service - Etcd Server...", "c2", 7, "1", "systemd"), "etcd.service") == (
        "c2",
        Restart(7.0, "stopping"),
    )
    assert parse_entry(entry("Started etcd.service - Etcd Server.", "c3", 9, "1", "systemd"), "etcd.service") == (
        "c3",
        Restart(9.0, "started"),
    )
    binary = json.dumps({"__CURSOR": "c4", "__REALTIME_TIMESTAMP": "1", "MESSAGE": list(V34.encode())})
    assert isinstance(parse_entry(binary, "etcd.service")[1], HeartbeatWarning)


def test_random_and_truncated_lines_never_raise() -> None:
    rng = random.Random(7)
    samples = [entry(V34, "c"), entry(V35, "c"), V34, V35]
    for _ in range(3000):
        base = rng.choice(samples)
        cut = base[: rng.randrange(len(base) + 1)]
        noise = "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(20)))
        for line in (cut, noise, cut + noise, json.dumps(rng.choice([None, 1, [], {"MESSAGE": 5}, {"__CURSOR": 3}]))):
            parse_entry(line, "etcd.service")
            parse_message(line, 0.0)


def test_follower_resumes_after_the_last_cursor_without_repeats() -> None:
    events: list[object] = []
    host = load_desired(SPECS).hosts["master-1"]
    follower = JournalFollower(
        host,
        "etcd.service",
        connect=None,
        on_event=lambda h, e: events.append(e),  # type: ignore[arg-type]
        since_seconds=60,
    )
    assert follower.argv()[-1] == "--since=-60s"  # first stream: the window already in the journal
    follower.feed(entry(V34, "c1"))
    follower.feed("not json")
    follower.feed(entry("raft tick", "c2"))
    assert follower.argv()[-1] == "--after-cursor=c2" and len(events) == 1


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


def test_etcd_metrics_give_fsync_p99_and_send_failures() -> None:
    text = (
        "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 90\n'
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 98\n'
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="0.032"} 100\n'
        'etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 100\n'
        "etcd_disk_wal_fsync_duration_seconds_sum 0.1\netcd_disk_wal_fsync_duration_seconds_count 100\n"
        "# TYPE etcd_server_heartbeat_send_failures_total counter\netcd_server_heartbeat_send_failures_total 6\n"
    )
    values = parse_etcd_metrics(text)
    assert values["heartbeat_send_failures"] == 6
    assert values["wal_fsync_p99_seconds"] == pytest.approx(0.002 + 0.030 * 0.5)
    assert histogram_quantile(0.99, []) is None and parse_etcd_metrics("garbage {") == {}


def test_overlay_round_trip_and_operator_spec_value_wins(tmp_path: Path) -> None:
    assert store.load(tmp_path) is None
    store.save(tmp_path, store.Overlay(400, 4000, 5.0, "why", "cause"))
    overlay = store.load(tmp_path)
    assert overlay is not None and overlay.as_env() == {"ETCD_HEARTBEAT_INTERVAL": 400, "ETCD_ELECTION_TIMEOUT": 4000}
    desired = load_desired(SPECS, overlay=overlay.as_env())
    conf = desired.hosts["master-2"].files["/etc/etcd/etcd.conf"].content.decode()
    assert "ETCD_HEARTBEAT_INTERVAL=400\n" in conf and "ETCD_ELECTION_TIMEOUT=4000\n" in conf
    assert desired.tuning is not None and desired.tuning.spec_values["ETCD_HEARTBEAT_INTERVAL"] == 100
    low = load_desired(SPECS, overlay={"ETCD_HEARTBEAT_INTERVAL": 50, "ETCD_ELECTION_TIMEOUT": 500})
    assert b"ETCD_HEARTBEAT_INTERVAL=100\n" in low.hosts["master-1"].files["/etc/etcd/etcd.conf"].content
    (tmp_path / store.FILENAME).write_text("{broken")
    with pytest.raises(ValueError, match="unreadable tuning overlay"):
        store.load(tmp_path)
    assert store.clear(tmp_path) and not store.clear(tmp_path)


def test_tuning_spec_errors_name_file_and_field(tmp_path: Path) -> None:
    import shutil

    spec_dir = tmp_path / "specs"
    shutil.copytree(SPECS, spec_dir)
    etcd = spec_dir / "etcd.yaml"
    etcd.write_text(
        etcd.read_text()
        .replace("electionMultiplier: 10", "electionMultiplier: 3")
        .replace("ETCD_HEARTBEAT_INTERVAL: 100", 'ETCD_HEARTBEAT_INTERVAL: "{{ 100 }}"')
    )
    with pytest.raises(SpecError) as err:
        load_desired(spec_dir)
    text = "\n".join(str(i) for i in err.value.issues)
    assert "etcd.yaml:" in text and "spec.electionMultiplier" in text


async def test_the_metrics_scrape_runs_curl_as_the_health_checks_do() -> None:
    """No ~/.curlrc, no proxy, no URL globs, http(s) only, a bounded body, the check's TLS files (it had none of
    the hardening the observe script's probes have)."""
    from reconciler.spec.desired import DesiredCheck
    from reconciler.transport.base import CommandResult
    from reconciler.transport.fake import FakeConnection, SimHost

    host = load_desired(SPECS).hosts["master-1"]
    ran: list[tuple[str, ...]] = []

    class Recording(FakeConnection):
        async def run(self, argv, **kwargs):  # type: ignore[no-untyped-def]
            ran.append(tuple(argv))
            return CommandResult(tuple(argv), 0, b"etcd_server_heartbeat_send_failures_total 2\n", b"")

    follower = JournalFollower(host, "etcd.service", lambda target: None, lambda m, e: None, 60)  # type: ignore[arg-type,return-value]
    follower._conn = Recording(SimHost("master-1"))
    check = DesiredCheck(
        "etcd", 3, url="https://198.18.0.11:2379/health", ca_file="/ca.pem", cert_file="/c.pem", key_file="/k.pem"
    )
    assert (await follower.scrape(check))["heartbeat_send_failures"] == 2
    argv = ran[0]
    assert argv[:2] == ("curl", "-q") and {"--noproxy", "-g", "--max-filesize", "--fail"} <= set(argv)
    assert argv[-2:] == ("--", "https://198.18.0.11:2379/metrics")
    assert (
        "--cacert" in argv and argv[argv.index("--cert") + 1] == "/c.pem" and argv[argv.index("--key") + 1] == "/k.pem"
    )
