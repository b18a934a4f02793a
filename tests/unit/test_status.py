"""Daemon plumbing without hosts: HTTP routes, sd_notify datagrams, metrics exposition, spec reload."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from reconciler.engine.daemon import Daemon
from reconciler.settings import DaemonSettings
from reconciler.status.http import HTTPServer, Response
from reconciler.status.sdnotify import Notifier

SPECS = Path(__file__).resolve().parents[2] / "specs"


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


async def test_bad_spec_keeps_last_good_and_is_visible(tmp_path: Path) -> None:
    spec_dir = tmp_path / "specs"
    shutil.copytree(SPECS, spec_dir)
    daemon = Daemon(DaemonSettings(spec_dir=spec_dir, listen_port=0))
    assert daemon.load_specs("start")
    good = daemon.desired
    assert daemon.queue.depth() == 3
    (spec_dir / "etcd.yaml").write_text((spec_dir / "etcd.yaml").read_text().replace("timeoutSeconds: 3", "timeoutSeconds: soon"))
    assert not daemon.load_specs("watch")
    assert daemon.desired is good
    assert daemon.spec["valid"] is False
    assert any("etcd.yaml:" in e and "spec.timeoutSeconds" in e for e in daemon.spec["errors"])
    families = {f.name: f for f in text_string_to_metric_families(daemon._metrics().body.decode())}
    assert families["reconciler_spec_valid"].samples[0].value == 0
    reloads = {s.labels["result"]: s.value for s in families["reconciler_spec_reloads"].samples if s.name.endswith("_total")}
    assert reloads == {"success": 1.0, "error": 1.0}
    # A good edit that changes one host's file queues only that host.
    shutil.copy(SPECS / "etcd.yaml", spec_dir / "etcd.yaml")
    inventory = spec_dir / "inventory.yaml"
    inventory.write_text(inventory.read_text().replace("etcd_binary: /usr/bin/etcd", "etcd_binary: /usr/local/bin/etcd", 1))
    for _ in range(3):
        daemon.queue.done(await asyncio.wait_for(daemon.queue.get(), 1))
    assert daemon.load_specs("watch")
    assert daemon.spec["valid"] and daemon.spec["generation"] == 2
    assert daemon.queue.depth() == 1 and await asyncio.wait_for(daemon.queue.get(), 1) == "master-1"
