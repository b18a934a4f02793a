"""The daemon's per-host work: the queue, each host's pass, the retry a failure earns, the periodic resync.

Owns the work queue and the backoff (the work is a host name, one pass at a time per host: `engine.queue`), the
connections to the hosts (`transport.session`), the workers that take a host from the queue and run
`engine.converge.reconcile_host` on the specs in force (`engine.spec_keeper`), the retry after a failed pass, the
periodic pass over every host, and what the passes must know of a good spec load (`took`): which connections it
made stale, which hosts' desired state changed since their last pass began, which hosts still await their first
pass (the daemon is ready once none do). What a pass learns goes to `status.ledger` as values. Started by
`engine.daemon`.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import structlog

from reconciler.engine.converge import reconcile_host
from reconciler.engine.queue import Backoff, WorkQueue
from reconciler.engine.rollouts import Rollouts
from reconciler.engine.spec_keeper import Loaded, SpecKeeper
from reconciler.settings import DaemonSettings
from reconciler.spec.desired import Target
from reconciler.status.ledger import Ledger
from reconciler.transport.session import Connector, Session
from reconciler.waits import pause

log = structlog.get_logger(__name__)


class Workers:
    def __init__(
        self,
        settings: DaemonSettings,
        specs: SpecKeeper,
        ledger: Ledger,
        connector: Connector,
        rollouts: Rollouts,
        stopping: asyncio.Event,
    ) -> None:
        self.settings, self.specs, self.ledger = settings, specs, ledger
        self.rollouts, self.stopping = rollouts, stopping
        self.queue = WorkQueue()
        self.backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        self.session = Session(connector)
        self._targets: dict[str, Target] = {}  # how each host was reached under the specs in force
        self._first_pass: set[str] = set()
        self._changed: set[str] = set()  # hosts whose desired state changed since their last pass began

    # -- spec loads ----------------------------------------------------------------------------
    def took(self, loaded: Loaded) -> None:
        """A good load: forget the hosts that left and the connections whose target changed, note what changed."""
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

    def queue_changed(self, loaded: Loaded) -> None:
        """A pass for every host whose desired state the load changed."""
        for name in loaded.changed:
            self.queue.add(name)

    def not_ready(self) -> str | None:
        """Why the daemon is not ready (no good specs yet, or hosts without their first pass), or None."""
        if self.specs.desired is None:
            return "no valid spec yet"
        return f"first pass pending on {len(self._first_pass)} host(s)" if self._first_pass else None

    # -- passes --------------------------------------------------------------------------------
    async def run(self) -> None:
        """One worker: a host from the queue at a time, until the queue is closed."""
        while (host := await self.queue.get()) is not None:
            try:
                await self._reconcile(host)
            except Exception:  # a bug in one pass must not kill the worker
                log.exception("reconcile crashed", host=host)
                self._retry(host)
            finally:
                self.queue.done(host)
                self.ledger.metrics.queue_depth.set(self.queue.depth())

    async def _reconcile(self, host: str) -> None:
        desired, generation = self.specs.desired, self.ledger.spec.generation
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

    def _retry(self, host: str) -> None:
        delay = self.backoff.failed(host)
        self.queue.add(host, delay)
        failures = self.backoff.failures.get(host, 0)
        self.ledger.backing_off(host, failures, delay)
        log.warning("backing off", host=host, failures=failures, retry_in=round(delay, 3))

    def retry_in(self) -> dict[str, float | None]:
        """Each host backing off, and the seconds until its next pass."""
        return {h: self.queue.due_in(h) for h in self.backoff.failures}

    async def resync(self) -> None:
        """A pass over every host each resync interval (jittered), until stopped."""
        interval, jitter = self.settings.resync_interval, self.settings.resync_jitter
        while not self.stopping.is_set():
            if not await pause(self.stopping, interval * (1 + random.uniform(-jitter, jitter))):
                self.queue_all()

    def queue_all(self) -> None:
        """A pass over every host that is not backing off (hosts backing off keep their own schedule)."""
        for host in self.specs.desired.hosts if self.specs.desired else ():
            if host not in self.backoff.failures:
                self.queue.add(host)
        self.ledger.metrics.queue_depth.set(self.queue.depth())
