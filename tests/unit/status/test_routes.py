"""status.routes: what /metrics, /healthz, /readyz and /status answer, from what the daemon's parts give them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from reconciler.engine.queue import WorkQueue
from reconciler.status.ledger import Ledger
from reconciler.status.metrics import Metrics
from reconciler.status.routes import routes


@dataclass
class Work:
    queue: WorkQueue = field(default_factory=WorkQueue)
    why: str | None = "no valid spec yet"
    backing_off: dict[str, float | None] = field(default_factory=dict)

    def retry_in(self) -> dict[str, float | None]:
        return self.backing_off

    def not_ready(self) -> str | None:
        return self.why


class Tuner:
    def status(self, rollout: Callable[[str], str]) -> dict[str, Any]:
        return {"m1": rollout("m1")}


class Election:
    def status(self) -> dict[str, Any]:
        return {"enabled": True, "leader": "m1"}


def test_readyz_says_why_not_and_healthz_a_stalled_loop() -> None:
    work, beat = Work(), time.monotonic()
    served = routes(Ledger("specs", Metrics()), work, lambda: beat, Tuner(), None)
    assert (served["/readyz"]().status, served["/readyz"]().body) == (503, b"not ready: no valid spec yet\n")
    work.why = None
    assert (served["/readyz"]().status, served["/readyz"]().body) == (200, b"ready\n")
    assert (served["/healthz"]().status, served["/healthz"]().body) == (200, b"ok\n")
    beat -= 31
    assert (served["/healthz"]().status, served["/healthz"]().body) == (503, b"event loop stalled\n")


def test_metrics_carry_the_queue_depth_as_served() -> None:
    work = Work()
    served = routes(Ledger("specs", Metrics()), work, time.monotonic, Tuner(), None)
    work.queue.add("m1")
    work.queue.add("m2", 60)
    answer = served["/metrics"]()
    assert answer.status == 200 and answer.content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
    assert families["reconciler_queue_depth"].samples[0].value == 2


def test_status_has_the_ledger_the_queue_the_backoff_and_each_part_s_own_entry() -> None:
    ledger = Ledger("specs", Metrics())
    ledger.spec_loaded(["m1", "m2"], [])
    work = Work(why=None, backing_off={"m2": 12.3456})
    work.queue.add("m2", 12)
    served = routes(ledger, work, time.monotonic, Tuner(), None)
    answer = served["/status"]()
    assert answer.content_type == "application/json"
    doc = json.loads(answer.body)
    assert doc["ready"] is True and doc["summary"]["queue_depth"] == 1 and doc["summary"]["in_flight"] == []
    assert doc["hosts"]["m2"]["retry_in_seconds"] == 12.346 and doc["hosts"]["m1"]["retry_in_seconds"] is None
    assert doc["tuning"] == {"m1": "pending"} and doc["leader"] == {"enabled": False}
    assert list(doc)[-4:] == ["tuning", "leader", "etcd_snapshots", "certificate_renewals"]
    assert doc["etcd_snapshots"] == {"enabled": False} and doc["certificate_renewals"] == {"enabled": False}
    elected = json.loads(routes(ledger, work, time.monotonic, Tuner(), Election(), Election())["/status"]().body)
    assert elected["leader"] == {"enabled": True, "leader": "m1"}
    assert elected["etcd_snapshots"] == {"enabled": True, "leader": "m1"}  # the part's own entry, as it says it
