"""Watching the spec directory: debounced batches of YAML edits, as a callback per batch.

Owns the watchfiles loop and which paths count (*.yaml, *.yml; editor swap files do not).
The daemon reloads and re-renders the specs on each batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
import watchfiles

log = structlog.get_logger(__name__)


def _is_spec(change: watchfiles.Change, path: str) -> bool:
    return path.endswith((".yaml", ".yml")) and not Path(path).name.startswith(".")


STEP_MS = 20  # how often watchfiles looks for changes
# Under edits that never pause, a reload at least this often (or 10 x the debounce, if longer): each reload can
# restart what the edits touch, and systemd refuses a unit's 6th start within 10 s
LONGEST_BURST_S = 3.0


async def watch_specs(
    spec_dir: Path, on_change: Callable[[list[str]], Awaitable[object]], stop: asyncio.Event, debounce_ms: int = 100
) -> None:
    """Call `on_change(paths)` once the directory has been quiet for `debounce_ms` after edits, until `stop`.

    A burst of edits (a script, a checkout, an editor saving often) is one call; under edits that never
    pause, one call every LONGEST_BURST_S (or 10 x `debounce_ms`, if longer), so the daemon still follows along.
    """
    batches: asyncio.Queue[set[str]] = asyncio.Queue()

    async def watch() -> None:
        async for changes in watchfiles.awatch(
            # watchfiles hands a batch over once no change came for STEP_MS (and under edits that never pause, every
            # ~STEP_MS anyway): this loop's quiet time and cap make the bursts
            spec_dir,
            watch_filter=_is_spec,
            debounce=10 * debounce_ms,
            step=STEP_MS,
            stop_event=stop,
            recursive=True,
        ):
            batches.put_nowait({p for _, p in changes})

    watcher = asyncio.create_task(watch(), name="watchfiles")
    quiet, longest = debounce_ms / 1000, max(LONGEST_BURST_S, 10 * debounce_ms / 1000)
    try:
        while not stop.is_set():
            getter = asyncio.ensure_future(batches.get())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({getter, stopper, watcher}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                if watcher.done():
                    watcher.result()  # surface a watcher failure
                continue
            paths = set(getter.result())
            deadline = asyncio.get_running_loop().time() + longest
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    paths |= await asyncio.wait_for(batches.get(), min(quiet, left))
                except TimeoutError:
                    break
            log.info("spec change", paths=sorted(paths))
            await on_change(sorted(paths))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
