"""What a pass is doing right now, per host, for whoever shows it: `plan`/`apply`/`check` on a terminal.

The engine says what it starts (`report(host, "observing")`, `report(host, "restart kube-apiserver")`,
`report(host, "waiting for the restart lock")`) and what ends (`done(host, action)`, `finished(host, status)`);
the CLI installs a sink for the length of one command (`reporting`) and draws it. With no sink installed (the
daemon, tests) reporting costs a context-variable read. The sink rides a context variable rather than a parameter
through every stage: asyncio copies it into each host's task, and the stages stay free of a display concern.
A sink must not raise and must not block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    host: str
    kind: str  # "doing": `text` is what starts now; "done": `text` finished; "finished": `text` is the host's end state
    text: str


Sink = Callable[[Event], None]
_SINK: ContextVar[Sink | None] = ContextVar("reconciler_progress_sink", default=None)


def report(host: str, text: str) -> None:
    """`host` starts `text` (what a person reads: "observing", "write /etc/etcd/etcd.conf")."""
    sink = _SINK.get()
    if sink is not None:
        sink(Event(host, "doing", text))


def done(host: str, text: str) -> None:
    """`host` finished `text` (an action carried out)."""
    sink = _SINK.get()
    if sink is not None:
        sink(Event(host, "done", text))


def finished(host: str, status: str) -> None:
    """`host` is through: converged, failed, pending ..."""
    sink = _SINK.get()
    if sink is not None:
        sink(Event(host, "finished", status))


@contextmanager
def reporting(sink: Sink) -> Iterator[None]:
    """Send this context's events (and those of tasks started within it) to `sink`."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)
