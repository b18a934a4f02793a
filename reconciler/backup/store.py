"""Where etcd snapshots are kept on this machine: a directory of them, each with what is known of it beside it.

Owns the names (`etcd-<UTC time>-r<revision>.db`, never reused, its record `<name>.json`: member, revision, keys, size, sha256,
when, how long), receiving one (a file created exclusively, mode 0600, renamed into place only once whole and
checked: a reader never sees half a snapshot), listing them newest first, and retention (`prune`: the newest
`keep`, none older than `max_age` but the newest, which is never removed). Pure file handling on this machine.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SUFFIX = ".db"
PREFIX = "etcd-"


@dataclass(frozen=True)
class Kept:
    path: str
    member: str  # the host it was taken from
    revision: int
    keys: int
    size: int  # bytes, etcd's trailer included
    sha256: str  # of the file as kept
    taken_at: float  # unix time the snapshot began
    seconds: float  # how long taking and checking it took

    @property
    def record(self) -> Path:
        return Path(self.path + ".json")


def name(taken_at: float, revision: int) -> str:
    """`etcd-<UTC time, to the millisecond>-r<revision>.db`: two snapshots never share a name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(taken_at)) + f".{int(taken_at * 1000) % 1000:03d}Z"
    return f"{PREFIX}{stamp}-r{revision}{SUFFIX}"


def receiving(directory: Path) -> tuple[int, Path]:
    """A new file to receive a snapshot into (descriptor, path): created exclusively, mode 0600, in `directory`
    (made 0700 if missing), a name no finished snapshot has."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=".receiving-", suffix=SUFFIX, dir=directory)
    return fd, Path(path)


def keep(partial: Path, kept: Kept) -> Kept:
    """Name a received, checked snapshot: its record first (written whole, then renamed), then the file itself."""
    final = Path(kept.path)
    record = kept.record
    with tempfile.NamedTemporaryFile("w", dir=final.parent, prefix=".record-", delete=False) as f:
        json.dump(asdict(kept), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, record)
    os.replace(partial, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return kept


def listed(directory: Path) -> list[Kept]:
    """The snapshots kept in `directory`, newest first (a file without a readable record is not listed)."""
    out: list[Kept] = []
    if not directory.is_dir():
        return out
    for path in directory.glob(f"{PREFIX}*{SUFFIX}"):
        try:
            raw = json.loads(Path(f"{path}.json").read_text())
            out.append(Kept(**{**raw, "path": str(path)}))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(out, key=lambda k: k.taken_at, reverse=True)


def prune(directory: Path, keep_count: int, max_age: float | None, now: float | None = None) -> list[Kept]:
    """Remove what retention lets go: beyond the newest `keep_count`, and older than `max_age` seconds (the newest
    is always kept); leftovers of an interrupted receive too. Returns what was removed."""
    now = time.time() if now is None else now
    kept = listed(directory)
    gone = [
        k
        for i, k in enumerate(kept)
        if i > 0 and (i >= keep_count or (max_age is not None and now - k.taken_at > max_age))
    ]
    for k in gone:
        for path in (Path(k.path), k.record):
            path.unlink(missing_ok=True)
    for leftover in directory.glob(".receiving-*") if directory.is_dir() else ():
        if now - leftover.stat().st_mtime > 3600:
            leftover.unlink(missing_ok=True)
    return gone
