"""Waiting, written once: a pause that ends early on shutdown, and the delay before a retry.

Used by the daemon's loops (resync, heartbeat), the tuner and its journal followers, the work queue's backoff
and SSH connects.
"""

from __future__ import annotations

import asyncio
import random


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
