"""The clock leases are timed on here: CLOCK_BOOTTIME, which keeps counting while the machine is suspended.

A lease in etcd runs out in etcd's time, suspended or not; CLOCK_MONOTONIC (`time.monotonic`) stops while this
machine sleeps, so a laptop's `apply` that resumes would still believe in a lock etcd expired long ago. Where
there is no CLOCK_BOOTTIME (not Linux) `time.monotonic` is the best there is; etcd's own look before each action
(`RestartLock.turn`'s confirm, `Elector.fenced`) still catches a lost lease there.
"""

from __future__ import annotations

import time


def boottime() -> float:
    """Seconds on CLOCK_BOOTTIME (suspend counted), or on the monotonic clock where there is none."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()
