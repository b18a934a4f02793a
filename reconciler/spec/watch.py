"""Watching the spec directory: debounced batches of YAML edits, as a callback per batch.

Owns the watchfiles loop and which paths count (*.yaml, *.yml; editor swap files do not), and follows the
directory itself: one that does not exist yet is waited for, and one replaced by another (a deploy's `mv`, a
`git clone` into place, a symlink flipped) is watched anew; either is a change. The daemon reloads and re-renders
the specs on each batch.
"""

from __future__ import annotations

import asyncio
import os
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
FOLLOW_S = 0.5  # how often the directory's own identity is looked at (a stat)


def _identity(spec_dir: Path) -> tuple[int, int] | None:
    """Which directory `spec_dir` names now (device, inode), or None when it names none."""
    try:
        st = os.stat(spec_dir)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if os.path.isdir(spec_dir) else None


async def _until_moved(spec_dir: Path, was: tuple[int, int], stop: asyncio.Event, moved: asyncio.Event) -> None:
    """Set `moved` once `spec_dir` no longer names the directory `was` (or on `stop`)."""
    while not stop.is_set() and _identity(spec_dir) == was:
        try:
            await asyncio.wait_for(stop.wait(), FOLLOW_S)
        except TimeoutError:
            pass
    moved.set()


async def _follow(spec_dir: Path, batches: asyncio.Queue[set[str]], stop: asyncio.Event, debounce_ms: int) -> None:
    """Watch the directory `spec_dir` names, whichever that is over time, until `stop`."""
    seen = _identity(spec_dir)
    while not stop.is_set():
        if seen is None:  # no directory there (yet): look again soon
            try:
                await asyncio.wait_for(stop.wait(), FOLLOW_S)
            except TimeoutError:
                pass
            now = _identity(spec_dir)
            if now is not None:
                log.info("spec directory appeared", path=str(spec_dir))
                batches.put_nowait({str(spec_dir)})
            seen = now
            continue
        moved = asyncio.Event()  # set when this directory is no longer the one `spec_dir` names, or on stop

        looking = asyncio.create_task(_until_moved(spec_dir, seen, stop, moved))
        try:
            async for changes in watchfiles.awatch(
                # watchfiles hands a batch over once no change came for STEP_MS (and under edits that never pause,
                # every ~STEP_MS anyway): watch_specs' quiet time and cap make the bursts
                spec_dir,
                watch_filter=_is_spec,
                debounce=10 * debounce_ms,
                step=STEP_MS,
                stop_event=moved,
                recursive=True,
            ):
                batches.put_nowait({p for _, p in changes})
        except FileNotFoundError:  # gone between the look and the watch
            pass
        finally:
            looking.cancel()
            await asyncio.gather(looking, return_exceptions=True)
        if stop.is_set():
            return
        now = _identity(spec_dir)
        if now != seen:
            log.info("spec directory replaced" if now else "spec directory gone", path=str(spec_dir))
            batches.put_nowait({str(spec_dir)})
        seen = now


async def watch_specs(
    spec_dir: Path, on_change: Callable[[list[str]], Awaitable[object]], stop: asyncio.Event, debounce_ms: int = 100
) -> None:
    """Call `on_change(paths)` once the directory has been quiet for `debounce_ms` after edits, until `stop`.

    A burst of edits (a script, a checkout, an editor saving often) is one call; under edits that never
    pause, one call every LONGEST_BURST_S (or 10 x `debounce_ms`, if longer), so the daemon still follows along.
    """
    batches: asyncio.Queue[set[str]] = asyncio.Queue()
    watcher = asyncio.create_task(_follow(spec_dir, batches, stop, debounce_ms), name="watchfiles")
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
