"""The daemon's etcd snapshots on the EtcdBackup document's schedule: taken when due, kept, pruned, reported.

Owns when (the newest kept snapshot is older than the interval, or there is none; after a failure, again with
backoff, never later than the interval), who (with leader election, only the replica that leads: one snapshot per
interval for the cluster), and what is said of it: the metrics (`reconciler_etcd_snapshot_*`), its /status entry,
logs. The work is `backup.take`'s and `backup.store`'s. Wired by `engine.daemon`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog

from reconciler.backup import store
from reconciler.backup.take import SnapshotFailed, take
from reconciler.errors import HostError
from reconciler.spec.desired import DesiredBackup, DesiredState
from reconciler.status.metrics import Metrics
from reconciler.transport.session import Connector, Session
from reconciler.waits import backoff, pause

log = structlog.get_logger(__name__)

IDLE_S = 30.0  # how often a daemon without an EtcdBackup (or not leading) looks again
RETRY_BASE_S, RETRY_CAP_S = 30.0, 900.0


class Snapshots:
    def __init__(self, metrics: Metrics, connector: Connector, leading: Callable[[], Awaitable[bool]] | None):
        """`leading`: whether this replica leads now (None: no election, it always does)."""
        self.metrics, self.leading = metrics, leading
        self.session = Session(connector)
        self.last: store.Kept | None = None  # the newest kept snapshot seen
        self.error = ""  # why the last attempt kept nothing ("" when it kept one)
        self.failures = 0  # attempts in a row that kept nothing
        self.next_at: float | None = None  # unix time of the next attempt
        self.backup: DesiredBackup | None = None
        self._retry_at = 0.0  # after a failure: not again before this (backoff, jittered once)
        self._taken_at: float | None = None  # when the newest snapshot this schedule counts from was taken

    async def run(self, desired: Callable[[], DesiredState | None], stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            wait = await self.step(desired())
            if await pause(stopping, wait):
                break
        await self.session.close()

    async def step(self, desired: DesiredState | None, now: float | None = None) -> float:
        """One look: take a snapshot if one is due; the seconds until the next look."""
        self.backup = desired.backup if desired is not None else None
        if desired is None or self.backup is None or (self.leading is not None and not await self.leading()):
            self.next_at = None
            return IDLE_S
        backup = self.backup
        directory = Path(backup.directory)
        try:
            kept = await asyncio.to_thread(store.listed, directory)
        except OSError as exc:  # the directory unreadable: a failure of this schedule, never of the daemon
            self._failed(f"reading {directory}: {exc}", backup)
            return IDLE_S
        self._seen(kept[0] if kept else None, backup)
        now = time.time() if now is None else now
        if self._taken_at is None and self.last is not None:  # the first look: what the directory holds counts,
            self._taken_at = min(self.last.taken_at, now)  # one stamped ahead of this clock as taken now
        due = self._taken_at + backup.interval_seconds if self._taken_at is not None else now
        if self.failures:
            due = max(due, self._retry_at)
        if now < due:
            self.next_at = due
            return min(due - now, IDLE_S)
        await self._take(desired, backup, directory)
        return 1.0  # look again at once: the next one's time follows from what was kept

    async def _take(self, desired: DesiredState, backup: DesiredBackup, directory: Path) -> None:
        began = time.monotonic()
        try:
            kept = await take(self.session, desired, directory)
            gone = await asyncio.to_thread(store.prune, directory, backup.keep, backup.max_age_seconds)
        except (SnapshotFailed, HostError, OSError) as exc:
            self._failed(str(exc), backup)
            return
        self.failures, self.error = 0, ""
        self._taken_at = kept.taken_at
        self.metrics.snapshot_duration.set(time.monotonic() - began)
        self._seen(kept, backup)
        self.next_at = kept.taken_at + backup.interval_seconds
        log.info(
            "etcd snapshot kept",
            path=kept.path,
            member=kept.member,
            revision=kept.revision,
            size=kept.size,
            seconds=kept.seconds,
            pruned=[Path(k.path).name for k in gone],
        )

    def _failed(self, error: str, backup: DesiredBackup) -> None:
        self.failures += 1
        self.error = error[:2000]
        self.metrics.snapshot_failures.inc()
        delay = min(backoff(self.failures, RETRY_BASE_S, RETRY_CAP_S), backup.interval_seconds)
        self.next_at = self._retry_at = time.time() + delay  # never later than the interval
        log.error("etcd snapshot kept nothing", error=self.error, failures=self.failures)

    def _seen(self, newest: store.Kept | None, backup: DesiredBackup) -> None:
        self.last = newest
        self.metrics.snapshot_interval.set(backup.interval_seconds)
        if newest is not None:
            self.metrics.snapshot_last_success.set(newest.taken_at)
            self.metrics.snapshot_size.set(newest.size)

    def status(self) -> dict[str, Any]:
        """The /status entry: the schedule, the newest kept snapshot and its age, the last failure."""
        if self.backup is None:
            return {"enabled": False}
        return {
            "enabled": True,
            "directory": self.backup.directory,
            "interval_seconds": self.backup.interval_seconds,
            "keep": self.backup.keep,
            "last": asdict(self.last) if self.last else None,
            "age_seconds": round(time.time() - self.last.taken_at, 1) if self.last else None,
            "next_at": self.next_at,
            "failures": self.failures,
            "error": self.error or None,
        }
