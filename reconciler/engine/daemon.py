"""The long-running daemon: spec watcher, periodic resync, per-host workers, HTTP endpoint, systemd.

Owns the wiring: the desired state in force (the last good specs, loaded in a child process from a thread),
the work queue and backoff, the workers, the tuner, the HTTP endpoint (its routes: `status.routes`) and systemd
notifications. What it learns goes to `status.ledger` as values (records and metrics live there). Work is a host
name in the queue; each pass is `engine.converge.reconcile_host`. Started by `reconciler run`; stops cleanly on
SIGTERM/SIGINT, reloads on SIGHUP.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid

import structlog

from reconciler.engine.converge import reconcile_host
from reconciler.engine.held import FILENAME as HELD_FILE
from reconciler.engine.held import Held
from reconciler.engine.memory import TRIM_PERIOD_S, pin_malloc_thresholds, release_free_memory
from reconciler.engine.queue import Backoff, WorkQueue
from reconciler.engine.rollouts import Rollouts
from reconciler.engine.spec_keeper import SpecKeeper
from reconciler.errors import SpecError
from reconciler.leader.leadership import Leadership
from reconciler.settings import DaemonSettings
from reconciler.spec.desired import DesiredState, Target
from reconciler.spec.load import spec_digest
from reconciler.spec.watch import watch_specs
from reconciler.status.http import HTTPServer
from reconciler.status.ledger import Ledger
from reconciler.status.metrics import Metrics
from reconciler.status.routes import routes
from reconciler.status.sdnotify import Notifier
from reconciler.transport.session import Connector, Session, ssh_connector
from reconciler.tuning.tuner import Tuner
from reconciler.waits import pause

log = structlog.get_logger(__name__)


class Daemon:
    def __init__(self, settings: DaemonSettings, connector: Connector | None = None):
        self.settings = settings
        self.metrics = Metrics()
        self.queue = WorkQueue()
        self.backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        self.session = Session(connector or ssh_connector(attempts=settings.connect_attempts))
        self.leadership: Leadership | None = None
        if settings.leader_election:
            self.leadership = Leadership(
                settings.name,
                self.metrics,
                ttl=settings.leader_ttl,
                renew_deadline=settings.renew_deadline,
                retry=settings.leader_retry,
                accept_specs=settings.accept_specs,
            )
        # what was rolled back and held survives a restart of the daemon (its state dir) and a leader change (etcd)
        held = Held(settings.state_dir / HELD_FILE)
        self.rollouts = Rollouts(
            held,
            fence=self.leadership.fenced if self.leadership else None,
            deposed=self.leadership.deposed if self.leadership else None,
            actor=f"reconciler run ({settings.name})",  # takes the cluster-wide restart lock per turn
        )
        if self.leadership is not None:
            self.leadership.held = held  # carried to the next leader through etcd
        self.notifier = Notifier()
        self._loads: set[asyncio.Task[None]] = set()
        self.ledger = Ledger(str(settings.spec_dir), self.metrics)
        self.specs = SpecKeeper(settings.spec_dir, self.ledger)
        self._targets: dict[str, Target] = {}  # how each host was reached under the specs in force
        self.stopping = asyncio.Event()
        self.crashed = False  # an internal fault stopped the daemon: exit non-zero
        self._first_pass: set[str] = set()
        self._changed: set[str] = set()  # hosts whose desired state changed since their last pass began
        self._beat = time.monotonic()
        self.tuner = Tuner(
            settings.state_dir,
            self.metrics,
            connector or ssh_connector(attempts=1),
            on_overlay=lambda: self.request_load("tuning"),
        )
        served = routes(self.ledger, self, lambda: self._beat, self.tuner, self.leadership)
        self.http = HTTPServer(served, settings.listen_host, settings.listen_port)

    # -- specs ---------------------------------------------------------------------------------
    def request_load(self, reason: str, *, then_check_all: bool = False) -> None:
        """A load from where nothing can wait for it (SIGHUP, the tuner); loads still run one at a time."""

        async def load() -> None:
            await self.load_specs(reason)
            if then_check_all:
                self._queue_all()

        task = asyncio.get_running_loop().create_task(load(), name=f"load-{reason}")
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    async def load_specs(self, reason: str) -> bool:
        """Load the spec directory (`SpecKeeper`); on success forget what left, queue the hosts whose desired state
        changed, and tell the tuner and the election. False when the specs were refused (the last good stay)."""
        loaded = await self.specs.load(reason, self.tuner.overlay_env())
        if loaded is None:
            return False
        for name in loaded.removed:
            self.queue.discard(name)
            self.session.forget(name)
        old = loaded.changed if not loaded.first else []
        for name in old:
            if self._targets.get(name) != loaded.desired.hosts[name].target:
                self.session.forget(name)
        self._targets = {n: h.target for n, h in loaded.desired.hosts.items()}
        if loaded.first:  # the first good specs: ready once every host had a pass
            self._first_pass = set(loaded.desired.hosts)
        else:  # (at start every host is "changed", and most are converged: a daemon restarted)
            self._changed |= set(loaded.changed)
        self.tuner.sync(loaded.desired)
        if self.leadership is not None:
            try:
                self.leadership.digest = await asyncio.to_thread(spec_digest, self.settings.spec_dir)
            except SpecError:  # the directory went away meanwhile: no digest, so nothing is agreed or applied
                self.leadership.digest = ""
            await self.leadership.recheck()
        for name in loaded.changed:
            self.queue.add(name)
        log.info(
            "specs loaded",
            reason=reason,
            generation=self.ledger.spec.generation,
            hosts=len(loaded.desired.hosts),
            changed=loaded.changed,
        )
        return True

    @property
    def desired(self) -> DesiredState | None:
        """The desired state in force (the last good specs)."""
        return self.specs.desired

    def not_ready(self) -> str | None:
        """Why the daemon is not ready (no good specs yet, or hosts without their first pass), or None."""
        if self.desired is None:
            return "no valid spec yet"
        return f"first pass pending on {len(self._first_pass)} host(s)" if self._first_pass else None

    async def _on_spec_change(self, paths: list[str]) -> None:
        await self.load_specs("watch")

    # -- work ----------------------------------------------------------------------------------
    async def _worker(self) -> None:
        while (host := await self.queue.get()) is not None:
            try:
                await self._reconcile(host)
            except Exception:  # a bug in one pass must not kill the worker
                log.exception("reconcile crashed", host=host)
                self._retry(host)
            finally:
                self.queue.done(host)
                self.metrics.queue_depth.set(self.queue.depth())

    async def _reconcile(self, host: str) -> None:
        desired, generation = self.desired, self.ledger.spec.generation
        if desired is None or host not in desired.hosts:
            return
        reconcile_id = uuid.uuid4().hex[:12]
        with structlog.contextvars.bound_contextvars(host=host, reconcile_id=reconcile_id):
            began = time.monotonic()
            changed, self._changed = host in self._changed, self._changed - {host}
            outcome = await reconcile_host(
                desired, host, self.session, self.rollouts, wait=self.settings.verify_wait, changed=changed
            )
            seconds = time.monotonic() - began
            record = self.ledger.pass_done(
                desired, outcome, seconds=seconds, reconcile_id=reconcile_id, generation=generation
            )
            if outcome.status == "converged":
                self.backoff.succeeded(host)
                self.ledger.converged(host)
            elif outcome.status == "pending":  # a follower: nothing failed, the next resync looks again
                self.backoff.succeeded(host)
            elif not self.stopping.is_set():
                self._retry(host)
            self._first_pass.discard(host)
            log.info(
                "reconciled",
                status=outcome.status,
                seconds=round(seconds, 3),
                applied=len(outcome.applied),
                drift=record.drift,
                phases=record.phase_seconds,
                generation=generation,
                error=outcome.error or None,
            )

    def retry_in(self) -> dict[str, float | None]:
        """Each host backing off, and the seconds until its next pass."""
        return {h: self.queue.due_in(h) for h in self.backoff.failures}

    def _retry(self, host: str) -> None:
        delay = self.backoff.failed(host)
        self.queue.add(host, delay)
        failures = self.backoff.failures.get(host, 0)
        self.ledger.backing_off(host, failures, delay)
        log.warning("backing off", host=host, failures=failures, retry_in=round(delay, 3))

    async def _resync(self) -> None:
        interval, jitter = self.settings.resync_interval, self.settings.resync_jitter
        while not self.stopping.is_set():
            if not await pause(self.stopping, interval * (1 + random.uniform(-jitter, jitter))):
                self._queue_all()

    def _queue_all(self) -> None:
        """A pass over every host that is not backing off (hosts backing off keep their own schedule)."""
        for host in self.desired.hosts if self.desired else ():
            if host not in self.backoff.failures:
                self.queue.add(host)
        self.metrics.queue_depth.set(self.queue.depth())

    def reload(self) -> None:
        """SIGHUP (`systemctl reload`): re-read the specs, then check every host now, as a resync would."""
        self.request_load("sighup", then_check_all=True)

    async def _heartbeat(self) -> None:
        period = min(self.notifier.watchdog_interval or 5.0, 5.0)
        trimmed = time.monotonic()
        while not self.stopping.is_set():
            self._beat = time.monotonic()
            if self._beat - trimmed >= TRIM_PERIOD_S:
                trimmed = self._beat
                release_free_memory()
            self.notifier.notify("WATCHDOG=1", f"STATUS={self.ledger.summary(self.queue.depth())}")
            await pause(self.stopping, period)

    # -- lifecycle -----------------------------------------------------------------------------
    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: finishing passes in flight", in_flight=sorted(self.queue.in_flight))
            self.stopping.set()
            self.specs.abort.set()  # a load in progress ends now, not when its budget runs out
            self.rollouts.stopping.set()
            self.queue.close()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        pinned = pin_malloc_thresholds()
        await self.load_specs("start")
        await self.http.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        workers = [asyncio.create_task(self._worker(), name=f"worker-{i}") for i in range(self.settings.workers)]
        background = [
            asyncio.create_task(self._resync(), name="resync"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self.tuner.run(self.stopping), name="tuner"),
            *(
                [
                    asyncio.create_task(
                        self.leadership.run(lambda: self.desired, self.stopping, self._queue_all), name="leader"
                    )
                ]
                if self.leadership
                else []
            ),
            asyncio.create_task(
                watch_specs(self.settings.spec_dir, self._on_spec_change, self.stopping, self.settings.debounce_ms),
                name="watch",
            ),
        ]
        for task in background:
            task.add_done_callback(self._background_ended)
        self.notifier.notify("READY=1", "STATUS=started")
        log.info(
            "daemon started",
            specs=str(self.settings.spec_dir),
            listen=f"{self.http.host}:{self.http.port}",
            malloc_thresholds_pinned=pinned,
        )
        await self.stopping.wait()
        self.notifier.notify("STOPPING=1")
        _, late = await asyncio.wait(workers, timeout=self.settings.shutdown_timeout)
        if late:
            log.error("shutdown timeout: abandoning passes in flight", in_flight=sorted(self.queue.in_flight))
        for task in [*late, *background]:
            task.cancel()
        await asyncio.gather(*late, *background, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if self.leadership is not None:  # the key goes only now: no pass of this replica is in flight any more
            await self.leadership.close()
        await self.http.stop()
        await self.session.close()
        log.info("daemon stopped", exit_code=1 if self.crashed else 0)
        return 1 if self.crashed else 0

    def _background_ended(self, task: asyncio.Task[None]) -> None:
        """The watcher, resync, heartbeat and tuner run until stopped; one ending before is an internal fault:
        stop, and exit non-zero so that systemd (Restart=on-failure) starts a fresh daemon."""
        if self.stopping.is_set():
            return
        error = None if task.cancelled() else task.exception()
        log.error(
            "internal fault: a background task ended; stopping to be restarted",
            task=task.get_name(),
            error=repr(error) if error else "returned",
        )
        self.crashed = True
        self.stop()
