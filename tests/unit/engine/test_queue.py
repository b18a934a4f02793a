"""The daemon's work queue and backoff: dedup, one in flight per key, delays, exponential growth with a cap."""

from __future__ import annotations

import asyncio
import random

import pytest

from reconciler.engine.queue import Backoff, WorkQueue


async def test_keys_are_deduplicated_and_one_is_in_flight_at_a_time() -> None:
    q = WorkQueue()
    q.add("m1")
    q.add("m1")
    q.add("m2")
    assert q.depth() == 2
    first = await q.get()
    second = await q.get()
    assert {first, second} == {"m1", "m2"} and q.depth() == 0
    q.add("m1")  # added while in flight: runs again once, after done()
    q.add("m1")
    assert q.depth() == 1
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not getter.done()  # m1 is still in flight
    q.done("m1")
    assert await asyncio.wait_for(getter, 1) == "m1"


async def test_delayed_key_waits_until_due_and_an_earlier_add_wins() -> None:
    q = WorkQueue()
    q.add("m1", delay=3600)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.05)
    assert not getter.done()
    assert 3500 < (q.due_in("m1") or 0) <= 3600
    q.add("m1")  # a spec edit does not wait for the backoff
    assert await asyncio.wait_for(getter, 1) == "m1"


async def test_close_releases_waiting_getters() -> None:
    q = WorkQueue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.close()
    assert await asyncio.wait_for(getter, 1) is None


def test_backoff_grows_exponentially_with_jitter_caps_and_resets() -> None:
    b = Backoff(base=1.0, cap=30.0, rng=random.Random(7))
    delays = [b.failed("m3") for _ in range(8)]
    nominal = [1, 2, 4, 8, 16, 30, 30, 30]
    for delay, full in zip(delays, nominal):
        assert full / 2 <= delay <= full
    assert delays[4] > delays[0] * 4  # grows
    assert b.failures["m3"] == 8
    b.succeeded("m3")
    assert "m3" not in b.failures
    assert b.failed("m3") <= 1.0


@pytest.mark.parametrize("n", [100, 10_000])
def test_backoff_never_overflows(n: int) -> None:
    b = Backoff(base=0.5, cap=300.0)
    for _ in range(n):
        delay = b.failed("x")
    assert 150 <= delay <= 300
