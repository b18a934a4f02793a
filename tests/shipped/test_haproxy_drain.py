"""engine.drain against Debian's HAProxy run here (master-worker, its master socket in a directory of the test's),
commands run on this machine as they would on a front host: while the block runs the host's server is DRAIN in every
backend where another server is up (a TCP and an HTTP one), and takes no new connection; an open connection is
waited for (at most drainSeconds, then said); once the block is done and the host passes its readyCheck, the
server is back; the last server up is never drained; a balancer whose socket does not answer is said and the
restart goes on; a failed block puts the server back without waiting for its check."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.engine.drain import drained, servers
from reconciler.spec.desired import DesiredBalancer, DesiredCheck, DesiredHost, DesiredState, DesiredUnit, Target
from reconciler.transport.base import CommandResult
from tests.support.etcd import free_port

pytestmark = pytest.mark.host


class Here:
    """A connection that runs its commands on this machine (what a front host's SSH connection does there)."""

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None, max_output: int = 0
    ) -> CommandResult:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        return CommandResult(tuple(argv), proc.returncode or 0, out, err)


class HereSession:
    async def connection(self, target: Target) -> Here:
        return Here()


class Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """HAProxy with a TCP backend (master-1, master-2), an HTTP one (the same) and one with master-1 alone, every
    server a local HTTP server; (its master socket, the TCP frontend's port)."""
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed: scripts/install-deps installs it")
    backends = [ThreadingHTTPServer(("127.0.0.1", 0), Ok) for _ in range(2)]
    for b in backends:
        threading.Thread(target=b.serve_forever, daemon=True).start()
    one, two = (b.server_address[1] for b in backends)
    front = free_port()
    (tmp_path / "h.cfg").write_text(f"""\
defaults
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend tcp
    mode tcp
    bind 127.0.0.1:{front}
    default_backend apiservers
backend apiservers
    mode tcp
    balance first
    server master-1 127.0.0.1:{one}
    server master-2 127.0.0.1:{two}
backend insecure
    mode http
    server master-1 127.0.0.1:{one}
    server master-2 127.0.0.1:{two}
backend alone
    mode http
    server master-1 127.0.0.1:{one}
""")
    sock = tmp_path / "master.sock"
    proc = subprocess.Popen(["haproxy", "-W", "-f", str(tmp_path / "h.cfg"), "-S", str(sock)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while "apiservers,master-1" not in stat(sock):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            assert time.monotonic() < deadline, "HAProxy did not answer on its master socket within 20 s"
            time.sleep(0.1)
        yield sock, front
    finally:
        proc.terminate()
        proc.wait(10)
        for b in backends:
            b.shutdown()


def stat(sock: Path) -> str:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--unix-socket", str(sock), "telnet://localhost"],
        input=b"@1 show stat; quit\n",
        capture_output=True,
        timeout=10,
    )
    return done.stdout.decode()


def states(sock: Path) -> dict[str, str]:
    return {f"{s.backend}/{s.name}": s.status for s in servers(stat(sock))}


def desired(sock: Path, ready_port: int, drain_seconds: float = 5.0) -> DesiredState:
    balancer = DesiredBalancer(
        str(sock), ("apiservers", "insecure", "alone"), ("etcd.service",), "ready", drain_seconds
    )
    front = DesiredHost(Target("lb", "127.0.0.1"), units=(DesiredUnit("haproxy.service", "haproxy", "/h", True, True, (), balancer=balancer),))  # fmt: skip
    check = DesiredCheck("ready", 2.0, url=f"http://127.0.0.1:{ready_port}/")
    master = DesiredHost(Target("master-1", "127.0.0.1"), units=(DesiredUnit("etcd.service", "etcd", "/e", True, True, ()),), checks=(check,))  # fmt: skip
    return DesiredState(hosts={"lb": front, "master-1": master})


async def test_the_hosts_server_is_drained_while_its_units_restart_and_put_back_once_ready(
    haproxy: tuple[Path, int],
) -> None:
    sock, port = haproxy
    ready = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=ready.serve_forever, daemon=True).start()
    said: list[str] = []
    state = desired(sock, ready.server_address[1])
    session = HereSession()
    try:
        async with drained(session, state, state.hosts["master-1"], ["etcd.service"], said.append):  # type: ignore[arg-type]
            during = states(sock)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:  # `balance first`: master-1 if it may
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                c.recv(100)
            after_one = servers(stat(sock))
        assert during["apiservers/master-1"] == "DRAIN" and during["insecure/master-1"] == "DRAIN"
        assert during["alone/master-1"] == "no check" and during["apiservers/master-2"] == "no check"
        # the new connection went to master-2: master-1 took none while drained
        assert [s.connections for s in after_one if s.backend == "apiservers"] == [0, 0]
        assert "master-1: not drained from HAProxy on lb: alone/master-1 is the last server up" in said
        assert any(line.startswith("master-1: drained from HAProxy on lb") for line in said), said
        assert states(sock)["apiservers/master-1"] == "no check" and said[-1] == "master-1: put back in HAProxy on lb"
    finally:
        ready.shutdown()


async def test_an_open_connection_is_waited_for_then_said(haproxy: tuple[Path, int]) -> None:
    sock, port = haproxy
    said: list[str] = []
    held = socket.create_connection(("127.0.0.1", port), timeout=5)  # to master-1 (`balance first`), held open
    try:
        wait_for_connection(sock)
        state = desired(sock, free_port(), drain_seconds=1.0)
        began = time.monotonic()
        async with drained(HereSession(), state, state.hosts["master-1"], ["etcd.service"], said.append) as block:  # type: ignore[arg-type]
            waited = time.monotonic() - began
            block.failed = True  # a restart that failed: put back at once (its ready check is not even served)
        assert 1.0 <= waited < 4, waited
        assert "master-1: 1 connection(s) still open after 1 s: going on" in said, said
        assert states(sock)["apiservers/master-1"] == "no check"
    finally:
        held.close()


def wait_for_connection(sock: Path) -> None:
    deadline = time.monotonic() + 10
    while not any(s.connections for s in servers(stat(sock)) if s.name == "master-1" and s.backend == "apiservers"):
        assert time.monotonic() < deadline
        time.sleep(0.05)


async def test_a_balancer_that_does_not_answer_is_said_and_the_restart_goes_on(tmp_path: Path) -> None:
    said: list[str] = []
    state = desired(tmp_path / "no-such.sock", free_port())
    ran = False
    async with drained(HereSession(), state, state.hosts["master-1"], ["etcd.service"], said.append):  # type: ignore[arg-type]
        ran = True
    assert ran and len(said) == 1 and said[0].startswith("master-1: not drained: lb: HAProxy's socket"), said


async def test_a_server_left_drained_by_a_run_cut_off_is_put_back_by_the_next(haproxy: tuple[Path, int]) -> None:
    sock, _ = haproxy
    subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--unix-socket", str(sock), "telnet://localhost"],
        input=b"@1 set server apiservers/master-1 state drain; quit\n",
        check=True,
        timeout=10,
    )
    assert states(sock)["apiservers/master-1"] == "DRAIN"
    state = desired(sock, free_port())
    async with drained(HereSession(), state, state.hosts["master-1"], ["etcd.service"]) as block:  # type: ignore[arg-type]
        block.failed = True
    assert states(sock)["apiservers/master-1"] == "no check"
