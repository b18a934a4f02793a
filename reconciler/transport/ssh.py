"""SSH transport: one asyncssh connection per host, kept open, with a bounded number of sessions.

Owns connecting (through the route transport.ssh_config resolves: ProxyJump bastions first; strict known_hosts by
default, every hop's included; the ssh-agent's keys and the identity files'; retry with exponential backoff and
jitter on transient failures), mapping asyncssh errors to the engine's taxonomy, and running argv commands.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import asyncssh
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from reconciler.errors import HostError, PermanentHostError, TransientHostError
from reconciler.spec.desired import Target
from reconciler.transport.base import MAX_OUTPUT, CommandResult, command_line
from reconciler.transport.ssh_config import ConfigError, Hop, route
from reconciler.transport.ssh_files import LoadedKey, ParsedFiles, load_key, load_known_hosts, why
from reconciler.waits import backoff

log = structlog.get_logger(__name__)

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
        return await self._bounded(argv, timeout, max_output, None, input)

    async def copy_out(
        self, argv: Sequence[str], sink: Callable[[bytes], None], *, timeout: float, max_bytes: int
    ) -> CommandResult:
        return await self._bounded(argv, timeout, max_bytes, sink, None)

    async def _bounded(
        self,
        argv: Sequence[str],
        timeout: float | None,
        max_output: int,
        sink: Callable[[bytes], None] | None,
        input: bytes | None,
    ) -> CommandResult:
        """`_run` within `timeout` (which also bounds opening the channel, which hangs on a silent network), its
        failures said as host errors; a sink's own failure (a full disk here) raised as it is. Waiting for one of the
        connection's sessions is bounded by `timeout` too: a caller holding a lock (a restart lock) never waits
        behind other commands for ever."""
        try:
            await asyncio.wait_for(self._sessions.acquire(), timeout)
        except TimeoutError as exc:
            raise TransientHostError(
                f"{self.target.name}: {argv[0]} not started: all {MAX_SESSIONS} sessions busy for {timeout}s", ssh=True
            ) from exc
        try:
            try:
                return await asyncio.wait_for(self._run(argv, input, max_output, sink), timeout)
            except _SinkFailed as failed:
                raise failed.error from None
            except OutputTooLarge as exc:
                raise TransientHostError(
                    f"{self.target.name}: {argv[0]} answered more than {max_output} bytes; not read further", ssh=True
                ) from exc
            except (asyncssh.Error, OSError) as exc:
                raise TransientHostError(f"{self.target.name}: connection lost: {exc}", ssh=True) from exc
            except TimeoutError as exc:
                raise TransientHostError(f"{self.target.name}: {argv[0]} timed out after {timeout}s", ssh=True) from exc
        finally:
            self._sessions.release()

    async def _run(
        self, argv: Sequence[str], input: bytes | None, max_output: int, sink: Callable[[bytes], None] | None
    ) -> CommandResult:
        """Run argv, keeping its stdout up to `max_output` bytes (a host answering more is cut off and costs
        nothing further), or handing it to `sink` as it arrives, and the tail of its stderr."""
        session = _Collected(max_output, sink)
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


class _SinkFailed(Exception):
    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class _Collected(asyncssh.SSHClientSession[bytes]):
    """One command's channel, kept as plain buffers: stdout up to a limit, the tail of stderr, the exit status.
    (asyncssh's SSHClientProcess puts stream readers, writers and a task per stream on top of the same
    channel; for one short command per host and pass that was most of a pass's Python work beyond SSH.)"""

    def __init__(self, max_output: int, sink: Callable[[bytes], None] | None = None):
        """`sink`: stdout handed on as it arrives (`copy_out`) instead of kept."""
        self.max_output = max_output
        self.sink = sink
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
        if self.sink is not None:
            try:
                self.sink(data)
            except Exception as exc:  # where it goes failed (a full disk): not read further, said as it is
                self.closed.set_exception(_SinkFailed(exc))
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
AGENT_TIMEOUT = 5.0  # an ssh-agent that does not list its keys in this time is not used


@dataclass
class _Files:
    """One hop's local files, read and checked before anything is dialled."""

    known_hosts: asyncssh.SSHKnownHosts | None  # None: host key not verified (unsafeSkipHostKeyVerification)
    keys: list[LoadedKey]


async def _connect(target: Target, files: ParsedFiles | None = None) -> asyncssh.SSHClientConnection:
    """The connection to `target`, through its bastions (each connection carrying the next; closing the last
    closes them all). Everything local (ssh config, known_hosts and key files of every hop) is read and checked
    before the first hop is dialled."""
    files = files or ParsedFiles()
    try:
        hops = await asyncio.to_thread(route, target, files)
    except ConfigError as exc:
        raise PermanentHostError(
            f"{target.name} ({target.user}@{target.address}:{target.port}): {exc}", ssh=True
        ) from None
    host = hops[-1]
    where = f"{target.name} ({host.label}" + (f" via {', '.join(h.label for h in hops[:-1])})" if hops[:-1] else ")")
    prefixes = [f"{where}: bastion {h.label}" for h in hops[:-1]] + [where]
    prepared = [_prepare(hop, files, prefix, target.name) for hop, prefix in zip(hops, prefixes)]
    tunnel: asyncssh.SSHClientConnection | None = None
    try:
        for hop, local, prefix in zip(hops, prepared, prefixes):
            conn = await _dial(hop, local, tunnel, prefix)
            if tunnel is not None:
                conn.set_tunnel(tunnel)  # closed with the connection it carries
            tunnel = conn
    except BaseException:
        if tunnel is not None:
            tunnel.close()
        raise
    assert tunnel is not None
    return tunnel


def _prepare(hop: Hop, files: ParsedFiles, where: str, name: str) -> _Files:
    """The hop's known_hosts and keys, read and parsed (once per change on disk); raises PermanentHostError."""
    known: asyncssh.SSHKnownHosts | None = None
    if not hop.verify_host_key:
        log.warning("host key verification disabled (unsafe)", host=name)
    else:
        present = [p for p in hop.known_hosts if os.path.exists(p)]
        if not present:
            what = repr(hop.known_hosts[0]) if hop.known_hosts else "(none: UserKnownHostsFile none)"
            raise PermanentHostError(
                f"{where}: known_hosts file {what} does not exist; host keys are verified by default", ssh=True
            )
        try:
            known = files.get("known_hosts", present, load_known_hosts)
        except Exception as exc:  # whatever the file made asyncssh raise: named by kind, never quoted
            raise PermanentHostError(
                f"{where}: known_hosts file {', '.join(map(repr, present))} cannot be used: "
                f"{why(exc, 'not in known_hosts format')}",
                ssh=True,
            ) from None
    keys = []
    for path in hop.identity_files:
        if not os.path.exists(path):
            if hop.identities_required:
                raise PermanentHostError(f"{where}: identity file {path!r} does not exist", ssh=True)
            continue  # as ssh: a default key, or one an ssh config names, that is not there is not tried
        try:
            keys.append(files.get("key", path, load_key))
        except Exception as exc:  # e.g. re.error: asyncssh compiles a PEM header into a pattern
            raise PermanentHostError(
                f"{where}: identity file {path!r} cannot be used: {why(exc, 'not a private key asyncssh can read')}",
                ssh=True,
            ) from None
    return _Files(known, keys)


async def _dial(
    hop: Hop, local: _Files, tunnel: asyncssh.SSHClientConnection | None, where: str
) -> asyncssh.SSHClientConnection:
    agent = asyncssh.SSHAgentClient(hop.agent) if hop.agent else None
    try:
        held: list[asyncssh.SSHKeyPair] = []
        agent_answers = False
        if agent is not None:
            try:
                held = list(await asyncio.wait_for(agent.get_keys(), AGENT_TIMEOUT))
                agent_answers = True
            except (ValueError, TimeoutError, OSError) as exc:  # a stale SSH_AUTH_SOCK: ssh goes on without it
                log.info("ssh-agent not used", socket=hop.agent, error=str(exc) or type(exc).__name__)
        ours = {k.public for k in local.keys if k.public}
        in_agent = {k.key_public_data for k in held}
        # as ssh: the agent's keys first (those of the identity files before the others; with IdentitiesOnly only
        # those), then the identity files' keys the agent does not hold
        agent_keys = sorted(
            (k for k in held if not hop.identities_only or k.key_public_data in ours),
            key=lambda k: k.key_public_data not in ours,
        )
        offered: list[asyncssh.SSHKeyPair | asyncssh.SSHKey] = [*agent_keys]
        offered += [k.key for k in local.keys if k.key is not None and k.public not in in_agent]
        locked = [k for k in local.keys if k.encrypted and k.public not in in_agent]
        if locked and not offered:
            raise PermanentHostError(f"{where}: {_locked(locked[0], hop, agent_answers)}", ssh=True)
        options: dict[str, object] = {
            "username": hop.user,
            "port": hop.port,
            "connect_timeout": CONNECT_TIMEOUT,
            # a host cut off the network is noticed within ~30 s even on an idle connection
            "keepalive_interval": KEEPALIVE_INTERVAL,
            "keepalive_count_max": KEEPALIVE_COUNT,
            "agent_path": None,  # the agent's keys are in client_keys (listed above)
            "config": [],  # read by transport.ssh_config, bounded: asyncssh reads nothing itself
            "client_keys": offered or None,
            "known_hosts": local.known_hosts,
            "encryption_algs": ENCRYPTION_ALGS,
        }
        if tunnel is not None:
            options["tunnel"] = tunnel
        return await _opened(hop, options, where, locked, agent_answers)
    finally:
        if agent is not None:
            agent.close()


async def _opened(
    hop: Hop, options: dict[str, object], where: str, locked: list[LoadedKey], agent_answers: bool
) -> asyncssh.SSHClientConnection:
    try:
        return await asyncssh.connect(hop.host, **options)  # type: ignore[arg-type]
    except asyncssh.HostKeyNotVerifiable as exc:
        raise PermanentHostError(
            f"{where}: host key verification failed against {', '.join(hop.known_hosts)}: "
            f"{exc.reason}; refusing to connect (possible man-in-the-middle, or the host was "
            "rebuilt: check the key and update known_hosts)",
            ssh=True,
        ) from exc
    except asyncssh.PermissionDenied as exc:
        hint = f" ({_locked(locked[0], hop, agent_answers)})" if locked else ""
        raise PermanentHostError(f"{where}: authentication refused: {exc.reason}{hint}", ssh=True) from exc
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise PermanentHostError(f"{where}: {exc}", ssh=True) from exc
    except asyncssh.DisconnectError as exc:
        raise TransientHostError(f"{where}: disconnected: {exc.reason}", ssh=True) from exc
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise TransientHostError(f"{where}: cannot connect: {str(exc) or type(exc).__name__}", ssh=True) from exc


def _locked(key: LoadedKey, hop: Hop, agent_answers: bool) -> str:
    """One line: a passphrase-protected identity file no ssh-agent offers, and what to do."""
    if hop.agent is None:
        agent = "no ssh-agent is available (SSH_AUTH_SOCK is not set)"
    elif not agent_answers:
        agent = f"the ssh-agent at {hop.agent} does not answer"
    elif key.public is None:  # an older PEM key with no `.pub` beside it: which agent key it is cannot be told
        agent = f"no key of the ssh-agent is known to be it (put its public key beside it as {key.path}.pub)"
    else:
        agent = "the ssh-agent does not hold it"
    return (
        f"identity file {key.path!r} is passphrase-protected and {agent}; reconciler never asks for a "
        f"passphrase: add the key to an agent (`ssh-add {key.path}`) and run reconciler with SSH_AUTH_SOCK "
        "pointing to it"
    )


__all__ = ["SSHConnection", "HostError", "ParsedFiles"]
