"""release_free_memory gives free pages in the middle of glibc's heap back to the kernel."""

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
