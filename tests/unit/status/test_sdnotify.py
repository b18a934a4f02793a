"""sd_notify (status/sdnotify.py): the datagrams systemd reads, and the watchdog interval it gives."""

from __future__ import annotations

import socket
from pathlib import Path

from reconciler.status.sdnotify import Notifier


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
