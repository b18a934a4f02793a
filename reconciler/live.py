"""Progress of `plan`, `apply` and `check` on the operator's stderr, drawn from `progress` events.

On a terminal: one live line per host, redrawn as the host moves on (connecting, observing, write X, restart Y,
waiting for the restart lock, waiting up to 120s for ...), with the seconds it has spent on it; log lines
written meanwhile go above the block. Piped: one line per step, nothing redrawn, in the logs' format (a JSON
object when the logs are JSON, so that stderr stays one format). Either way it
remembers what each host did, so that an interrupted command can say what was done and what was not
(`interrupted`). Host-provided text is shown through `terminal.printable`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from reconciler.progress import Event
from reconciler.terminal import printable

ERASE_LINE = "\x1b[2K"


@dataclass
class HostLine:
    doing: str = "waiting to start"
    since: float = 0.0
    done: list[str] = field(default_factory=list)
    end: str = ""  # converged, failed, pending ... once the host is through


class Live:
    def __init__(
        self,
        hosts: list[str],
        stream: TextIO,
        *,
        tty: bool,
        json_lines: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.tty, self.json_lines, self.clock = stream, tty, json_lines, clock
        began = clock()
        self.hosts = {h: HostLine(since=began) for h in hosts}
        self._drawn = 0  # lines of the live block on screen
        self._width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)
        self._name = max((len(h) for h in hosts), default=0)

    # -- the sink --------------------------------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        line = self.hosts.get(event.host)
        if line is None:  # a peer asked by the guard is not one of the hosts shown
            return
        text = printable(event.text).replace("\n", " ")
        if event.kind == "done":
            line.done.append(text)
            return
        if event.kind == "finished":
            line.end, line.doing = text, text
        else:
            line.doing = text
        line.since = self.clock()
        if self.tty:
            self.draw()
            return
        if self.json_lines:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            said = json.dumps({"host": event.host, event.kind: line.doing, "event": "progress", "timestamp": at})
        else:
            said = f"{time.strftime('%H:%M:%S')} {event.host}: {line.doing}"
        self.stream.write(said + "\n")
        self.stream.flush()

    # -- the terminal block ----------------------------------------------------------------------------------------
    def draw(self) -> None:
        now = self.clock()
        out = [f"\x1b[{self._drawn}F" if self._drawn else ""]
        for name, line in self.hosts.items():
            spent = "" if line.end else f" ({now - line.since:.0f}s)"
            out.append(f"{ERASE_LINE}{name:<{self._name}}  {line.doing}{spent}"[: self._width + len(ERASE_LINE)] + "\n")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(self.hosts)

    def erase(self) -> None:
        if self.tty and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self.stream.flush()
            self._drawn = 0

    def above(self, text: str) -> None:
        """Write `text` (a log line) above the live block."""
        drawn = self._drawn
        self.erase()
        self.stream.write(text)
        if drawn:
            self.draw()

    # -- after Ctrl-C ----------------------------------------------------------------------------------------------
    def interrupted(self) -> list[str]:
        """Each host: through (and how), or what it was doing when stopped and what it had done."""
        lines = []
        for name, line in self.hosts.items():
            if line.end:
                lines.append(f"{name}: {line.end}")
                continue
            said = f"{name}: interrupted while: {line.doing}"
            if line.doing.startswith("write "):
                said += " (a write is atomic: the file is the old one or the new one, never a mix)"
            done = f"; done before: {', '.join(line.done)}" if line.done else "; nothing changed on it"
            lines.append(said + done)
        return lines


class Above:
    """sys.stderr while a live block is drawn: what is written (logs, warnings) goes above the block."""

    def __init__(self, live: Live, stream: TextIO) -> None:
        self.live, self.stream = live, stream

    def write(self, text: str) -> int:
        self.live.above(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


def showing(hosts: list[str], log_format: str, stream: TextIO | None = None) -> Live:
    """A Live for `hosts` on `stream` (stderr): drawn in place on a terminal that can (TERM set, not dumb), else
    lines in the format the logs use (`log_format` as `status.logs.configure_logging` takes it)."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    return Live(
        hosts,
        stream,
        tty=tty and os.environ.get("TERM", "dumb") != "dumb",
        json_lines=log_format == "json" or (log_format == "auto" and not tty),
    )
