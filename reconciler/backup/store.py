"""Where etcd snapshots are kept on this machine: a directory of them, each with what is known of it beside it.

Owns the names (`etcd-<UTC time>-r<revision>.db`, never reused, its record `<name>.json`: member, revision, keys, size, sha256,
when, how long, the cluster's members then, what a restore needs besides it), receiving one (a file created exclusively, mode 0600, renamed into place only once whole and
checked: a reader never sees half a snapshot), listing them newest first, and retention (`prune`: the newest
`keep`, none older than `max_age` but the newest, which is never removed). Pure file handling on this machine.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SUFFIX = ".db"
SUFFIXES = (SUFFIX, SUFFIX + ".age")  # a snapshot, plain or encrypted with age
PREFIX = "etcd-"


@dataclass(frozen=True)
class Kept:
    path: str
    member: str  # the host it was taken from
    revision: int
    keys: int
    size: int  # bytes, etcd's trailer included
    sha256: str  # of the snapshot (before encryption, when encrypted)
    taken_at: float  # unix time the snapshot began
    seconds: float  # how long taking and checking it took
    cluster: tuple[str, ...] = ()  # its members then, "name=peer URL" sorted: which cluster it is of (none: unknown)
    encrypted: str = ""  # "age": the file is encrypted to the EtcdBackup's recipients (its name ends .age)
    needs: tuple[
        str, ...
    ] = ()  # what a restored cluster needs besides it, as the specs say it: the CA, the encryption config

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
        try:
            json.dump(asdict(kept), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
            os.replace(f.name, record)
        except BaseException:
            os.unlink(f.name)
            raise
    os.replace(partial, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return kept


MAX_RECORD_BYTES = 8192
MAX_MEMBERS = 16
_INT_FIELDS = ("revision", "keys", "size")


def listed(directory: Path) -> list[Kept]:
    """The snapshots kept in `directory`, newest first. Only a regular file (a link is not one) with a record that is
    itself a regular file of at most MAX_RECORD_BYTES holding the fields with their types (numbers finite, integers
    in 0..2**63, a time no later than a day from now) is listed: anything else is not a snapshot of ours."""
    out: list[Kept] = []
    if not directory.is_dir():
        return out
    for path in directory.glob(f"{PREFIX}*"):
        if not path.name.endswith(SUFFIXES):
            continue
        kept = _read(path)
        if kept is not None:
            out.append(kept)
    return sorted(out, key=lambda k: k.taken_at, reverse=True)


def _read(path: Path) -> Kept | None:
    record = Path(f"{path}.json")
    try:
        if not (stat.S_ISREG(path.lstat().st_mode) and stat.S_ISREG(record.lstat().st_mode)):
            return None
        with open(record, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW)) as f:
            text = f.read(MAX_RECORD_BYTES + 1)
        raw = json.loads(text) if len(text) <= MAX_RECORD_BYTES else None
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    ints = [raw.get(k) for k in _INT_FIELDS]
    times = [raw.get("taken_at"), raw.get("seconds")]
    if not all(type(v) is int and 0 <= v < 2**63 for v in ints):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in times):
        return None
    if not (isinstance(raw.get("member"), str) and isinstance(raw.get("sha256"), str)):
        return None
    if raw["taken_at"] > time.time() + 86400:  # a clock far ahead when it was taken: it would never age
        return None
    cluster = raw.get("cluster", [])
    if not isinstance(cluster, list) or len(cluster) > MAX_MEMBERS:
        return None
    if not all(isinstance(m, str) and 0 < len(m) <= 300 for m in cluster):
        return None
    needs = raw.get("needs", [])
    if (
        not isinstance(needs, list)
        or len(needs) > MAX_MEMBERS
        or not all(isinstance(n, str) and len(n) <= 300 for n in needs)
    ):
        return None
    encrypted = raw.get("encrypted", "")
    if encrypted not in ("", "age") or (encrypted == "age") != path.name.endswith(".age"):
        return None
    return Kept(
        str(path),
        raw["member"][:255],
        raw["revision"],
        raw["keys"],
        raw["size"],
        raw["sha256"][:64],
        raw["taken_at"],
        raw["seconds"],
        tuple(cluster),
        encrypted,
        tuple(needs),
    )


def beside(snapshot: Path) -> Kept | None:
    """The record kept beside `snapshot` when it is one of ours (None: a file without one, e.g. taken by hand)."""
    return _read(snapshot)


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
            path.unlink(missing_ok=True)  # unlink removes a link, never what it leads to
    for leftover in [*directory.glob(".receiving-*"), *directory.glob(".record-*")] if directory.is_dir() else ():
        try:
            if stat.S_ISREG(leftover.lstat().st_mode) and now - leftover.lstat().st_mtime > 3600:
                leftover.unlink(missing_ok=True)
        except OSError:
            continue  # gone meanwhile (a receive of another process finished)
    return gone
