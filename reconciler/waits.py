"""Waiting, written once: a pause that ends early on shutdown, the delay before a retry, and the pauses between
looks at something about to happen.

Used by the daemon's loops (resync, heartbeat), the tuner and its journal followers, the work queue's backoff,
SSH connects, and the engine's waits for a restarted unit to be healthy.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator


async def pause(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`, or less if `stopping` is set meanwhile; whether it is set."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        pass
    return stopping.is_set()


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """The delay before retry `attempt` (1-based): min(cap, base * 2**(attempt-1)), jittered to a random value in
    its upper half ([delay/2, delay]), so that hosts that failed together do not retry together."""
    delay = min(cap, base * 2 ** min(max(attempt, 1) - 1, 62))
    return delay / 2 + (rng or random).uniform(0, delay / 2)


def looks(most: float, first: float = 0.1) -> Iterator[float]:
    """Pauses between looks at something expected soon (a restarted unit answering its check): `first`, doubling,
    at most `most`. A quick start is seen quickly; a slow one is not asked more than every `most` seconds."""
    for n in itertools.count():
        yield min(most, first * 2 ** min(n, 62))
