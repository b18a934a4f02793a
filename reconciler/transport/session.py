"""Session: one kept-open connection per host for the length of a run (or of the daemon).

Owns opening connections lazily (with the transport's retry), remembering permanent failures so a
host with a wrong key is not hammered, and closing everything at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from reconciler.errors import HostError
from reconciler.spec.desired import Target
from reconciler.transport.base import Connection
from reconciler.transport.ssh import SSHConnection
from reconciler.transport.ssh_files import ParsedFiles

Connector = Callable[[Target], Awaitable[Connection]]


def ssh_connector(attempts: int = 4, initial_delay: float = 0.5) -> Connector:
    files = ParsedFiles()  # known_hosts and keys parsed once for all the connector's hosts

    async def connect(target: Target) -> Connection:
        return await SSHConnection.open(target, attempts=attempts, initial_delay=initial_delay, files=files)

    return connect


class Session:
    def __init__(self, connector: Connector | None = None):
        self._connector = connector or ssh_connector()
        self._open: dict[str, Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def connection(self, target: Target) -> Connection:
        """The host's connection, opened on first use; raises HostError when it cannot be had."""
        lock = self._locks.setdefault(target.name, asyncio.Lock())
        async with lock:
            conn = self._open.get(target.name)
            if conn is None:
                conn = self._open[target.name] = await self._connector(target)
            return conn

    def forget(self, host: str) -> None:
        """Drop a broken connection so the next use reconnects."""
        conn = self._open.pop(host, None)
        if conn is not None:
            asyncio.ensure_future(conn.close())

    async def close(self) -> None:
        conns, self._open = list(self._open.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


__all__ = ["Session", "HostError", "ssh_connector"]
