"""The etcd tuner loop: journal followers in, an overlay decision out.

Owns one `JournalFollower` per etcd member (started and stopped as the specs change), the recent
warnings and restart windows per member, the evaluation every second through the pure
`policy.decide`, and saving a raise as the overlay (`tuning.overlay`). It never touches a host: the
daemon re-renders the desired state with the overlay and the normal plan/apply path rolls it out,
one member at a time behind the quorum guard. Started by `engine.daemon`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import structlog

from reconciler.components.etcd import ELECTION_KEY, HEARTBEAT_KEY
from reconciler.spec.desired import DesiredState
from reconciler.tuning import overlay as store
from reconciler.tuning.etcdlog import HeartbeatWarning, Restart
from reconciler.tuning.follower import JournalFollower, StreamConnector
from reconciler.tuning.overlay import Overlay
from reconciler.tuning.policy import Decision, decide, in_restart_window
from reconciler.waits import pause

log = structlog.get_logger(__name__)

OPEN_RESTART_LIMIT = 600.0  # an unmatched "Stopping" older than this no longer silences warnings
SCRAPE_EVERY = 10.0


class TuningMetrics(Protocol):
    """What the tuner records (status.metrics.Metrics is one): tuning does not reach up into status."""

    def etcd_warning(self, member: str, counted: bool) -> None: ...
    def tuning_decision(self, outcome: str) -> None: ...
    def etcd_fsync(self, member: str, seconds: float) -> None: ...
    def set_cause(self, cause: str) -> None: ...


class Tuner:
    def __init__(
        self, state_dir: Path, metrics: TuningMetrics, connect: StreamConnector, on_overlay: Callable[[], object]
    ):
        self.state_dir, self.metrics = state_dir, metrics
        self._connect, self._on_overlay = connect, on_overlay
        self.overlay: Overlay | None = None
        self.overlay_error = ""
        self._stamp = self._file_stamp()
        try:
            self.overlay = store.load(state_dir)
        except ValueError as exc:
            self.overlay_error = str(exc)
            log.error("tuning overlay unreadable; ignoring it", error=str(exc))
        self.desired: DesiredState | None = None
        self.followers: dict[str, tuple[JournalFollower, asyncio.Task[None]]] = {}
        self.warnings: dict[str, deque[HeartbeatWarning]] = {}
        self.restarts: dict[str, list[list[float | None]]] = {}
        self.decision: Decision | None = None
        self.decided_at: float | None = None
        self.evaluated_at: float | None = None
        self.scraped: dict[str, dict[str, float]] = {}
        self._scraped_at = 0.0
        self._stopping: asyncio.Event | None = None

    # -- inputs ----------------------------------------------------------------------------------
    def overlay_env(self) -> dict[str, int]:
        return self.overlay.as_env() if self.overlay else {}

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = store.path_in(self.state_dir).stat()
            return st.st_mtime_ns, st.st_ino
        except OSError:
            return None

    def on_event(self, member: str, event: HeartbeatWarning | Restart) -> None:
        if isinstance(event, Restart):
            windows = self.restarts.setdefault(member, [])
            if event.phase == "stopping":
                windows.append([event.at, None])
            elif windows and windows[-1][1] is None:
                windows[-1][1] = event.at
            else:
                windows.append([event.at, event.at])
            return
        self.warnings.setdefault(member, deque(maxlen=10_000)).append(event)
        counted = not self._in_restart(event.at)
        self.metrics.etcd_warning(member, counted)
        log.warning(
            "etcd heartbeat warning",
            host=member,
            gap_ms=round(event.gap_ms, 1),
            interval_ms=event.interval_ms,
            counted=counted,
        )

    def _restart_windows(self, now: float) -> list[tuple[float, float | None]]:
        out: list[tuple[float, float | None]] = []
        for windows in self.restarts.values():
            for stop, start in windows:
                assert stop is not None
                if start is None and now - stop > OPEN_RESTART_LIMIT:
                    continue
                out.append((stop, start))
        return out

    def _in_restart(self, at: float) -> bool:
        grace = self.desired.tuning.policy.restart_grace_seconds if self.desired and self.desired.tuning else 0.0
        return in_restart_window(at, self._restart_windows(time.time()), grace)

    def sync(self, desired: DesiredState) -> None:
        """Follow exactly the members of the tuned unit in the new desired state."""
        self.desired = desired
        tuning = desired.tuning
        members = {h.name: h for h in desired.hosts_with_unit(tuning.unit)} if tuning else {}
        for name in list(self.followers):
            follower, task = self.followers[name]
            if name not in members or follower.host.target != members[name].target:
                task.cancel()
                del self.followers[name]
        if self._stopping is None or tuning is None:
            return
        for name, host in members.items():
            if name not in self.followers:
                follower = JournalFollower(
                    host, tuning.unit, self._connect, self.on_event, since_seconds=tuning.policy.window_seconds
                )
                self.followers[name] = (
                    follower,
                    asyncio.create_task(follower.run(self._stopping), name=f"journal-{name}"),
                )

    # -- the loop --------------------------------------------------------------------------------
    async def run(self, stopping: asyncio.Event, interval: float = 1.0) -> None:
        self._stopping = stopping
        if self.desired is not None:
            self.sync(self.desired)
        try:
            while not stopping.is_set():
                self._check_overlay_file()
                await self.evaluate()
                await pause(stopping, interval)
        finally:
            tasks = [t for _, t in self.followers.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _check_overlay_file(self) -> None:
        """An operator's `reconciler tuning clear` (or an edit) takes effect without a restart."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.overlay, self.overlay_error = store.load(self.state_dir), ""
        except ValueError as exc:
            self.overlay_error = str(exc)
            return
        log.info("tuning overlay changed on disk", overlay=asdict(self.overlay) if self.overlay else None)
        self._on_overlay()

    async def evaluate(self) -> Decision | None:
        tuning = self.desired.tuning if self.desired else None
        if tuning is None:
            return None
        now = time.time()
        horizon = now - max(tuning.policy.window_seconds, tuning.policy.restart_grace_seconds) - 60
        for seen in self.warnings.values():
            while seen and seen[0].at < horizon:
                seen.popleft()
        for windows in self.restarts.values():
            windows[:] = [w for w in windows if (w[1] or now) >= horizon]
        if any(self.warnings.values()) and now - self._scraped_at > SCRAPE_EVERY:
            self._scraped_at = now
            await self._scrape()
        current = (tuning.effective[HEARTBEAT_KEY], tuning.effective[ELECTION_KEY])
        fsync = {
            m: (v["wal_fsync_p99_seconds"] * 1000 if "wal_fsync_p99_seconds" in v else None)
            for m, v in self.scraped.items()
        }
        decision = decide(
            tuning.policy,
            now,
            self.warnings,
            self._restart_windows(now),
            current,
            self.overlay.decided_at if self.overlay else None,
            fsync,
        )
        self.evaluated_at = now
        changed = self.decision is None or decision.outcome != self.decision.outcome
        if changed or decision.outcome == "raised":
            self.decided_at = now
            if decision.outcome != "quiet":
                self.metrics.tuning_decision(decision.outcome)
                log.info("etcd tuning decision", outcome=decision.outcome, reason=decision.reason, cause=decision.cause)
        self.decision = decision
        if decision.outcome == "raised":
            assert decision.heartbeat_ms is not None and decision.election_ms is not None
            history = [
                *(self.overlay.history if self.overlay else []),
                *(
                    [
                        {
                            "heartbeat_ms": self.overlay.heartbeat_ms,
                            "election_ms": self.overlay.election_ms,
                            "decided_at": self.overlay.decided_at,
                        }
                    ]
                    if self.overlay
                    else []
                ),
            ]
            self.overlay = Overlay(
                decision.heartbeat_ms, decision.election_ms, now, decision.reason, decision.cause, history[-20:]
            )
            store.save(self.state_dir, self.overlay)
            self._stamp = self._file_stamp()
            self.metrics.set_cause(decision.cause)
            self._on_overlay()
        return decision

    async def _scrape(self) -> None:
        tuning = self.desired.tuning if self.desired else None
        if tuning is None:
            return

        async def one(name: str, follower: JournalFollower) -> None:
            unit = next((u for u in follower.host.units if u.name == tuning.unit), None)
            check = follower.host.check(unit.rollout_check) if unit and unit.rollout_check else None
            values = await follower.scrape(check)
            if values:
                self.scraped[name] = values
                if "wal_fsync_p99_seconds" in values:
                    self.metrics.etcd_fsync(name, values["wal_fsync_p99_seconds"])

        await asyncio.gather(*(one(n, f) for n, (f, _) in self.followers.items()))

    # -- reporting -------------------------------------------------------------------------------

    def status(self, rollout: Callable[[str], str]) -> dict[str, Any]:
        """/status "tuning": what this tuner follows, counted and decided, and each member's rollout of it
        (`rollout`: the member's word from its last pass: applied, pending, or why not)."""
        tuning = self.desired.tuning if self.desired else None
        if tuning is None:
            return {"enabled": False}
        now = time.time()
        d = self.decision
        cooldown_left = 0.0
        if self.overlay:
            cooldown_left = max(0.0, tuning.policy.cooldown_seconds - (now - self.overlay.decided_at))
        members: dict[str, Any] = {}
        for name in sorted(h.name for h in self.desired.hosts_with_unit(tuning.unit)) if self.desired else []:
            follower = self.followers.get(name, (None, None))[0]
            members[name] = {
                "journal": {
                    "following": bool(follower and follower.connected),
                    "resumable": bool(follower and follower.cursor),
                    "entries": follower.entries if follower else 0,
                    "error": follower.error if follower else "",
                },
                "warnings_in_window": (d.counted.get(name, 0) if d else 0),
                "metrics": self.scraped.get(name, {}),
                "rollout": rollout(name),
            }
        return {
            "enabled": True,
            "unit": tuning.unit,
            "file": tuning.path,
            "source": tuning.source,
            "policy": asdict(tuning.policy),
            "spec_values": tuning.spec_values,
            "effective": tuning.effective,
            "overlay": asdict(self.overlay) if self.overlay else None,
            "overlay_error": self.overlay_error or None,
            "state_file": str(store.path_in(self.state_dir)),
            "last_decision": (
                {
                    "outcome": d.outcome,
                    "reason": d.reason,
                    "cause": d.cause or None,
                    "ignored_near_restarts": d.ignored,
                    "at": self.decided_at,
                }
                if d
                else None
            ),
            "evaluated_at": self.evaluated_at,
            "cooldown_left_seconds": round(cooldown_left, 1),
            "members": members,
        }
