"""Daemon plumbing without hosts: the HTTP server, sd_notify datagrams, the status table, coloured plans."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from reconciler.settings import DaemonSettings
from reconciler.status.http import HTTPServer, Response
from reconciler.status.sdnotify import Notifier


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


def test_sd_notify_sends_datagrams_and_reads_the_watchdog(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"})
        assert notifier.watchdog_interval == 10.0
        notifier.notify("READY=1", "STATUS=ok")
        assert sock.recv(100) == b"READY=1\nSTATUS=ok"
    silent = Notifier({})
    assert not silent.enabled and silent.watchdog_interval is None
    silent.notify("READY=1")  # no socket: nothing happens


def status_doc() -> dict:
    host = {
        "status": "converged",
        "last_run": 990.0,
        "last_success": 990.0,
        "duration_seconds": 0.2,
        "error": "",
        "drift": 0,
        "applied": [],
        "pending_actions": [],
        "failures": 0,
        "retry_in_seconds": None,
        "components": {"etcd": {"healthy": True, "detail": "HTTP 200"}},
        "units": {},
        "reconcile_id": "x",
    }
    failed = {
        **host,
        "status": "failed",
        "last_success": 400.0,
        "error": "master-3: cannot connect",
        "failures": 4,
        "retry_in_seconds": 3.5,
        "components": {"etcd": {"healthy": False, "detail": "unknown"}},
        "pending_actions": ["~ write /etc/etcd/etcd.conf: content differs"],
    }
    return {
        "ready": True,
        "spec": {"valid": True, "errors": [], "generation": 2},
        "summary": {"hosts": 2, "converged": 1, "queue_depth": 1, "in_flight": []},
        "hosts": {"master-1": host, "master-3": failed},
        "tuning": {
            "enabled": True,
            "effective": {"ETCD_HEARTBEAT_INTERVAL": 400, "ETCD_ELECTION_TIMEOUT": 4000},
            "overlay": {"decided_at": 700.0, "reason": "6 warnings", "cause": "CPU starvation or network"},
            "last_decision": {"outcome": "quiet", "reason": "0 warnings"},
        },
    }


def test_status_table_is_readable_and_plain_unless_coloured() -> None:
    from reconciler.output import Style, render_status, status_exit_code

    text = render_status(status_doc(), "http://127.0.0.1:9479", Style(False), now=1000.0)
    lines = text.splitlines()
    assert (
        lines[0]
        == "reconciler at http://127.0.0.1:9479: ready, specs valid (generation 2), 1/2 hosts converged, 1 queued"
    )
    header = next(i for i, line in enumerate(lines) if line.startswith("HOST"))
    assert lines[header + 1].split()[:4] == ["master-1", "converged", "10s", "ago"]
    assert "failed" in lines[header + 2] and "10m ago" in lines[header + 2] and "3.5s" in lines[header + 2]
    assert "0/1 healthy (etcd failing)" in lines[header + 2]
    assert "master-3: cannot connect" in text and "~ write /etc/etcd/etcd.conf" in text
    assert "etcd tuning: heartbeat 400 ms, election 4000 ms (raised 5m ago: 6 warnings" in text
    assert "\x1b[" not in text and status_exit_code(status_doc()) == 1
    coloured = render_status(status_doc(), "u", Style(True), now=1000.0)
    assert "\x1b[31m" in coloured and "\x1b[32m" in coloured


def test_plan_colours_only_when_asked() -> None:
    from reconciler.output import Style, colour_plan

    plan = "master-1: 1 change(s)\n  ~ write /etc/x: content differs\n      --- /etc/x\n      +++ /etc/x\n      @@ -1 +1 @@\n      -a\n      +b"
    assert colour_plan(plan, Style(False)) == plan
    coloured = colour_plan(plan, Style(True)).splitlines()
    assert (
        coloured[5].startswith("\x1b[31m") and coloured[6].startswith("\x1b[32m") and coloured[4].startswith("\x1b[36m")
    )


def test_http_endpoint_binds_loopback_unless_told_otherwise() -> None:
    from reconciler.cli import _daemon_settings, _parser, _settings_defaults

    args = _settings_defaults(_parser().parse_args(["run"]))
    assert args.listen == "127.0.0.1:9479"
    settings = _daemon_settings(args)
    assert settings.listen_host == "127.0.0.1" and DaemonSettings().listen_host == "127.0.0.1"
    given = _settings_defaults(_parser().parse_args(["run", "--listen", "0.0.0.0:9100", "--workers", "3"]))
    assert _daemon_settings(given).listen_host == "0.0.0.0" and _daemon_settings(given).workers == 3
