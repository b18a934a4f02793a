"""The stand-in apiserver's etcd probe (testbed/standins/kube_standin.py) against a slow member on loopback: calls
made while one ask waits share its answer, as a real apiserver's concurrent checks each wait for etcd."""

from __future__ import annotations

import argparse
import http.server
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from testbed.standins.kube_standin import EtcdProbe


class SlowHealth(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), SlowHandler)
        self.delay, self.asked, self.unavailable = delay, 0, 0


class SlowHandler(http.server.BaseHTTPRequestHandler):
    server: SlowHealth
    protocol_version = "HTTP/1.1"  # the probe keeps its connection

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.asked += 1
        time.sleep(self.server.delay)  # a member answering late, as at a leader change
        body = b'{"header": {}}'
        status = 503 if self.server.unavailable > 0 else 200
        self.server.unavailable -= 1
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow() -> Iterator[SlowHealth]:
    server = SlowHealth(0.5)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def probe_of(url: str) -> EtcdProbe:
    return EtcdProbe(argparse.Namespace(etcd_servers=url, etcd_cafile=None, etcd_certfile=None, etcd_keyfile=None))


def test_calls_while_an_ask_waits_share_its_answer_and_none_fails(slow: SlowHealth) -> None:
    probe = probe_of(f"http://127.0.0.1:{slow.server_address[1]}")
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: probe(), range(6)))
    assert answers == [(True, "ok")] * 6  # before: the 5 that found the ask waiting failed after 0.2 s
    assert slow.asked < 6  # one ask in flight per member


def test_a_member_that_does_not_listen_fails_at_once() -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), SlowHandler) as closed:
        port = closed.server_address[1]  # bound, then closed: nothing listens there
    began = time.monotonic()
    healthy, reason = probe_of(f"http://127.0.0.1:{port}")()
    assert not healthy and reason.startswith("etcd unreachable: http://127.0.0.1:") and time.monotonic() - began < 1.5


def test_a_member_unavailable_for_a_moment_is_asked_again_within_the_timeout_and_not_past_it() -> None:
    server = SlowHealth(0.0)
    server.unavailable = 3  # a leader change: etcd's gateway answers 503 (gRPC Unavailable) three times
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        probe = probe_of(f"http://127.0.0.1:{server.server_address[1]}")
        assert probe() == (True, "ok") and server.asked == 4
        server.unavailable = 10**6  # no leader at all (quorum lost): unhealthy once the 2 s are gone
        began = time.monotonic()
        healthy, reason = probe()
        assert not healthy and reason.endswith("HTTP 503") and 1.8 < time.monotonic() - began < 3.0
    finally:
        server.shutdown()
        server.server_close()
