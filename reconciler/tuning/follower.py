"""Follow one etcd member's journal over SSH, resuming from the last cursor after any reconnect.

Owns the stream (`journalctl -u UNIT -o json -f`) on a connection of its own (a long-lived channel
must not hold up reconcile passes), the cursor (so a line is never missed or counted twice across
reconnects), reconnect backoff, and reading the member's own /metrics (WAL fsync p99, heartbeat send
failures) through that connection. Parsed events go to a callback; the tuner decides what they mean.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from prometheus_client.parser import text_string_to_metric_families

from reconciler.errors import HostError
from reconciler.observe.facts import CURL_SAFE, curl_tls
from reconciler.spec.desired import DesiredCheck, DesiredHost, Target
from reconciler.transport.base import Connection
from reconciler.tuning.etcdlog import HeartbeatWarning, Restart, parse_entry
from reconciler.waits import backoff, pause

log = structlog.get_logger(__name__)

Event = HeartbeatWarning | Restart
StreamConnector = Callable[[Target], Awaitable[Connection]]


class JournalFollower:
    def __init__(
        self,
        host: DesiredHost,
        unit: str,
        connect: StreamConnector,
        on_event: Callable[[str, Event], None],
        since_seconds: float,
        retry_cap: float = 30.0,
    ):
        self.host, self.unit = host, unit
        self._connect, self._on_event = connect, on_event
        self.since_seconds = since_seconds  # the first stream starts this far back (warnings already in the window)
        self.retry_cap = retry_cap
        self.cursor: str | None = None
        self.connected = False
        self.error = ""
        self.entries = 0
        self.last_entry_at: float | None = None
        self._conn: Any = None

    def argv(self) -> list[str]:
        argv = ["journalctl", "-u", self.unit, "-o", "json", "-f", "--no-pager"]
        if self.cursor:
            return [*argv, f"--after-cursor={self.cursor}"]
        return [*argv, f"--since=-{max(1, int(self.since_seconds))}s"]

    def feed(self, line: bytes | str) -> None:
        """One journal line: advance the cursor, hand on what it says."""
        cursor, event = parse_entry(line, self.unit)
        if cursor is None:
            return
        self.cursor = cursor
        self.entries += 1
        self.last_entry_at = time.time()
        if event is not None:
            self._on_event(self.host.name, event)

    async def run(self, stopping: asyncio.Event) -> None:
        failures = 0
        while not stopping.is_set():
            try:
                self._conn = await self._connect(self.host.target)
                self.connected, self.error = True, ""
                failures = 0
                log.info("following etcd journal", host=self.host.name, resume=self.cursor is not None)
                async for line in self._conn.lines(self.argv()):
                    self.feed(line)
            except HostError as exc:
                self.error = str(exc)
            finally:
                self.connected = False
                conn, self._conn = self._conn, None
                if conn is not None:
                    await conn.close()
            failures += 1
            delay = backoff(failures, 0.5, self.retry_cap)
            log.warning(
                "etcd journal stream lost; resuming from the cursor",
                host=self.host.name,
                retry_in=delay,
                error=self.error,
            )
            await pause(stopping, delay)

    async def scrape(self, check: DesiredCheck | None) -> dict[str, float]:
        """The member's heartbeat send failures and WAL fsync p99 (seconds) from its /metrics, if reachable."""
        conn = self._conn
        if conn is None or check is None or not check.url:
            return {}
        url = check.url.rsplit("/", 1)[0] + "/metrics"
        argv = ["curl", *CURL_SAFE, "--fail", "--max-time", "3"]
        argv += curl_tls(check.ca_file, check.cert_file, check.key_file)
        try:
            result = await conn.run([*argv, "--", url], timeout=10)
        except HostError:
            return {}
        return parse_etcd_metrics(result.stdout.decode(errors="replace")) if result.ok else {}


def parse_etcd_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    buckets: list[tuple[float, float]] = []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "etcd_server_heartbeat_send_failures_total":
                    out["heartbeat_send_failures"] = sample.value
                elif sample.name == "etcd_disk_wal_fsync_duration_seconds_bucket":
                    buckets.append((float(sample.labels["le"]), sample.value))
    except (ValueError, KeyError, TypeError):
        return out
    p99 = histogram_quantile(0.99, buckets)
    if p99 is not None:
        out["wal_fsync_p99_seconds"] = p99
    return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets; None without samples."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
