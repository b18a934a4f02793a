"""engine.spec_keeper: the last good specs stay in force, a load says what it changed as a value (and tells `on_loaded`),
and a requested load runs what follows it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reconciler.engine.spec_keeper import Loaded, SpecKeeper
from reconciler.status.ledger import Ledger
from reconciler.status.metrics import Metrics
from tests.support.specs import replace_once


async def test_a_load_says_which_hosts_changed_and_which_left(specs: Path) -> None:
    keeper = SpecKeeper(specs, Ledger(str(specs), Metrics()))
    first = await keeper.load("start")
    assert first is not None and first.first and sorted(first.changed) == ["master-1", "master-2", "master-3"]

    same = await keeper.load("watch")
    assert same is not None and not same.first and same.changed == [] and same.removed == []

    replace_once(specs / "inventory.yaml", "  address: 198.18.0.13\n", "  address: 198.18.0.13\n  port: 2222\n")
    reached = await keeper.load("watch")  # only how master-3 is reached changed
    assert reached is not None and reached.changed == ["master-3"]

    inventory = specs / "inventory.yaml"
    docs = inventory.read_text().split("---\n")
    inventory.write_text("---\n".join(d for d in docs if "name: master-3" not in d))
    gone = await keeper.load("watch")
    assert gone is not None and gone.removed == ["master-3"] and "master-3" not in gone.desired.hosts


async def test_refused_specs_keep_the_last_good_ones(specs: Path) -> None:
    ledger = Ledger(str(specs), Metrics())
    keeper = SpecKeeper(specs, ledger)
    good = await keeper.load("start")
    assert good is not None
    (specs / "bad.yaml").write_text("apiVersion: reconciler/v1\nkind: File\nmetadata: {name: x}\nspec: {path: rel}\n")
    assert await keeper.load("watch") is None
    assert keeper.desired is good.desired and not ledger.spec.valid and "bad.yaml:" in ledger.spec.errors[0]


async def test_a_requested_load_asks_the_overlay_tells_on_loaded_then_runs_then_even_when_refused(specs: Path) -> None:
    told: list[str] = []
    asked: list[int] = []

    async def on_loaded(loaded: Loaded) -> None:
        told.append(f"loaded {len(loaded.changed)}")

    def overlay() -> dict[str, int]:
        asked.append(1)
        return {}

    keeper = SpecKeeper(specs, Ledger(str(specs), Metrics()), overlay, on_loaded)
    done = asyncio.Event()

    def then() -> None:
        told.append("then")
        done.set()

    keeper.request("sighup", then)
    await asyncio.wait_for(done.wait(), 30)
    assert told == ["loaded 3", "then"] and asked == [1] and keeper.desired is not None

    (specs / "bad.yaml").write_text("apiVersion: reconciler/v1\nkind: File\nmetadata: {name: x}\nspec: {path: rel}\n")
    done.clear()
    keeper.request("tuning", then)
    await asyncio.wait_for(done.wait(), 30)
    assert told == ["loaded 3", "then", "then"] and asked == [1, 1]  # refused: on_loaded hears nothing
