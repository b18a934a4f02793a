"""The observe script's health probes, run here against loopback servers: every HTTP probe of a host in one curl
process (transfers side by side) when curl can (>= 7.75), one curl each otherwise, with the same results either
way: 200, 500, a refused port, a probe past its timeout, a TCP check beside them."""

from __future__ import annotations

import http.server
import os
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.observe.facts import observe_argv, parse_observation
from reconciler.spec.desired import DesiredCheck

pytestmark = pytest.mark.host


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(2)
        self.send_response(500 if self.path == "/bad" else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()


def _curl_that_logs(tmp_path: Path, version: str | None) -> dict[str, str]:
    """A PATH whose curl records each start (and claims `version` for --version, if given) and runs the real one."""
    real = subprocess.run(["sh", "-c", "command -v curl"], capture_output=True, text=True, check=True).stdout.strip()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = f'[ "$1" = --version ] && echo "curl {version} (x86_64-pc-linux-gnu)" && exit 0\n' if version else ""
    (bin_dir / "curl").write_text(f'#!/bin/sh\necho "$1" >> {tmp_path}/starts\n{fake}exec {real} "$@"\n')
    (bin_dir / "curl").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize(("version", "one_process"), [(None, True), ("7.74.0", False), ("7.29.0", False)])
def test_every_http_probe_in_one_curl_when_it_can_with_the_same_results(
    port: int, tmp_path: Path, version: str | None, one_process: bool
) -> None:
    checks = [
        DesiredCheck("ok", 3, url=f"http://127.0.0.1:{port}/"),
        DesiredCheck("bad", 3, url=f"http://127.0.0.1:{port}/bad"),
        DesiredCheck("refused", 3, url="http://127.0.0.1:9/"),
        DesiredCheck("slow", 0.5, url=f"http://127.0.0.1:{port}/slow"),
        DesiredCheck("tcp", 1, tcp_host="127.0.0.1", tcp_port=port),
    ]
    env = _curl_that_logs(tmp_path, version)
    out = subprocess.run(observe_argv((), (), checks), capture_output=True, text=True, env=env, timeout=30)
    results = {c.name: (c.ok, c.detail) for c in parse_observation("h", out.stdout, checks).checks}
    assert results == {
        "ok": (True, "HTTP 200"),
        "bad": (False, "HTTP 500, expected 200"),
        "refused": (False, "connection refused"),
        "slow": (False, "timed out"),
        "tcp": (True, "port open"),
    }
    transfers = [s for s in (tmp_path / "starts").read_text().splitlines() if s != "--version"]
    assert len(transfers) == (1 if one_process else 4)


def test_a_single_probe_asks_no_version(port: int, tmp_path: Path) -> None:
    checks = [DesiredCheck("ok", 3, url=f"http://127.0.0.1:{port}/")]
    env = _curl_that_logs(tmp_path, None)
    out = subprocess.run(observe_argv((), (), checks), capture_output=True, text=True, env=env, timeout=30)
    assert parse_observation("h", out.stdout, checks).checks[0].ok
    assert "--version" not in (tmp_path / "starts").read_text().splitlines()


@pytest.mark.parametrize("version", [None, "7.29.0"])
def test_the_probes_run_side_by_side_either_way(tmp_path: Path, version: str | None) -> None:
    """Three checks against a server that answers only when all three wait at once: one curl with a connection
    per transfer opened at once (--parallel-immediate: curl would otherwise wait to multiplex on the first), or
    three curls in the background."""
    from tests.support.servers import Barrier

    handler = type("Handler", (Barrier,), {"barrier": threading.Barrier(3)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        checks = [DesiredCheck(f"c{i}", 5.0, url=f"http://127.0.0.1:{server.server_address[1]}/{i}") for i in range(3)]
        env = _curl_that_logs(tmp_path, version)
        out = subprocess.run(observe_argv((), (), checks), capture_output=True, text=True, env=env, timeout=30)
        snap = parse_observation("h", out.stdout, checks)
        assert snap.healthy, snap.checks
    finally:
        server.shutdown()
        server.server_close()


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    """500 for the first `failures` requests, then 200 (a unit still starting, then up)."""

    failures = 0
    seen = 0

    def do_GET(self) -> None:
        type(self).seen += 1
        self.send_response(500 if type(self).seen <= self.failures else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("version", [None, "7.29.0"])
def test_settle_probes_again_until_the_checks_pass(tmp_path: Path, version: str | None) -> None:
    """With `settle`, one observation probes the failing checks again (50 ms apart) until they pass and answers
    with each check's last result; without, it answers with the first round. A check that never passes ends the
    settling at its deadline, and checks that passed are not asked again meanwhile."""
    handler = type("Handler", (_CountingHandler,), {"failures": 3, "seen": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        checks = [DesiredCheck("a", 3, url=url), DesiredCheck("b", 3, url=url + "x")]
        env = _curl_that_logs(tmp_path, version)

        def observe(checks: list[DesiredCheck], settle: float) -> dict[str, bool]:
            argv = observe_argv((), (), checks, settle=settle)
            out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
            return {c.name: c.ok for c in parse_observation("h", out.stdout, checks).checks}

        assert observe(checks, 0) == {"a": False, "b": False}  # requests 1 and 2: both 500
        assert observe(checks, 5) == {"a": True, "b": True}  # 3 fails one of them, which is asked again: 5 passes
        assert handler.seen == 5
        starts = tmp_path / "starts"
        starts.write_text("")
        never = [DesiredCheck("refused", 1, url="http://127.0.0.1:9/"), *checks]
        assert observe(never, 0.3) == {"refused": False, "a": True, "b": True}
        assert handler.seen == 7  # a and b once each
        rounds = [s for s in starts.read_text().splitlines() if s != "--version"]
        assert len(rounds) > (1 if version is None else 3), rounds  # the refused one was asked again
    finally:
        server.shutdown()
        server.server_close()


def test_a_bash_without_epochrealtime_does_not_settle(tmp_path: Path) -> None:
    """bash older than 5 has no $EPOCHREALTIME: the settling has no clock, so it is not done (one round of probes),
    rather than looping until the check passes."""
    checks = [DesiredCheck("refused", 1, url="http://127.0.0.1:9/"), DesiredCheck("also", 1, url="http://127.0.0.1:9/")]
    argv = observe_argv((), (), checks, settle=5)
    argv[2] = "unset EPOCHREALTIME\n" + argv[2]
    env = _curl_that_logs(tmp_path, None)
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=20)
    assert {c.name: c.ok for c in parse_observation("h", out.stdout, checks).checks} == {
        "refused": False,
        "also": False,
    }
    assert [s for s in (tmp_path / "starts").read_text().splitlines() if s != "--version"] == ["-Z"]  # one round
