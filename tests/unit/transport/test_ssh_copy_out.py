"""SSHConnection.copy_out over a real SSH session on loopback: a large answer handed on whole, in order and in
pieces (never held); more than asked for is a host error; the receiving side's own failure (a full disk) is raised
as it is, and nothing more is read. Also: waiting for a busy connection's session is bounded."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path

import asyncssh
import pytest

from reconciler.errors import TransientHostError
from reconciler.spec.desired import Target
from reconciler.transport.ssh import MAX_SESSIONS, SSHConnection
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


async def test_waiting_for_a_busy_connections_session_is_bounded_by_the_commands_timeout(tmp_path: Path) -> None:
    """Every session of the connection held by a long command: the next command is refused once its own timeout has
    gone by (a caller holding a restart lock never waits behind them for ever), and runs once one is free."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    async with LoopbackSSH([key]) as server:
        conn = await connected(server, key, tmp_path)
        busy = [asyncio.ensure_future(conn.run(["sleep", "3"], timeout=30)) for _ in range(MAX_SESSIONS)]
        try:
            await asyncio.sleep(0.3)  # every session taken
            began = time.monotonic()
            with pytest.raises(TransientHostError, match=f"not started: all {MAX_SESSIONS} sessions busy for 0.5s"):
                await conn.run(["echo"], timeout=0.5)
            assert time.monotonic() - began < 2.0
            assert (await conn.run(["echo"], timeout=30)).ok  # a session free once a long one ends
            assert all(r.ok for r in await asyncio.gather(*busy))
        finally:
            for task in busy:
                task.cancel()
            await conn.close()
