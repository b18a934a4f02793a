"""etcd's snapshot trailer (backup.snapshot_file): a whole snapshot passes in any chunking; one cut anywhere, or
with a byte changed, does not. The real thing (a snapshot of a running etcd) is checked in tests/shipped."""

from __future__ import annotations

import hashlib
import os

import pytest

from reconciler.backup.snapshot_file import Trailer


def snapshot(pages: int = 4) -> bytes:
    db = os.urandom(4096 * pages)
    return db + hashlib.sha256(db).digest()


def checked(data: bytes, chunk: int) -> str | None:
    trailer = Trailer()
    for i in range(0, len(data), chunk):
        trailer.feed(data[i : i + chunk])
    assert trailer.size == len(data) and trailer.file_sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    return trailer.problem()


@pytest.mark.parametrize("chunk", [1, 7, 31, 32, 33, 4096, 65536])
def test_a_whole_snapshot_passes_in_any_chunking(chunk: int) -> None:
    assert checked(snapshot(), chunk) is None


@pytest.mark.parametrize("cut", [1, 16, 32, 33, 4096, 8192 + 100])
def test_a_snapshot_cut_short_is_told(cut: int) -> None:
    data = snapshot()
    said = checked(data[:-cut], 1000)  # a cut of whole pages keeps the size's form: its trailer no longer matches
    assert said is not None and ("cut short" in said or "does not match" in said)


def test_a_changed_byte_or_a_cut_padded_back_to_size_is_told() -> None:
    data = bytearray(snapshot())
    data[100] ^= 1
    assert "does not match" in (checked(bytes(data), 4096) or "")
    whole = snapshot()
    padded = whole[:8192] + bytes(len(whole) - 8192)
    assert "does not match" in (checked(padded, 4096) or "")


def test_nothing_or_a_trailer_alone_is_not_a_snapshot() -> None:
    assert "no database" in (checked(b"", 1) or "")
    assert "no database" in (checked(hashlib.sha256(b"").digest(), 8) or "")
