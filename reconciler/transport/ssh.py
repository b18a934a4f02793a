"""SSH transport: one asyncssh connection per host, kept open, with a bounded number of sessions.

Owns connecting (strict known_hosts by default, retry with exponential backoff and jitter on transient
failures), mapping asyncssh errors to the engine's taxonomy, and running argv commands.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar, cast

import asyncssh
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from reconciler.errors import HostError, PermanentHostError, TransientHostError
from reconciler.spec.desired import Target
from reconciler.transport.base import MAX_OUTPUT, CommandResult, command_line
from reconciler.waits import backoff

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_SESSIONS = 8  # sshd's MaxSessions defaults to 10; keep a margin
CONNECT_TIMEOUT = 10.0
KEEPALIVE_INTERVAL = 10.0
KEEPALIVE_COUNT = 3
STDERR_KEPT = 64 * 1024  # the tail of a command's stderr kept for its error message


class OutputTooLarge(Exception):
    """A command answered more than it was allowed to."""


class SSHConnection:
    def __init__(self, target: Target, conn: asyncssh.SSHClientConnection):
        self.target = target
        self._conn = conn
        self._sessions = asyncio.Semaphore(MAX_SESSIONS)

    @classmethod
    async def open(
        cls,
        target: Target,
        *,
        attempts: int = 4,
        initial_delay: float = 0.5,
        max_delay: float = 8.0,
        files: ParsedFiles | None = None,
    ) -> SSHConnection:
        """Connect, retrying transient failures; raises PermanentHostError or TransientHostError. `files`: the
        known_hosts and key files already parsed (a connector passes the same one to all its connects)."""
        files = files or ParsedFiles()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=lambda state: backoff(state.attempt_number, initial_delay, max_delay),
            retry=retry_if_exception(lambda e: isinstance(e, TransientHostError)),
            reraise=True,
            before_sleep=lambda rs: log.warning(
                "ssh connect retry",
                host=target.name,
                attempt=rs.attempt_number,
                error=str(rs.outcome.exception()) if rs.outcome else "",
            ),
        )
        async for attempt in retrying:
            with attempt:
                conn = cls(target, await _connect(target, files))
        await conn._check_become()
        return conn

    def _elevated(self, argv: Sequence[str]) -> str:
        """The command line for argv: with `become: sudo`, run by sudo (never asking for a password) as root."""
        if self.target.become == "sudo":
            return command_line(["sudo", "-n", "--", *argv])
        return command_line(argv)

    async def _check_become(self) -> None:
        """With `become: sudo`, refuse the host at once (permanently) when sudo would ask for a password."""
        if self.target.become != "sudo":
            return
        result = await self.run(["true"], timeout=30)
        if not result.ok:
            await self.close()
            raise PermanentHostError(
                f"{self.target.name}: become: sudo, but `sudo -n true` as {self.target.user} failed "
                f"({result.describe().removeprefix('true ')}): it needs passwordless sudo for every command"
            )

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = 120.0,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        async with self._sessions:
            try:
                # The outer wait_for also bounds opening the channel, which hangs on a silent network.
                return await asyncio.wait_for(self._run(argv, input, max_output), timeout)
            except OutputTooLarge as exc:
                raise TransientHostError(
                    f"{self.target.name}: {argv[0]} answered more than {max_output} bytes; not read further", ssh=True
                ) from exc
            except (asyncssh.Error, OSError) as exc:
                raise TransientHostError(f"{self.target.name}: connection lost: {exc}", ssh=True) from exc
            except TimeoutError as exc:
                raise TransientHostError(f"{self.target.name}: {argv[0]} timed out after {timeout}s", ssh=True) from exc

    async def _run(self, argv: Sequence[str], input: bytes | None, max_output: int) -> CommandResult:
        """Run argv, keeping its stdout up to `max_output` bytes (a host answering more is cut off and costs
        nothing further) and the tail of its stderr."""
        session = _Collected(max_output)
        chan, _ = await self._conn.create_session(lambda: session, self._elevated(argv), encoding=None)
        try:
            try:  # buffered by the channel and sent as the window allows
                if input:
                    chan.write(input)
                chan.write_eof()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the command ended without reading it all: its exit status says how
            await session.closed
        finally:
            chan.close()
        status = session.status if session.status is not None else 255
        return CommandResult(tuple(argv), status, b"".join(session.out), session.err)

    async def lines(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        """Run a long-lived command (e.g. `journalctl -f`) and yield its stdout line by line."""
        try:
            proc = await self._conn.create_process(self._elevated(argv), encoding=None)
        except (asyncssh.Error, OSError) as exc:
            raise TransientHostError(f"{self.target.name}: {argv[0]} could not start: {exc}", ssh=True) from exc
        try:
            while line := await proc.stdout.readline():
                yield line if isinstance(line, bytes) else str(line).encode()
        except (asyncssh.Error, OSError) as exc:
            raise TransientHostError(f"{self.target.name}: {argv[0]} stream lost: {exc}", ssh=True) from exc
        finally:
            proc.close()
        raise TransientHostError(f"{self.target.name}: {argv[0]} ended (exit {proc.exit_status})", ssh=True)

    async def close(self) -> None:
        self._conn.close()
        try:
            await asyncio.wait_for(self._conn.wait_closed(), 5)
        except (TimeoutError, OSError, asyncssh.Error):
            pass


class _Collected(asyncssh.SSHClientSession[bytes]):
    """One command's channel, kept as plain buffers: stdout up to a limit, the tail of stderr, the exit status.
    (asyncssh's SSHClientProcess puts stream readers, writers and a task per stream on top of the same
    channel; for one short command per host and pass that was most of a pass's Python work beyond SSH.)"""

    def __init__(self, max_output: int):
        self.max_output = max_output
        self.out: list[bytes] = []
        self.size = 0
        self.err = b""
        self.status: int | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chan: asyncssh.SSHClientChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:  # type: ignore[override]
        self._chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.err = (self.err + data)[-STDERR_KEPT:]
            return
        if self.closed.done():
            return
        self.size += len(data)
        if self.size > self.max_output:  # not read further: answered at once, not when the host closes
            self.out = []
            self.closed.set_exception(OutputTooLarge())
            if self._chan is not None:
                self._chan.close()
            return
        self.out.append(data)

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed.done():
            return
        if exc is None:
            self.closed.set_result(None)
        else:
            self.closed.set_exception(exc)


class ParsedFiles:
    """known_hosts and key files, parsed once and again only when they change on disk. asyncssh parses the
    file on every connect otherwise: with one known_hosts line per host, O(hosts^2) for a fleet's connects.
    One per connector (`transport.session.ssh_connector`), shared by its connects."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, str], tuple[tuple[int, int], object]] = {}

    def get(self, kind: str, path: str, read: Callable[[str], T]) -> T:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
        hit = self._files.get((kind, path))
        if hit is not None and hit[0] == stamp:
            return cast(T, hit[1])
        value = read(path)
        self._files[(kind, path)] = (stamp, value)
        return value


class UnprotectedKey(ValueError):
    pass


class UnusableFile(ValueError):
    pass


MAX_SSH_FILE = 1024 * 1024  # a known_hosts or key file read at most


def _read_small(path: str) -> bytes:
    """A local known_hosts or key file: a regular file of at most MAX_SSH_FILE bytes (a fifo is not waited on,
    /dev/zero not read to the end of memory)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnusableFile("not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > MAX_SSH_FILE:
                raise UnusableFile(f"larger than {MAX_SSH_FILE} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


_PEM_BOUNDARY = re.compile(rb"-----(BEGIN|END) [A-Z0-9 ]{1,64}-----\s*")


def _pem_checked(data: bytes) -> bytes:
    """Key text whose PEM boundary lines are what PEM allows (asyncssh turns a BEGIN line into a pattern)."""
    for line in data.splitlines():
        if line.startswith(b"-----") and not _PEM_BOUNDARY.fullmatch(line):
            raise UnusableFile("a PEM boundary line that is not -----BEGIN/END <LABEL>-----")
    return data


def _check_key_mode(path: str) -> None:
    """ssh's rule (sshkey_perm_ok): a private key of ours that others may read is refused, not used."""
    st = os.stat(path)
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        raise UnprotectedKey(
            f"permissions {st.st_mode & 0o777:04o} are too open: a private key must not be "
            "accessible by others (chmod 600), as ssh requires"
        )


def _why(exc: Exception, otherwise: str) -> str:
    if isinstance(exc, (UnprotectedKey, UnusableFile)):
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return otherwise


# asyncssh's own list, AES-GCM first: one AEAD call per packet in the cryptography library (AES-NI), where
# ChaCha20-Poly1305 costs several Python-level cipher objects per packet (~22 us against ~3.5 us here); both
# are what OpenSSH offers by default, neither is weaker.
ENCRYPTION_ALGS = (
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)


async def _connect(target: Target, files: ParsedFiles | None = None) -> asyncssh.SSHClientConnection:
    files = files or ParsedFiles()
    where = f"{target.name} ({target.user}@{target.address}:{target.port})"
    options: dict[str, object] = {
        "username": target.user,
        "port": target.port,
        "connect_timeout": CONNECT_TIMEOUT,
        # a host cut off the network is noticed within ~30 s even on an idle connection
        "keepalive_interval": KEEPALIVE_INTERVAL,
        "keepalive_count_max": KEEPALIVE_COUNT,
        "agent_path": None,
        "config": [],
        "encryption_algs": ENCRYPTION_ALGS,
    }
    if target.unsafe_skip_host_key_verification:
        log.warning("host key verification disabled (unsafe)", host=target.name)
        options["known_hosts"] = None
    elif not target.known_hosts or not os.path.exists(target.known_hosts):
        raise PermanentHostError(
            f"{where}: known_hosts file {target.known_hosts!r} does not exist; host keys are verified by default",
            ssh=True,
        )
    if target.identity_file and not os.path.exists(target.identity_file):
        raise PermanentHostError(f"{where}: identity file {target.identity_file!r} does not exist", ssh=True)
    # Errors name the file and what is wrong with it, never a line of it: pointed at the wrong file (a shadow
    # file, a token), asyncssh's own message would quote the first line it could not parse.
    if target.known_hosts and not target.unsafe_skip_host_key_verification:
        try:
            options["known_hosts"] = files.get(
                "known_hosts",
                target.known_hosts,
                lambda p: asyncssh.import_known_hosts(_read_small(p).decode("utf-8", "replace")),
            )
        except Exception as exc:  # whatever the file made asyncssh raise: named by kind, never quoted
            raise PermanentHostError(
                f"{where}: known_hosts file {target.known_hosts!r} cannot be used: "
                f"{_why(exc, 'not in known_hosts format')}",
                ssh=True,
            ) from None
    if target.identity_file:
        try:
            _check_key_mode(target.identity_file)
            options["client_keys"] = [
                files.get(
                    "key", target.identity_file, lambda p: asyncssh.import_private_key(_pem_checked(_read_small(p)))
                )
            ]
        except Exception as exc:  # e.g. re.error: asyncssh compiles a PEM header into a pattern
            raise PermanentHostError(
                f"{where}: identity file {target.identity_file!r} cannot be used: "
                f"{_why(exc, 'not a private key asyncssh can read')}",
                ssh=True,
            ) from None
    try:
        return await asyncssh.connect(target.address, **options)  # type: ignore[arg-type]
    except asyncssh.HostKeyNotVerifiable as exc:
        raise PermanentHostError(
            f"{where}: host key verification failed against {target.known_hosts}: "
            f"{exc.reason}; refusing to connect (possible man-in-the-middle, or the host was "
            "rebuilt: check the key and update known_hosts)",
            ssh=True,
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise PermanentHostError(f"{where}: authentication refused: {exc.reason}", ssh=True) from exc
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise PermanentHostError(f"{where}: {exc}", ssh=True) from exc
    except asyncssh.DisconnectError as exc:
        raise TransientHostError(f"{where}: disconnected: {exc.reason}", ssh=True) from exc
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise TransientHostError(f"{where}: cannot connect: {exc or type(exc).__name__}", ssh=True) from exc


__all__ = ["SSHConnection", "HostError"]
