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


async def watch_specs(spec_dir: Path, on_change: Callable[[list[str]], Awaitable[None]], stop: asyncio.Event,
                      debounce_ms: int = 300) -> None:
    """Call `on_change(paths)` after every debounced batch of spec edits, until `stop` is set."""
    async for changes in watchfiles.awatch(spec_dir, watch_filter=_is_spec, debounce=debounce_ms, step=50,
                                           stop_event=stop, recursive=True):
        paths = sorted({p for _, p in changes})
        log.info("spec change", paths=paths)
        await on_change(paths)
