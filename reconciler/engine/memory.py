"""Keep a long-running daemon's RSS flat on glibc: a fixed mmap threshold, and free heap pages given back.

The soak (bench/soak.py, RELIABILITY.md) showed the daemon's memory in use flat for hours while glibc's
main heap kept growing. Two causes, two calls:
- glibc's mmap threshold starts at 128 KiB but rises to the size of any mmapped chunk that is freed.
  Once it has, asyncio's 256 KiB receive buffer (one per socket read, shrunk in place to the bytes
  read) is carved from the top of the heap, and every read result still alive when the next read comes
  pins the top higher: the heap grew ~2 MB an hour. `pin_mmap_threshold()` (mallopt, at start) fixes
  the threshold at 128 KiB, so such buffers always get a mapping of their own, unmapped on free.
- free() only shrinks a heap from its top, so holes between live chunks stay resident; malloc_trim(0)
  also releases the whole free pages inside the heap. `release_free_memory()` costs about a
  millisecond on the daemon's heap; the daemon calls it once a minute.
Both are no-ops off glibc (musl, macOS).
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any, Callable, cast

TRIM_PERIOD_S = 60.0
M_MMAP_THRESHOLD = -3  # mallopt's parameter number, <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value, kept from then on


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


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve every allocation of `nbytes` or more from a mapping of its own, for good (no dynamic raising).

    True when glibc took it. Costs a few microseconds per large allocation (mmap + munmap): about 12 us per
    256 KiB socket read, measured, against 1.4 us from the heap."""
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, nbytes) == 1


def release_free_memory() -> bool:
    """Return free heap pages to the kernel; True when the libc could (glibc), False when it has no such call."""
    trim = _glibc("malloc_trim", ctypes.c_size_t)
    if trim is None:
        return False
    trim(0)
    return True
