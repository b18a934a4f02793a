"""The daemon's HTTP endpoint (status/http.py): routes, errors, and where it listens by default."""

from __future__ import annotations

import asyncio

from reconciler.settings import DaemonSettings
from reconciler.status.http import HTTPServer, Response


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_http_routes_and_errors() -> None:
    server = HTTPServer({"/x": lambda: Response(200, b"hello")}, "127.0.0.1", 0)
    await server.start()
    try:
        assert await http_get(server.port, "/x?q=1") == (200, "hello")
        assert (await http_get(server.port, "/nope"))[0] == 404
        assert (await http_get(server.port, "/x", "POST"))[0] == 405
    finally:
        await server.stop()


def test_http_endpoint_binds_loopback_unless_told_otherwise() -> None:
    from reconciler.cli import _daemon_settings, _parser, _settings_defaults

    args = _settings_defaults(_parser().parse_args(["run"]))
    assert args.listen == "127.0.0.1:9479"
    settings = _daemon_settings(args)
    assert settings.listen_host == "127.0.0.1" and DaemonSettings().listen_host == "127.0.0.1"
    given = _settings_defaults(_parser().parse_args(["run", "--listen", "0.0.0.0:9100", "--workers", "3"]))
    assert _daemon_settings(given).listen_host == "0.0.0.0" and _daemon_settings(given).workers == 3
