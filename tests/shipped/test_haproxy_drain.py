"""engine.drain against Debian's HAProxy run here (master-worker, its master socket in a directory of the test's),
commands run on this machine as they would on a front host: while the block runs the host's server is DRAIN in every
backend where another server is up (a TCP and an HTTP one), and takes no new connection; an open connection is
waited for (at most drainSeconds, then said); once the block is done and the host passes its readyCheck, the
server is back; the last server up is never drained; a balancer whose socket does not answer is said and the
restart goes on; a failed block puts the server back without waiting for its check."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.engine.drain import Server, drained, servers
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


def cli(sock: Path, line: str) -> str:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--unix-socket", str(sock), "telnet://localhost"],
        input=f"{line}; quit\n".encode(),
        capture_output=True,
        timeout=10,
    )
    return done.stdout.decode()


def stat(sock: Path) -> str:
    return cli(sock, "@1 show servers state; @1 show stat")


def states(sock: Path) -> dict[str, Server]:
    return {f"{s.backend}/{s.name}": s for s in servers(stat(sock))}


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
        assert during["apiservers/master-1"].drained and during["insecure/master-1"].drained
        assert not during["alone/master-1"].drained and during["apiservers/master-2"].serving
        # the new connection went to master-2: master-1 took none while drained
        assert [s.connections for s in after_one if s.backend == "apiservers"] == [0, 0]
        assert "master-1: not drained from HAProxy on lb: alone/master-1 is the last server up" in said
        assert any(line.startswith("master-1: drained from HAProxy on lb") for line in said), said
        assert states(sock)["apiservers/master-1"].serving and said[-1] == "master-1: put back in HAProxy on lb"
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
        assert states(sock)["apiservers/master-1"].serving
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
    assert (
        ran and len(said) == 1 and said[0].startswith("master-1: not drained from HAProxy on lb: HAProxy's socket")
    ), said


async def test_a_server_left_drained_by_a_run_cut_off_is_put_back_by_the_next(haproxy: tuple[Path, int]) -> None:
    sock, _ = haproxy
    subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--unix-socket", str(sock), "telnet://localhost"],
        input=b"@1 set server apiservers/master-1 state drain; quit\n",
        check=True,
        timeout=10,
    )
    assert states(sock)["apiservers/master-1"].drained
    state = desired(sock, free_port())
    async with drained(HereSession(), state, state.hosts["master-1"], ["etcd.service"]) as block:  # type: ignore[arg-type]
        block.failed = True
    assert states(sock)["apiservers/master-1"].serving


async def test_two_turns_at_once_never_take_out_a_backends_last_server(haproxy: tuple[Path, int]) -> None:
    """An etcd turn on master-2 while master-1's apiserver turn runs (rollout locks are per unit): the second look
    sees the first drain, so master-2 stays in the backend where the two are all there is."""
    sock, _ = haproxy
    state = desired(sock, free_port())
    hosts = {**state.hosts, "master-2": replace(state.hosts["master-1"], target=Target("master-2", "127.0.0.1"))}
    state = DesiredState(hosts=hosts)
    said: list[str] = []
    inside = asyncio.Event()

    async def turn(name: str) -> None:
        async with drained(HereSession(), state, state.hosts[name], ["etcd.service"], said.append) as block:  # type: ignore[arg-type]
            inside.set()
            await asyncio.sleep(0.5)
            block.failed = True

    await asyncio.gather(turn("master-1"), turn("master-2"))
    assert "master-2: not drained from HAProxy on lb: apiservers/master-2 is the last server up" in said or (
        "master-1: not drained from HAProxy on lb: apiservers/master-1 is the last server up" in said
    ), said
    assert all(s.serving for s in states(sock).values() if s.backend == "apiservers")


async def test_cancelled_while_waiting_for_its_check_the_server_is_put_back_still(haproxy: tuple[Path, int]) -> None:
    sock, _ = haproxy
    state = desired(sock, free_port())  # its readyCheck never passes: nothing listens there
    entered = asyncio.Event()

    async def turn() -> None:
        async with drained(HereSession(), state, state.hosts["master-1"], ["etcd.service"]):  # type: ignore[arg-type]
            entered.set()

    task = asyncio.ensure_future(turn())
    await entered.wait()
    await asyncio.sleep(1.0)  # the block is done; the drain waits for the check
    assert states(sock)["apiservers/master-1"].drained
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert states(sock)["apiservers/master-1"].serving


async def test_a_maintenance_the_operator_sets_meanwhile_is_left_as_it_is(haproxy: tuple[Path, int]) -> None:
    sock, _ = haproxy
    state = desired(sock, free_port())
    said: list[str] = []
    async with drained(HereSession(), state, state.hosts["master-1"], ["etcd.service"], said.append) as block:  # type: ignore[arg-type]
        cli(sock, "@1 disable server apiservers/master-1")
        block.failed = True
    after = states(sock)
    assert after["apiservers/master-1"].maint and "master-1: apiservers is in maintenance in HAProxy on lb: left so" in said  # fmt: skip
    assert after["insecure/master-1"].serving  # put back where the operator did nothing
