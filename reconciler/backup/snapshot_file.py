"""What makes an etcd snapshot file whole: etcd's own integrity trailer, checked as the bytes stream in.

A snapshot (`etcdctl snapshot save`, etcd's Maintenance.Snapshot stream) is the member's bbolt database, whose size
is a multiple of its page size, followed by the SHA-256 of those bytes (32 bytes). etcd's restore tells a snapshot
with its trailer by the file's size (size % 512 == 32) and refuses one whose trailer does not match ("snapshot
missing hash" when there is none). `Trailer` checks the same without holding the file: fed chunk by chunk, it
hashes all but the last 32 bytes seen, so a copy cut anywhere (mid-stream, mid-page, in the trailer) is told from
a whole one. Pure.
"""

from __future__ import annotations

import hashlib

HASH_SIZE = 32  # sha256
SIZE_MODULUS = 512  # etcd: a snapshot has its hash when size % 512 == 32


class Trailer:
    """Feed a snapshot's bytes in order (`feed`), then ask `problem()`: None when whole."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._tail = b""  # the last HASH_SIZE bytes seen: the trailer, if the stream ends here
        self.size = 0
        self.file_sha256 = hashlib.sha256()  # of every byte, trailer included: what the stored copy is checked by

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.file_sha256.update(chunk)
        joined = self._tail + chunk
        self._hash.update(joined[:-HASH_SIZE])
        self._tail = joined[-HASH_SIZE:]

    def problem(self) -> str | None:
        """Why these bytes are not a whole snapshot, or None."""
        if self.size <= HASH_SIZE:
            return f"{self.size} bytes: no database in it"
        if self.size % SIZE_MODULUS != HASH_SIZE:
            return f"{self.size} bytes: not a database followed by its sha256 (cut short, or not a snapshot)"
        if self._hash.digest() != self._tail:
            return "its sha256 trailer does not match its database (corrupt, or cut and padded)"
        return None
