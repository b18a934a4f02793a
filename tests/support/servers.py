"""Small HTTP servers on loopback for probe tests: one that answers only when several requests wait at once."""

from __future__ import annotations

import http.server
import threading


class Barrier(http.server.BaseHTTPRequestHandler):
    """Answers 200 only once `waiting` requests are open at the same time (sequential probes never get there)."""

    barrier: threading.Barrier

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        try:
            self.barrier.wait(timeout=8)
            self.send_response(200)
        except threading.BrokenBarrierError:
            self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass
