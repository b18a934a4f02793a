"""The daemon's HTTP endpoint: GET /metrics, /healthz, /readyz and /status on a loopback port.

A deliberately small HTTP/1.1 server on asyncio streams (GET only, one request per connection);
the routes are callables (`status.routes` builds the daemon's), so this module knows nothing of its state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Response]
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request", 503: "Service Unavailable"}


class HTTPServer:
    def __init__(self, routes: dict[str, Route], host: str, port: int):
        self.routes, self.host, self.port = routes, host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("http listening", address=f"{self.host}:{self.port}")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method != "GET":
                response = Response(405, b"only GET\n")
            elif path in self.routes:
                response = self.routes[path]()
            else:
                response = Response(404, b"not found: try /metrics /healthz /readyz /status\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, UnicodeError):
            response = Response(400, b"bad request\n")
        except Exception:  # a broken route must not take the daemon down
            log.exception("http handler failed")
            response = Response(503, b"internal error\n")
        head = (
            f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}\r\n"
            f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode() + response.body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
