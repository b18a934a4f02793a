"""The transport seam: how the engine runs a command on a host, whatever carries it.

`Connection` is the one protocol observe, apply and the journal followers use; `ssh.SSHConnection` is the
real one, `fake.FakeConnection` an in-process host for tests and benchmarks; `session.Session` keeps one per host. Commands are argv lists; the transport is the only place that quotes them.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from reconciler.terminal import printable

MAX_OUTPUT = 8 * 1024 * 1024  # a command's stdout read at most, unless the caller says (observe: what its files need)


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def describe(self) -> str:
        """A short, log-safe description: the program and its exit status, never stdin or arguments' content."""
        err = printable(self.stderr.decode(errors="replace")).strip().splitlines()
        tail = f": {err[-1][:300]}" if err else ""
        return f"{self.argv[0]} exited {self.exit_status}{tail}"


class Connection(Protocol):
    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        """Run argv on the host (no shell interprets it unquoted) and return its result; never raises on a non-zero
        exit. Reads at most `max_output` bytes of stdout (more is a TransientHostError: a host cannot flood us)."""
        ...

    async def copy_out(
        self, argv: Sequence[str], sink: Callable[[bytes], None], *, timeout: float, max_bytes: int
    ) -> CommandResult:
        """Run argv and hand its stdout to `sink` chunk by chunk as it arrives (a large file, never held whole); the
        result keeps the tail of stderr, its stdout empty. More than `max_bytes`, or not ended within `timeout`
        seconds, is a TransientHostError (what was handed to the sink is then not whole)."""
        ...

    def lines(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        """Run a long-lived command (e.g. `journalctl -f`) and yield its stdout line by line, until it ends or the
        connection does (a TransientHostError)."""
        ...

    async def close(self) -> None: ...


@functools.lru_cache(maxsize=1024)
def _quoted(word: str) -> str:
    return shlex.quote(word)


def command_line(argv: Sequence[str]) -> str:
    """The single string an SSH server hands to the user's shell: every word quoted (the same words, such as the
    observe script, come back every pass: their quoting is remembered)."""
    return " ".join(_quoted(word) for word in argv)
