"""Run `reconciler` with a sampler thread that writes where its memory is, for the soak.

    python -m bench.memprobe OUT.jsonl -- run --specs specs ...   # the arguments after -- go to reconciler

Every MEMPROBE_PERIOD seconds (default 10) one JSON line goes to OUT: glibc's own accounting (mallinfo2:
bytes handed out by malloc and still in use, bytes free but kept in its heaps, bytes in its mmapped chunks),
the number of blocks Python's allocator has handed out, and the process's RSS. RSS growing while
`malloc_in_use` and `py_blocks` stay flat is fragmentation or memory that is not malloc's (pymalloc arenas,
thread stacks); `malloc_in_use` growing is a native leak. The soak reads /proc/PID/smaps itself.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from pathlib import Path

from reconciler.engine.memory import Mallinfo2


def _rss_kb() -> int:
    return next(
        int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:")
    )


def sample() -> dict[str, float]:
    """One reading of this process's memory, in MB (py_blocks is a count)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    mb = 1024 * 1024
    return {
        "t": round(time.time(), 1),
        "rss": round(_rss_kb() / 1024, 2),
        "malloc_in_use": round(info.uordblks / mb, 3),
        "malloc_free": round(info.fordblks / mb, 3),
        "malloc_heap": round(info.arena / mb, 3),
        "malloc_mmap": round(info.hblkhd / mb, 3),
        "py_blocks": sys.getallocatedblocks(),
        "threads": threading.active_count(),
    }


def _sampler(out: Path, period: float) -> None:
    with out.open("a") as stream:
        while True:
            stream.write(json.dumps(sample()) + "\n")
            stream.flush()
            time.sleep(period)


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        raise SystemExit(__doc__)
    out, _, *argv = sys.argv[1:]
    period = float(os.environ.get("MEMPROBE_PERIOD", "10"))
    threading.Thread(target=_sampler, args=(Path(out), period), name="memprobe", daemon=True).start()
    from reconciler.cli import main as reconciler

    return reconciler(argv)


if __name__ == "__main__":
    sys.exit(main())
