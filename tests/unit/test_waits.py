"""The two waiting idioms, written once (reconciler.waits): the backoff every retry uses, the pause loops use."""

from __future__ import annotations

import asyncio
import random

from reconciler.waits import backoff, looks, pause


def test_backoff_doubles_to_its_cap_within_the_upper_half_of_each_delay() -> None:
    rng = random.Random(1)
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (10_000, 8.0)]:
        delays = [backoff(attempt, 0.5, 8.0, rng) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > full / 4  # jittered, not one value for every host
    assert backoff(0, 0.5, 8.0, rng) <= 0.5  # an attempt number below 1 is the first


async def test_pause_ends_early_on_stopping_and_says_so() -> None:
    stopping = asyncio.Event()
    assert await pause(stopping, 0.01) is False
    asyncio.get_running_loop().call_later(0.05, stopping.set)
    began = asyncio.get_running_loop().time()
    assert await pause(stopping, 60) is True
    assert asyncio.get_running_loop().time() - began < 30


def test_looks_start_quick_and_slow_down_to_the_interval() -> None:
    pauses = looks(1.0)
    assert [next(pauses) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert next(looks(0.05)) == 0.05  # an interval below the first pause wins
