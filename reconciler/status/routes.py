"""What the daemon's HTTP endpoint answers: GET /metrics, /healthz, /readyz and /status.

Owns each route's answer, built from what it is given: the ledger (records and metrics), the daemon's work as a
`Work` (the queue, who backs off, why not ready: `engine.workers.Workers` is one), the heartbeat's last time, and
the parts that say their own /status entry (the tuner; the election, if any; the etcd snapshots). status/ imports nothing of the
engine, the tuner or the election (they import status/); `status.http` serves the routes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from reconciler.status.http import Response, Route
from reconciler.status.ledger import Ledger

STALLED_S = 30.0  # a heartbeat older than this: /healthz says the event loop stalled


class Queue(Protocol):
    def depth(self) -> int: ...
    @property
    def in_flight(self) -> frozenset[str]: ...


class Tuning(Protocol):
    def status(self, rollout: Callable[[str], str]) -> dict[str, Any]: ...


class Election(Protocol):
    def status(self) -> dict[str, Any]: ...


class Snapshots(Protocol):
    def status(self) -> dict[str, Any]: ...


class Renewals(Protocol):
    def status(self) -> dict[str, Any]: ...


class Work(Protocol):
    """What the routes read of the daemon's work."""

    @property
    def queue(self) -> Queue: ...
    def retry_in(self) -> dict[str, float | None]: ...
    def not_ready(self) -> str | None: ...


def routes(
    ledger: Ledger,
    work: Work,
    beat: Callable[[], float],
    tuner: Tuning,
    leadership: Election | None,
    snapshots: Snapshots | None = None,
    renewals: Renewals | None = None,
) -> dict[str, Route]:
    """The four routes; `beat`: the heartbeat's last `time.monotonic()`."""

    def metrics() -> Response:
        ledger.metrics.queue_depth.set(work.queue.depth())
        return Response(200, ledger.metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")

    def healthz() -> Response:
        stale = time.monotonic() - beat() > STALLED_S
        return Response(503, b"event loop stalled\n") if stale else Response(200, b"ok\n")

    def readyz() -> Response:
        why = work.not_ready()
        return Response(200, b"ready\n") if why is None else Response(503, f"not ready: {why}\n".encode())

    def status() -> Response:
        retry_in = work.retry_in()
        doc = ledger.status_document(
            ready=work.not_ready() is None,
            queue_depth=work.queue.depth(),
            in_flight=list(work.queue.in_flight),
            retry_in=retry_in,
        )
        doc["tuning"] = tuner.status(ledger.rollout_of)
        doc["leader"] = leadership.status() if leadership is not None else {"enabled": False}
        doc["etcd_snapshots"] = snapshots.status() if snapshots is not None else {"enabled": False}
        doc["certificate_renewals"] = renewals.status() if renewals is not None else {"enabled": False}
        return Response(200, json.dumps(doc, indent=2).encode() + b"\n", "application/json")

    return {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz, "/status": status}
