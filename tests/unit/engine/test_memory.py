"""glibc memory calls: release_free_memory gives back free pages in the middle of the heap; pin_malloc_thresholds
keeps large buffers out of the heap and trims its top even after glibc would have raised its thresholds."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[3]

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
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},
    ).stdout
    before, after = map(float, out.split())
    assert before - after > 5, (before, after)  # ~20 MB of holes; a no-op would leave RSS where it was


PIN_PROBE = """
import ctypes, sys
from reconciler.engine.memory import Mallinfo2
from reconciler.engine.memory import pin_malloc_thresholds, release_free_memory

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
big = bytes(1_000_000)
del big  # a freed mmapped chunk: glibc raises its mmap threshold to ~1 MB, its trim threshold to ~2 MB
if sys.argv[1] == "pin":
    assert pin_malloc_thresholds()
release_free_memory()  # start from a heap without free space at its top
before = libc.mallinfo2()
buffer = bytearray(256 * 1024)  # the size of asyncio's receive buffer
mapped = libc.mallinfo2().hblkhd - before.hblkhd
del buffer
blocks: list[bytes] = [b""] * 100  # the list's own array first, below what follows
for i in range(100):
    blocks[i] = bytes(4000)  # ~400 KB on the heap's top (over pymalloc's 512 B, over tcache's 1 KB)
del blocks  # freed, top first: does the top go back to the kernel?
print(mapped, libc.mallinfo2().arena - before.arena)
"""

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_pin_malloc_thresholds_keeps_large_buffers_off_the_heap_and_trims_its_top() -> None:
    def run(mode: str) -> tuple[int, int]:
        out = subprocess.run(
            [sys.executable, "-c", PIN_PROBE, mode],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={**CLEAN_ENV, "MALLOC_ARENA_MAX": "2"},
        ).stdout
        mapped, kept = map(int, out.split())
        return mapped, kept

    dynamic, pinned = run("dynamic"), run("pin")
    assert dynamic[0] == 0 and dynamic[1] > 300_000  # glibc's own way: the buffer on the heap, the freed top kept
    assert pinned[0] >= 256 * 1024  # pinned: the buffer in a mapping of its own
    assert pinned[1] < 200_000  # and the freed top trimmed back


ARENA_PROBE = """
import ctypes, os, sys, tempfile, threading
from reconciler.engine.memory import pin_malloc_thresholds

if sys.argv[1] == "pin":
    assert pin_malloc_thresholds()
kept = []
thread = threading.Thread(target=lambda: kept.extend(bytes(4000) for _ in range(2000)))  # 8 MB from a thread
thread.start()
thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile("r") as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(out.read().count("<heap nr="))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_pin_malloc_thresholds_keeps_every_thread_on_one_heap() -> None:
    """A worker thread's allocations (the spec load's answer, unpickled there) land in the main heap, not in an
    arena of the thread's own; unpinned, glibc gives the thread a second heap."""

    def heaps(mode: str) -> int:
        argv = [sys.executable, "-c", ARENA_PROBE, mode]
        return int(subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO, env=CLEAN_ENV).stdout)

    assert heaps("plain") == 2
    assert heaps("pin") == 1
