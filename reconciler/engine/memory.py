"""Keep a long-running daemon's RSS flat on glibc: fixed mmap and trim thresholds, one arena, and free heap pages given
back.

The soak (bench/soak.py, RELIABILITY.md) showed the daemon's memory in use flat for hours while glibc's
main heap kept growing. Three causes, two calls:
- glibc's mmap threshold starts at 128 KiB but rises to the size of any larger mmapped chunk that is
  freed (and the trim threshold to twice that). Once it has, asyncio's 256 KiB receive buffer (one per
  socket read, then shrunk to the bytes read) is carved from the top of the heap, and every read result
  still alive when the next read comes holds the top higher: the heap grew ~2.2 MB an hour.
  `pin_malloc_thresholds()` (mallopt, at start) fixes both at 128 KiB, glibc's own starting values, so
  such a buffer normally gets a mapping of its own (shrunk to a page while the result lives, unmapped on
  free) and free space over 128 KiB at the heap's top goes back at once.
- glibc gives each thread that allocates its own arena (up to 8 per core): the spec load's answer, unpickled
  in a worker thread, built every new DesiredState in a second heap, fragmented apart from the main one.
  The daemon's threads allocate little and rarely (loads, the file watcher), so `pin_malloc_thresholds()`
  also sets M_ARENA_MAX to 1: one heap. 1000 emulated hosts: peak RSS ~153 MB against ~158 MB.
- free() only shrinks a heap from its top, so holes between live chunks stay resident; malloc_trim(0)
  also releases the whole free pages inside the heap. `release_free_memory()` costs about a
  millisecond on the daemon's heap; the daemon calls it once a minute.
Both are no-ops off glibc (musl has neither call). Under a preloaded allocator (jemalloc, tcmalloc) they
reach glibc's, which then no longer serves the process: harmless, and useless.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache
from typing import Any, cast

TRIM_PERIOD_S = 60.0
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt's parameter numbers, <malloc.h>
THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value for both, kept from then on


class Mallinfo2(ctypes.Structure):
    """glibc's own accounting (mallinfo2): read by the soak's probe and the memory tests."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@cache
def _glibc(name: str, *argtypes: Any) -> Callable[..., int] | None:
    """A glibc malloc function from the libc already loaded into this process, or None without it."""
    try:
        func = getattr(ctypes.CDLL(None), name)
    except AttributeError:
        return None
    func.argtypes = list(argtypes)
    func.restype = ctypes.c_int
    return cast(Callable[..., int], func)


def pin_malloc_thresholds(nbytes: int = THRESHOLD_BYTES) -> bool:
    """Serve allocations of `nbytes` or more from mappings of their own and trim the heap's top past `nbytes`,
    for good (setting either turns glibc's dynamic raising off). True when glibc took both.

    Costs a mapping per large allocation: a 256 KiB socket read takes ~13 us instead of ~1.4 us (measured)."""
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    mallopt(M_ARENA_MAX, 1)  # before the first load's thread: see the module's docstring
    return all(mallopt(param, nbytes) == 1 for param in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))


def release_free_memory() -> bool:
    """Return free heap pages to the kernel; True when the libc could (glibc), False when it has no such call."""
    trim = _glibc("malloc_trim", ctypes.c_size_t)
    if trim is None:
        return False
    trim(0)
    return True
