"""The `reconciler` command on a pseudo-terminal, as an operator runs it: what it draws, and Ctrl-C typed at it."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.support.specs import REPO


@dataclass
class Session:
    screen: str  # everything the command wrote to the terminal (escape sequences included)
    code: int
    interrupted_after: float | None  # seconds from Ctrl-C to the command's exit


def on_terminal(*args: str, interrupt_when: Callable[[str], bool] | None = None, timeout: float = 60.0) -> Session:
    """Run `reconciler ARGS` on a pty (TERM=xterm); type Ctrl-C once `interrupt_when(screen)` holds."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, its stdin/stdout/stderr the terminal
        os.chdir(REPO)
        os.environ["TERM"] = "xterm"
        os.execv(sys.executable, [sys.executable, "-m", "reconciler.cli", *args])
    data, typed, status = b"", None, None
    deadline = time.monotonic() + timeout
    while status is None and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                data += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                pass
        if typed is None and interrupt_when is not None and interrupt_when(data.decode(errors="replace")):
            os.write(fd, b"\x03")  # the terminal turns it into SIGINT for the foreground process group
            typed = time.monotonic()
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
    if status is None:
        os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
    try:
        while select.select([fd], [], [], 0.05)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    os.close(fd)
    ended = time.monotonic()
    return Session(data.decode(errors="replace"), os.waitstatus_to_exitcode(status), ended - typed if typed else None)
