"""SSHConnection.copy_out over a real SSH session on loopback: a large answer handed on whole, in order and in
pieces (never held); more than asked for is a host error; the receiving side's own failure (a full disk) is raised
as it is, and nothing more is read."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import asyncssh
import pytest

from reconciler.errors import TransientHostError
from reconciler.spec.desired import Target
from reconciler.transport.ssh import SSHConnection
from tests.support.sshd import LoopbackSSH, write_key

ANSWER = os.urandom(3 * 1024 * 1024 + 17)


async def connected(server: LoopbackSSH, key: asyncssh.SSHKey, tmp_path: Path) -> SSHConnection:
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line())
    identity = write_key(key, tmp_path / "id")
    target = Target("m1", "127.0.0.1", port=server.port, identity_file=str(identity), known_hosts=str(known))
    return await SSHConnection.open(target, attempts=1)


async def test_a_large_answer_is_handed_on_whole_in_pieces(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    async with LoopbackSSH([key], output=ANSWER) as server:
        conn = await connected(server, key, tmp_path)
        try:
            pieces: list[bytes] = []
            result = await conn.copy_out(["cat", "big"], pieces.append, timeout=30, max_bytes=len(ANSWER))
            assert result.ok and result.stdout == b"" and b"".join(pieces) == ANSWER and len(pieces) > 1
            with pytest.raises(TransientHostError, match="answered more than"):
                await conn.copy_out(["cat", "big"], pieces.append, timeout=30, max_bytes=len(ANSWER) - 1)

            def full(_: bytes) -> None:
                raise OSError(errno.ENOSPC, "No space left on device")

            with pytest.raises(OSError, match="No space left") as failed:
                await conn.copy_out(["cat", "big"], full, timeout=30, max_bytes=len(ANSWER))
            assert not isinstance(failed.value, TransientHostError)
            assert (await conn.copy_out(["cat", "big"], pieces.append, timeout=30, max_bytes=len(ANSWER))).ok
        finally:
            await conn.close()
