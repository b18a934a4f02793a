"""tuning.follower: the journal stream resumes after its last cursor, etcd's /metrics read (the WAL fsync p99, the
heartbeat send failures), and the scrape runs curl hardened as the health checks do."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec.isolate import load_desired
from reconciler.tuning.follower import JournalFollower, histogram_quantile, parse_etcd_metrics
from tests.support.journal import V34, entry

SPECS = Path(__file__).resolve().parents[3] / "specs"


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
