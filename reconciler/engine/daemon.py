"""The long-running daemon (`reconciler run`): its parts built, wired to each other and run until stopped.

Owns the wiring only: the specs in force (`engine.spec_keeper`), the per-host work (`engine.workers`), the
rollouts and what they hold, the tuner, the etcd snapshots' schedule, the election, the HTTP endpoint (`status.routes`) and systemd's
notifications. A good spec load goes to the workers, the tuner and the election, in that order. Stops cleanly on
SIGTERM/SIGINT, reloads on SIGHUP; a background task ending before the stop is an internal fault (exit 1).
"""

from __future__ import annotations

import asyncio
import signal
import time

import structlog

from reconciler.backup.schedule import Snapshots
from reconciler.engine.cert_schedule import Renewals
from reconciler.engine.held import FILENAME as HELD_FILE
from reconciler.engine.held import Held
from reconciler.engine.memory import TRIM_PERIOD_S, pin_malloc_thresholds, release_free_memory
from reconciler.engine.rollouts import Rollouts
from reconciler.engine.spec_keeper import Loaded, SpecKeeper
from reconciler.engine.workers import Workers
from reconciler.leader.leadership import Leadership
from reconciler.settings import DaemonSettings
from reconciler.spec.watch import watch_specs
from reconciler.status.http import HTTPServer
from reconciler.status.ledger import Ledger
from reconciler.status.metrics import Metrics
from reconciler.status.routes import routes
from reconciler.status.sdnotify import Notifier
from reconciler.transport.session import Connector, ssh_connector
from reconciler.tuning.tuner import Tuner
from reconciler.waits import pause

log = structlog.get_logger(__name__)


class Daemon:
    def __init__(self, settings: DaemonSettings, connector: Connector | None = None):
        self.settings = settings
        self.metrics = Metrics()
        # what was rolled back and held survives a restart of the daemon (its state dir) and a leader change (etcd)
        held = Held(settings.state_dir / HELD_FILE)
        self.leadership = Leadership.of(settings, self.metrics, held)  # carries what is held to the next leader
        self.rollouts = Rollouts(
            held,
            fence=self.leadership.fenced if self.leadership else None,
            deposed=self.leadership.deposed if self.leadership else None,
            actor=f"reconciler run ({settings.name})",  # takes the cluster-wide restart lock per turn
        )
        self.notifier = Notifier()
        self.ledger = Ledger(str(settings.spec_dir), self.metrics)
        self.specs = SpecKeeper(settings.spec_dir, self.ledger, lambda: self.tuner.overlay_env(), self._loaded)
        self.stopping = asyncio.Event()
        self.crashed = False  # an internal fault stopped the daemon: exit non-zero
        ssh = connector or ssh_connector(attempts=settings.connect_attempts)
        self.workers = Workers(settings, self.specs, self.ledger, ssh, self.rollouts, self.stopping)
        self._beat = time.monotonic()
        self.tuner = Tuner(
            settings.state_dir,
            self.metrics,
            connector or ssh_connector(attempts=1),
            on_overlay=lambda: self.specs.request("tuning"),
        )
        self.snapshots = Snapshots(
            self.metrics,
            connector or ssh_connector(attempts=1),
            leading=self.leadership.fenced if self.leadership else None,  # one replica takes them
        )
        self.renewals = Renewals(
            self.metrics,
            connector or ssh_connector(attempts=1),
            leading=self.leadership.fenced if self.leadership else None,  # one replica renews
        )
        served = routes(
            self.ledger, self.workers, lambda: self._beat, self.tuner, self.leadership, self.snapshots, self.renewals
        )
        self.http = HTTPServer(served, settings.listen_host, settings.listen_port)

    async def _loaded(self, loaded: Loaded) -> None:
        """A good load, to the workers, the tuner and the election; the changed hosts queued only then (the
        election's fence refuses new specs until it checked them)."""
        self.workers.took(loaded)
        self.tuner.sync(loaded.desired)
        if self.leadership is not None:
            await self.leadership.specs_loaded(self.settings.spec_dir)
        self.workers.queue_changed(loaded)

    def reload(self) -> None:
        """SIGHUP (`systemctl reload`): re-read the specs, then check every host now, as a resync would."""
        self.specs.request("sighup", then=self.workers.queue_all)

    async def _heartbeat(self) -> None:
        period = min(self.notifier.watchdog_interval or 5.0, 5.0)
        trimmed = time.monotonic()
        while not self.stopping.is_set():
            self._beat = time.monotonic()
            if self._beat - trimmed >= TRIM_PERIOD_S:
                trimmed = self._beat
                release_free_memory()
            self.notifier.notify("WATCHDOG=1", f"STATUS={self.ledger.summary(self.workers.queue.depth())}")
            await pause(self.stopping, period)

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: finishing passes in flight", in_flight=sorted(self.workers.queue.in_flight))
            self.stopping.set()
            self.specs.abort.set()  # a load in progress ends now, not when its budget runs out
            self.rollouts.stopping.set()
            self.workers.queue.close()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        pinned = pin_malloc_thresholds()
        await self.specs.load("start")
        await self.http.start()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop), (signal.SIGHUP, self.reload)):
            loop.add_signal_handler(sig, handler)
        workers = [asyncio.create_task(self.workers.run(), name=f"worker-{i}") for i in range(self.settings.workers)]
        jobs = {"resync": self.workers.resync(), "heartbeat": self._heartbeat(), "tuner": self.tuner.run(self.stopping)}
        jobs["snapshots"] = self.snapshots.run(lambda: self.specs.desired, self.stopping)
        jobs["renewals"] = self.renewals.run(lambda: self.specs.desired, self.stopping)
        if self.leadership is not None:
            jobs["leader"] = self.leadership.run(lambda: self.specs.desired, self.stopping, self.workers.queue_all)
        changed = lambda paths: self.specs.load("watch")  # noqa: E731
        jobs["watch"] = watch_specs(self.settings.spec_dir, changed, self.stopping, self.settings.debounce_ms)
        background = [asyncio.create_task(job, name=name) for name, job in jobs.items()]
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
            log.error("shutdown timeout: abandoning passes in flight", in_flight=sorted(self.workers.queue.in_flight))
        for task in [*late, *background]:
            task.cancel()
        await asyncio.gather(*late, *background, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if self.leadership is not None:  # the key goes only now: no pass of this replica is in flight any more
            await self.leadership.close()
        await self.http.stop()
        await self.workers.session.close()
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
