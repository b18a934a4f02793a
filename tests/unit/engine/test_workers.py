"""engine.workers: what a good spec load tells the passes, readiness, the retry a failed pass earns, the resync's pick."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from reconciler.engine.rollouts import Rollouts
from reconciler.engine.spec_keeper import SpecKeeper
from reconciler.engine.workers import Workers
from reconciler.errors import TransientHostError
from reconciler.settings import DaemonSettings
from reconciler.spec.desired import Target
from reconciler.status.ledger import Ledger
from reconciler.status.metrics import Metrics
from reconciler.transport.base import Connection
from tests.support.specs import replace_once


async def unreachable(target: Target) -> Connection:
    raise TransientHostError(f"{target.name}: unreachable (test)", ssh=True)


def workers_on(specs: Path, tmp_path: Path) -> tuple[Workers, SpecKeeper]:
    ledger = Ledger(str(specs), Metrics())
    keeper = SpecKeeper(specs, ledger)
    settings = DaemonSettings(spec_dir=specs, state_dir=tmp_path / "state", backoff_base=3600, backoff_cap=3600)
    return Workers(settings, keeper, ledger, unreachable, Rollouts(), asyncio.Event()), keeper


async def test_a_load_says_which_connections_go_and_which_hosts_await_their_first_pass(
    specs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workers, keeper = workers_on(specs, tmp_path)
    assert workers.not_ready() == "no valid spec yet"
    first = await keeper.load("start")
    assert first is not None
    workers.took(first)
    workers.queue_changed(first)
    assert workers.not_ready() == "first pass pending on 3 host(s)" and workers.queue.depth() == 3

    forgotten: list[str] = []
    monkeypatch.setattr(workers.session, "forget", forgotten.append)
    replace_once(specs / "inventory.yaml", "  address: 198.18.0.13\n", "  address: 198.18.0.13\n  port: 2222\n")
    reached = await keeper.load("watch")  # only how master-3 is reached changed: its connection goes
    assert reached is not None
    workers.took(reached)
    assert forgotten == ["master-3"]

    inventory = specs / "inventory.yaml"
    inventory.write_text("---\n".join(d for d in inventory.read_text().split("---\n") if "name: master-3" not in d))
    gone = await keeper.load("watch")  # master-3 left: out of the queue, its connection gone
    assert gone is not None
    workers.took(gone)
    assert forgotten == ["master-3", "master-3"] and workers.queue.due_in("master-3") is None
    assert workers.queue.depth() == 2


async def test_a_failed_pass_backs_off_and_the_resync_leaves_the_host_to_its_own_schedule(
    specs: Path, tmp_path: Path
) -> None:
    workers, keeper = workers_on(specs, tmp_path)
    loaded = await keeper.load("start")
    assert loaded is not None
    workers.took(loaded)
    worker = asyncio.create_task(workers.run())
    workers.queue.add("master-1")
    deadline = time.monotonic() + 30
    while "master-1" not in workers.backoff.failures:
        assert time.monotonic() < deadline and not worker.done()
        await asyncio.sleep(0.01)
    record = workers.ledger.records["master-1"]
    assert record.status == "failed" and record.failures == 1 and record.retry_in_seconds is not None
    assert (workers.retry_in()["master-1"] or 0) > 1000  # backoff_base: an hour, jittered down to half
    assert workers.not_ready() == "first pass pending on 2 host(s)"  # a failed pass is a first pass too

    workers.queue_all()  # master-2 and master-3 now; master-1 keeps its retry
    assert workers.queue.due_in("master-2") == 0 and (workers.queue.due_in("master-1") or 0) > 1000
    workers.queue.close()
    await asyncio.wait_for(worker, 30)
