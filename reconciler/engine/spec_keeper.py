"""The desired state in force: the last good specs, every load of them, and what a new load changed.

Owns loading the spec directory for the daemon (in a child process, from a thread: the event loop goes on
meanwhile), one load at a time, whether someone waits for it (the start, the watcher) or nothing can (`request`:
SIGHUP, the tuner's overlay); keeping the last good state when a load fails (a bad spec, or a loader bug: never a
stop); and saying what changed as a value (`Loaded`): which hosts' desired state changed, which hosts left. The
spec ledger (`status.ledger`) hears of every attempt; `on_loaded` (the daemon's wiring) of every good load.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from reconciler.errors import SpecError, SpecIssue
from reconciler.spec.cache import SpecCache
from reconciler.spec.desired import DesiredState
from reconciler.spec.isolate import load_desired
from reconciler.status.ledger import Ledger

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Loaded:
    desired: DesiredState
    changed: list[str]  # hosts whose desired state differs from the one in force before (all, at the first load)
    removed: list[str]  # hosts no longer in the specs
    first: bool  # the first good specs of this process


class SpecKeeper:
    def __init__(
        self,
        spec_dir: Path,
        ledger: Ledger,
        overlay: Callable[[], Mapping[str, int]] = dict,
        on_loaded: Callable[[Loaded], Awaitable[None]] | None = None,
    ) -> None:
        """`overlay`: the tuner's overlay, asked as each load is asked for; `on_loaded`: told of each good load
        before the load returns (loads do not wait for it)."""
        self.spec_dir, self.ledger, self.overlay, self.on_loaded = spec_dir, ledger, overlay, on_loaded
        self.desired: DesiredState | None = None
        self.abort = threading.Event()  # set on shutdown: a load in progress ends now, not at its budget's end
        self._cache = SpecCache()
        self._lock = asyncio.Lock()
        self._requested: set[asyncio.Task[None]] = set()

    async def load(self, reason: str) -> Loaded | None:
        """Load the spec directory (with the tuner's overlay); the new state and what it changed, or None when
        the specs were refused (the last good ones stay in force; the ledger has the errors)."""
        loaded = await self._load(reason, self.overlay())
        if loaded is not None:
            if self.on_loaded is not None:
                await self.on_loaded(loaded)
            for warning in loaded.desired.warnings:
                log.warning("spec warning", warning=warning)
            log.info(
                "specs loaded",
                reason=reason,
                generation=self.ledger.spec.generation,
                hosts=len(loaded.desired.hosts),
                changed=loaded.changed,
            )
        return loaded

    def request(self, reason: str, then: Callable[[], None] | None = None) -> None:
        """A load from where nothing can wait for it (SIGHUP, the tuner), then `then`; still one at a time."""

        async def load() -> None:
            await self.load(reason)
            if then is not None:
                then()

        task = asyncio.get_running_loop().create_task(load(), name=f"load-{reason}")
        self._requested.add(task)
        task.add_done_callback(self._requested.discard)

    async def _load(self, reason: str, overlay: Mapping[str, int]) -> Loaded | None:
        async with self._lock:
            self.ledger.spec_attempted()
            try:
                desired = await asyncio.to_thread(
                    load_desired, self.spec_dir, overlay=overlay, cache=self._cache, abort=self.abort
                )
            except Exception as exc:  # SpecError; anything else is a loader bug, and still never stops the daemon
                self._refused(reason, exc)
                return None
            old = self.desired.hosts if self.desired else {}
            changed = [n for n, h in desired.hosts.items() if old.get(n) is not h and old.get(n) != h]
            removed = sorted(set(old) - set(desired.hosts))
            loaded = Loaded(desired, changed, removed, first=self.desired is None)
            self.desired = desired
            self.ledger.spec_loaded(changed, removed)
            return loaded

    def _refused(self, reason: str, exc: Exception) -> None:
        if not isinstance(exc, SpecError):
            log.exception("spec loading crashed; keeping the last good specs", reason=reason)
            self._cache = SpecCache()  # whatever the failed load left in it is not trusted
        issues = (
            exc.issues
            if isinstance(exc, SpecError)
            else [SpecIssue(str(self.spec_dir), 0, "", f"internal error while loading: {type(exc).__name__}")]
        )
        self.ledger.spec_refused([str(i) for i in issues])
        log.error(
            "spec invalid; keeping the last good specs",
            reason=reason,
            errors=self.ledger.spec.errors,
            generation=self.ledger.spec.generation,
        )
