"""glibc memory calls: release_free_memory gives back free pages in the middle of the heap; pin_mmap_threshold
keeps large buffers out of the heap even after glibc would have raised its threshold."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import random
from reconciler.engine.memory import release_free_memory

def rss_mb():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')) / 1024

random.seed(1)
buffers = [bytes(random.randint(600, 9000)) for _ in range(6000)]  # ~30 MB from malloc (over pymalloc's 512 B)
kept = buffers[::3]  # every third stays alive: the freed ones are holes glibc cannot trim from the top
del buffers
before = rss_mb()
assert release_free_memory()
print(before, rss_mb())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_free_memory_returns_the_heaps_free_pages() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "MALLOC_ARENA_MAX": "2"}).stdout
    before, after = map(float, out.split())
    assert before - after > 5, (before, after)  # ~20 MB of holes; a no-op would leave RSS where it was


PIN_PROBE = """
import ctypes, sys
from reconciler.engine.memory import pin_mmap_threshold

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
big = bytes(1_000_000)
del big  # a freed mmapped chunk: glibc raises its threshold to ~1 MB (unless pinned)
if sys.argv[1] == "pin":
    assert pin_mmap_threshold()
before = libc.mallinfo2().hblkhd
buffer = bytearray(256 * 1024)  # the size of asyncio's receive buffer
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_pin_mmap_threshold_keeps_large_buffers_out_of_the_heap() -> None:
    def mmapped_growth(mode: str) -> int:
        return int(subprocess.run([sys.executable, "-c", PIN_PROBE, mode], capture_output=True, text=True, check=True,
                                  cwd=REPO, env={**os.environ, "MALLOC_ARENA_MAX": "2"}).stdout)

    assert mmapped_growth("dynamic") == 0  # glibc's own behaviour: the 256 KiB buffer comes from the heap
    assert mmapped_growth("pin") >= 256 * 1024  # pinned: a mapping of its own
