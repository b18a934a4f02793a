"""The daemon's work queue: host names (not events), deduplicated, one in flight per host, with delays.

Like client-go's rate-limited queue: `add` a key (now or after a delay), `get` the next due key,
`done` when finished; a key added while in flight runs again once after it. `Backoff` holds the
per-host exponential delay with jitter that failures earn and success resets.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time

from reconciler.waits import backoff


class WorkQueue:
    def __init__(self) -> None:
        self._due: dict[str, float] = {}  # waiting keys -> monotonic time they become due
        self._heap: list[tuple[float, str]] = []  # (due, key), with stale entries skipped: O(log n) a get
        self._again: dict[str, float] = {}  # keys added while in flight
        self._in_flight: set[str] = set()
        self._changed = asyncio.Event()
        self.closed = False

    def add(self, key: str, delay: float = 0.0) -> None:
        due = time.monotonic() + delay
        if key in self._in_flight:
            self._again[key] = min(self._again.get(key, math.inf), due)
        else:
            self._wait(key, due)
        self._changed.set()

    def _wait(self, key: str, due: float) -> None:
        if due < self._due.get(key, math.inf):
            self._due[key] = due
            heapq.heappush(self._heap, (due, key))

    def discard(self, key: str) -> None:
        self._due.pop(key, None)
        self._again.pop(key, None)

    async def get(self) -> str | None:
        """The next due key (marked in flight), or None once the queue is closed."""
        while not self.closed:
            while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # discarded, or brought forward by a later add
            now = time.monotonic()
            if self._heap and self._heap[0][0] <= now:
                _, key = heapq.heappop(self._heap)
                del self._due[key]
                self._in_flight.add(key)
                return key
            self._changed.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass
        return None

    def done(self, key: str) -> None:
        self._in_flight.discard(key)
        if key in self._again:
            self._wait(key, self._again.pop(key))
            self._changed.set()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    def depth(self) -> int:
        return len(self._due) + len(self._again)

    def due_in(self, key: str) -> float | None:
        due = self._due.get(key, self._again.get(key))
        return None if due is None else max(0.0, due - time.monotonic())

    @property
    def in_flight(self) -> frozenset[str]:
        return frozenset(self._in_flight)


class Backoff:
    """delay(n) = min(cap, base * 2**(n-1)), then jittered to a random value in [delay/2, delay]."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self.failures: dict[str, int] = {}
        self._rng = rng or random.Random()

    def failed(self, key: str) -> float:
        n = self.failures[key] = self.failures.get(key, 0) + 1
        return backoff(n, self.base, self.cap, self._rng)

    def succeeded(self, key: str) -> None:
        self.failures.pop(key, None)
