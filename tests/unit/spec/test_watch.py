"""The spec watcher's debounce, on a real directory (watchfiles, inotify): a burst of edits that never pauses is a
reload every LONGEST_BURST_S, not one per edit; a single edit is one reload."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from reconciler.spec.watch import LONGEST_BURST_S, watch_specs


async def test_a_burst_of_edits_is_a_few_reloads_and_one_edit_is_one(tmp_path: Path) -> None:
    spec = tmp_path / "a.yaml"
    spec.write_text("x")
    calls: list[list[str]] = []
    stop = asyncio.Event()

    async def on_change(paths: list[str]) -> None:
        calls.append(paths)

    watcher = asyncio.create_task(watch_specs(tmp_path, on_change, stop, debounce_ms=100))
    try:
        await asyncio.sleep(0.5)  # the watcher is up
        began = time.monotonic()
        for i in range(400):  # an edit every ~10 ms for ~4-5 s: never 100 ms of quiet
            spec.write_text(str(i))
            await asyncio.sleep(0.01)
        burst = time.monotonic() - began
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not calls:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # past the quiet time: whatever the burst left is reported by now
        reloads = len(calls)
        assert 1 <= reloads <= burst / LONGEST_BURST_S + 2, (reloads, burst)  # every 3 s at most, plus the tail
        (tmp_path / ".a.yaml.swp").write_text("editor noise")  # not a spec: no reload
        spec.write_text("one more")
        while time.monotonic() < deadline and len(calls) == reloads:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        assert calls[reloads:] == [[str(spec)]]
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 10)


async def _calls_until(calls: list[list[str]], n: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while len(calls) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(calls) >= n, calls


async def test_a_directory_that_appears_later_and_one_replaced_by_another_are_followed(tmp_path: Path) -> None:
    """The daemon may start before its specs are deployed; a deploy moves a new directory into place (the old one
    renamed away, as `mv` or a `git clone` into place does): each is a change, and edits in the new one are seen."""
    specs = tmp_path / "specs"
    calls: list[list[str]] = []
    stop = asyncio.Event()

    async def on_change(paths: list[str]) -> None:
        calls.append(paths)

    watcher = asyncio.create_task(watch_specs(specs, on_change, stop, debounce_ms=50))
    try:
        await asyncio.sleep(0.2)
        assert not watcher.done()  # a missing directory does not end the watch
        specs.mkdir()
        await _calls_until(calls, 1)
        assert calls[0] == [str(specs)]
        (specs / "a.yaml").write_text("1")
        await _calls_until(calls, 2)
        assert calls[1] == [str(specs / "a.yaml")]
        new = tmp_path / "specs.new"
        new.mkdir()
        (new / "a.yaml").write_text("2")
        specs.rename(tmp_path / "specs.old")
        new.rename(specs)
        await _calls_until(calls, 3)
        assert str(specs) in calls[2] or str(specs / "a.yaml") in calls[2], calls
        settled = len(calls)
        (tmp_path / "specs.old" / "a.yaml").write_text("the old directory is no longer watched")
        (specs / "b.yaml").write_text("3")  # the new one is
        await _calls_until(calls, settled + 1)
        await asyncio.sleep(0.3)
        assert calls[settled:] == [[str(specs / "b.yaml")]], calls
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 10)
