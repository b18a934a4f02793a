"""The SSH transport (transport.ssh), attacked: answers bounded against a real SSH server on loopback (a host that
answers forever, big input and stderr, a command ended by a signal, `become: sudo`), and this machine's known_hosts
and identity files crafted (I, J): never quoted, never a stall (the hostile-host review of b861037 and c08d5ce).

A plain test asserts the safe behaviour an attack failed to break (a broken one would be marked
xfail(strict=True): see observe/test_observe_sh_attacks.py). The letter in a test's name (A..J) matches the
review report."""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import PermanentHostError, TransientHostError
from reconciler.spec.desired import Target
from reconciler.transport.ssh import SSHConnection, _connect
from tests.support.hostile_files import CANARY, run_bounded, with_secret

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    return with_secret(tmp_path / "host")


# --------------------------------------------------------------- the transport: bounded answers


class LoopbackHost:
    """A real SSH server on 127.0.0.1 (asyncssh, host key verified as with any host) whose commands are
    answered by `handler`: the transport's channel handling is tested against real SSH packets."""

    def __init__(self, tmp: Path, handler: Any):
        import asyncssh

        self.tmp, self.handler, self.asyncssh = tmp, handler, asyncssh

    async def __aenter__(self) -> Target:
        asyncssh = self.asyncssh
        host_key, client_key = (asyncssh.generate_private_key("ssh-ed25519") for _ in range(2))
        self.server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(client_key.export_public_key().decode()),
            encoding=None,
            process_factory=self.handler,
        )
        port = self.server.sockets[0].getsockname()[1]
        client_key.write_private_key(str(self.tmp / "id"))
        (self.tmp / "id").chmod(0o600)
        (self.tmp / "known").write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
        return Target(
            "loop", "127.0.0.1", port=port, identity_file=str(self.tmp / "id"), known_hosts=str(self.tmp / "known")
        )

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_a_host_answering_forever_is_cut_at_max_output(tmp_path: Path) -> None:
    async def endless(process: Any) -> None:  # never exits, never closes: only the limit ends it
        try:
            while True:
                process.stdout.write(b"A" * 65536)
                await process.stdout.drain()
        except (BrokenPipeError, ConnectionError):
            pass  # the client closed the channel

    async with LoopbackHost(tmp_path, endless) as target:
        conn = await SSHConnection.open(target, attempts=1)
        try:
            # Cut at the limit (not when the command's 30 s are up: that error would say "timed out").
            with pytest.raises(TransientHostError, match="answered more than 1000000 bytes"):
                await conn.run(["bash"], timeout=30, max_output=1_000_000)
            # The connection is still good for the next command (the channel was closed, not the connection).
            with pytest.raises(TransientHostError, match="answered more than 10 bytes"):
                await conn.run(["bash"], timeout=30, max_output=10)
        finally:
            await conn.close()


async def test_a_command_gets_its_input_and_answers_output_stderr_tail_and_status(tmp_path: Path) -> None:
    async def echo(process: Any) -> None:
        data = await process.stdin.read()
        process.stdout.write(b"got " + data)
        process.stderr.write(b"E" * 100_000 + b"the end")
        process.exit(3 if process.command.startswith("fail") else 0)

    async def killed(process: Any) -> None:
        process.exit_with_signal("KILL")

    async with LoopbackHost(tmp_path, echo) as target:
        conn = await SSHConnection.open(target, attempts=1)
        try:
            big = os.urandom(3 * 1024 * 1024)  # more than the channel's window: sent as the host reads it
            ok = await conn.run(["cat"], input=big, timeout=30)
            assert (ok.exit_status, ok.stdout) == (0, b"got " + big)
            assert ok.stderr.endswith(b"the end") and len(ok.stderr) == 64 * 1024  # only the tail is kept
            failed = await conn.run(["fail"], timeout=30)
            assert (failed.exit_status, failed.stdout) == (3, b"got ")
        finally:
            await conn.close()
    async with LoopbackHost(tmp_path, killed) as target:
        conn = await SSHConnection.open(target, attempts=1)
        try:
            assert (await conn.run(["x"], timeout=30)).exit_status == 255  # no exit status: ended by a signal
        finally:
            await conn.close()


# --------------------------------------------------- I, J: local known_hosts and identity files


def connect_error(**kw: Any) -> BaseException:
    try:
        asyncio.run(_connect(Target("h", "127.0.0.1", port=1, **kw)))
    except BaseException as exc:  # noqa: BLE001 - what escapes is the point
        return exc
    raise AssertionError("connected to port 1?")


