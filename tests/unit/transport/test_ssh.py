"""SSH transport: transient failures are retried with backoff, permanent ones are not; commands are quoted."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reconciler.apply.executor import WRITE_SCRIPT, action_argv
from reconciler.errors import PermanentHostError, TransientHostError
from reconciler.plan.actions import Action, Kind
from reconciler.spec.desired import DesiredFile, DesiredHost, Target
from reconciler.transport.base import command_line
from reconciler.transport.ssh import SSHConnection


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket goes: connections are refused


async def test_refused_connection_is_retried_then_reported_transient(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    target = Target("m1", "127.0.0.1", port=closed_port(), known_hosts=str(known))
    with capture_logs() as logs, pytest.raises(TransientHostError, match="m1 .*cannot connect"):
        await SSHConnection.open(target, attempts=3, initial_delay=0.01, max_delay=0.02)
    assert [e["attempt"] for e in logs if e["event"] == "ssh connect retry"] == [1, 2]


async def test_missing_known_hosts_is_permanent_and_not_retried(tmp_path: Path) -> None:
    target = Target("m1", "127.0.0.1", port=closed_port(), known_hosts=str(tmp_path / "absent"))
    with capture_logs() as logs, pytest.raises(PermanentHostError, match="does not exist; host keys are verified"):
        await SSHConnection.open(target, attempts=3, initial_delay=0.01)
    assert not [e for e in logs if e["event"] == "ssh connect retry"]


def test_write_command_carries_values_as_arguments_and_content_on_stdin() -> None:
    content = b"X=\"$(reboot)\" `id` ';'\n"
    f = DesiredFile("/etc/kubernetes/a-b", content, 0o600, "root", "root", True, "File/x")
    host = DesiredHost(Target("m1", "198.18.0.11"), files={f.path: f})
    argv, stdin = action_argv(Action(Kind.WRITE, f.path, "create"), host, "stamp")
    assert argv[:3] == ["bash", "-c", WRITE_SCRIPT] and stdin == content
    assert argv[4:8] == [f.path, "0600", "root", "root"]
    line = command_line(["systemctl", "restart", "--", "a b;reboot"])
    assert line == "systemctl restart -- 'a b;reboot'"
