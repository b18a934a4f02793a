"""Give glibc's free heap pages back to the kernel, so a long-running daemon's RSS stays flat.

The soak (bench/soak.py, RELIABILITY.md) showed the daemon's memory in use flat for hours, while glibc's
main heap slowly gathered free holes between live chunks: free() only shrinks a heap from its top, so
RSS crept up ~0.04 MB a minute. malloc_trim(0) also releases whole free pages inside the heap
(madvise DONTNEED). It costs about a millisecond on the daemon's heap; the daemon calls it once a minute.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Callable, cast

TRIM_PERIOD_S = 60.0


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None on a libc without it (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the libc already loaded into this process
    except AttributeError:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return cast(Callable[[int], int], trim)


def release_free_memory() -> bool:
    """Return free heap pages to the kernel; True when the libc could (glibc), False when it has no such call."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