@pytest.mark.parametrize(
    "content", [f"{CANARY}\n", f"host ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n{CANARY}\n", "\x00\xff" * 10 + CANARY]
)
def test_known_hosts_errors_never_quote_the_file(tmp_path: Path, content: str) -> None:
    known = tmp_path / "known_hosts"
    known.write_bytes(content.encode("utf-8", errors="surrogateescape"))
    exc = connect_error(known_hosts=str(known))
    assert isinstance(exc, PermanentHostError) and CANARY not in str(exc)


def test_an_identity_file_linked_to_a_secret_is_refused_without_quoting_it(host_dir: Path, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    key = tmp_path / "id"
    os.symlink(host_dir / "secret", key)  # 0600 and ours: passes the mode check, then fails to parse
    exc = connect_error(identity_file=str(key), known_hosts=str(known))
    assert isinstance(exc, PermanentHostError) and CANARY not in str(exc) and "root:" not in str(exc)


def test_I_an_identity_file_with_a_crafted_pem_header_is_a_clean_error(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    key = tmp_path / "id"
    key.write_text(f"-----BEGIN (?P<{CANARY}!>x) PRIVATE KEY-----\nAAAA\n")
    key.chmod(0o600)
    exc = connect_error(identity_file=str(key), known_hosts=str(known))
    assert CANARY not in str(exc)
    assert isinstance(exc, PermanentHostError)


def _connect_in_subprocess(
    tmp_path: Path, timeout: float, rlimit_as: int | None = None, **target: str
) -> tuple[int | None, str]:
    code = (
        "import asyncio, sys\n"
        "from reconciler.spec.desired import Target\n"
        "from reconciler.transport.ssh import _connect\n"
        "from reconciler.errors import PermanentHostError\n"
        f"t = Target('h', '127.0.0.1', port=1, **{target!r})\n"
        "try:\n"
        "    asyncio.run(_connect(t))\n"
        "except PermanentHostError as exc:\n"
        "    print('PERMANENT', exc); sys.exit(0)\n"
    )

    def limit() -> None:
        if rlimit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))

    status, out, err = run_bounded([sys.executable, "-c", code], timeout=timeout, cwd=str(REPO), preexec_fn=limit)
    return status, (out + err).decode(errors="replace")


def test_I_an_identity_file_cannot_stall_the_connect(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    key = tmp_path / "id"
    key.write_bytes(b"-----BEGIN (a|aa)+$ PRIVATE KEY-----\n-----END " + b"a" * 60 + b"!\n")
    key.chmod(0o600)
    status, out = _connect_in_subprocess(tmp_path, 5, identity_file=str(key), known_hosts=str(known))
    assert status == 0 and "PERMANENT" in out, out


def test_J_a_fifo_as_known_hosts_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "known_hosts"
    os.mkfifo(fifo)
    status, out = _connect_in_subprocess(tmp_path, 5, known_hosts=str(fifo))
    assert status == 0 and "PERMANENT" in out, out


def test_J_an_endless_known_hosts_is_refused_not_read(tmp_path: Path) -> None:
    status, out = _connect_in_subprocess(tmp_path, 30, rlimit_as=1 << 30, known_hosts="/dev/zero")
    assert status == 0 and "PERMANENT" in out, out


async def test_become_sudo_runs_every_command_through_sudo_and_refuses_a_sudo_that_asks(tmp_path: Path) -> None:
    """`become: sudo`: each command line is `sudo -n -- argv` (argv quoted, never asking for a password); a host
    whose sudo would ask is refused at once, permanently, with what sudo said."""
    import dataclasses

    seen: list[str] = []
    asks = [True]  # sudo asks for a password until the test says otherwise

    async def sudo(process: Any) -> None:
        seen.append(process.command)
        if asks[0]:
            process.stderr.write(b"sudo: a password is required\n")
            process.exit(1)
            return
        process.stdout.write(b"ok")
        process.exit(0)

    async with LoopbackHost(tmp_path, sudo) as target:
        become = dataclasses.replace(target, become="sudo")
        with pytest.raises(PermanentHostError, match=r"become: sudo, but `sudo -n true` as root failed.*password"):
            await SSHConnection.open(become, attempts=1)
        assert seen == ["sudo -n -- true"]
        asks[0] = False
        seen.clear()
        conn = await SSHConnection.open(become, attempts=1)
        try:
            result = await conn.run(["cat", "/etc/a b;rm -rf /"], timeout=30)
            assert result.ok and result.stdout == b"ok"
        finally:
            await conn.close()
        assert seen == ["sudo -n -- true", "sudo -n -- cat '/etc/a b;rm -rf /'"]
        seen.clear()
        plain = await SSHConnection.open(target, attempts=1)  # without become: the argv alone
        try:
            await plain.run(["cat", "/etc/x"], timeout=30)
        finally:
            await plain.close()
        assert seen == ["cat /etc/x"]
