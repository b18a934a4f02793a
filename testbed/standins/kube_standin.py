#!/usr/bin/python3
"""Stand-in for kube-apiserver, kube-controller-manager and kube-scheduler (testbed only).

One stdlib-only script installed under the three names; it picks its role from basename(argv[0])
(or from its first argument when run under another name). It accepts every flag of the seed's units
(unknown flags are ignored; --help and --version print one line and exit, listing no flag, so reconciler's
flag check leaves it alone), serves /healthz, /livez and /readyz over HTTP, sends sd_notify READY=1 once
its sockets are bound, and exits 0 on SIGTERM.

- kube-apiserver: HTTP on --insecure-bind-address (127.0.0.1) : --insecure-port (8080), plus HTTPS on
  --bind-address (0.0.0.0) : --secure-port (6443) when --tls-cert-file/--tls-private-key-file are given.
  Healthy (200 "ok") while at least one of --etcd-servers answers a read of /registry/health with 200 (etcd's
  JSON gateway, TLS with --etcd-cafile / --etcd-certfile / --etcd-keyfile, 2 s timeout), as a real apiserver's
  etcd check reads that key; 500 with the reason otherwise.
- kube-controller-manager: HTTP on --address (0.0.0.0) : --port (10252); always healthy.
- kube-scheduler: HTTP on --address (0.0.0.0) : --port (10251); always healthy.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import os
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed

DEFAULT_PORTS = {"kube-controller-manager": 10252, "kube-scheduler": 10251}
COMPONENTS = ("kube-apiserver", *DEFAULT_PORTS)
HEALTH_PATHS = ("/healthz", "/livez", "/readyz")
ETCD_TIMEOUT = 2.0
HEALTH_READ = b'{"key": "L3JlZ2lzdHJ5L2hlYWx0aA=="}'  # /registry/health, base64 as etcd's gateway takes keys


def log(component: str, message: str) -> None:
    print(f"{component}: {message}", file=sys.stderr, flush=True)


def sd_notify(message: str) -> None:
    """Send `message` to $NOTIFY_SOCKET (path or abstract '@name'); silently skip when unset."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def build_parser(component: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=component, add_help=False, allow_abbrev=False)
    if component == "kube-apiserver":
        parser.add_argument("--insecure-bind-address", "--address", dest="insecure_bind_address", default="127.0.0.1")
        parser.add_argument("--insecure-port", "--port", dest="insecure_port", type=int, default=8080)
        parser.add_argument("--bind-address", default="0.0.0.0")
        parser.add_argument("--secure-port", type=int, default=6443)
        parser.add_argument("--tls-cert-file")
        parser.add_argument("--tls-private-key-file")
        parser.add_argument("--etcd-servers", default="")
        parser.add_argument("--etcd-cafile")
        parser.add_argument("--etcd-certfile")
        parser.add_argument("--etcd-keyfile")
    else:
        parser.add_argument("--address", default="0.0.0.0")
        parser.add_argument("--port", type=int, default=DEFAULT_PORTS[component])
    return parser


class EtcdProbe:
    """Reads /registry/health from every --etcd-servers member in parallel; healthy when any answers 200.

    A real apiserver's /healthz reads that key (a linearizable read, 2 s timeout, asked again while etcd answers
    Unavailable): while the members elect a leader (another member restarted) it waits for the new one and
    succeeds. etcd's own /health answers 503 at once when it has no leader, which made a healthy apiserver answer
    500 at each leader change.

    As a real kube-apiserver asks etcd over the client connections it keeps (not a TLS handshake per
    /healthz), the TLS context is built once and each member's connection is kept and reused; a broken one
    is replaced once per ask (a restarted member), so a member that is down still fails its ask at once.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.servers = [s.strip().rstrip("/") for s in args.etcd_servers.split(",") if s.strip()]
        self.cafile, self.certfile, self.keyfile = args.etcd_cafile, args.etcd_certfile, args.etcd_keyfile
        self._context: ssl.SSLContext | None = None
        self._kept: dict[str, http.client.HTTPConnection] = {}
        self._guard = threading.Lock()
        self._inflight: dict[str, Future[tuple[bool, str]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.servers)))  # one ask in flight per member

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            context = ssl.create_default_context(cafile=self.cafile)
            if self.certfile:
                context.load_cert_chain(self.certfile, self.keyfile)
            self._context = context
        return self._context

    def _connect(self, server: str) -> http.client.HTTPConnection:
        url = urllib.parse.urlsplit(server)
        if url.scheme == "https":
            return http.client.HTTPSConnection(url.netloc, timeout=ETCD_TIMEOUT, context=self.context())
        return http.client.HTTPConnection(url.netloc, timeout=ETCD_TIMEOUT)

    def _get(self, server: str) -> int:
        conn = self._kept.pop(server, None)
        for attempt in (0, 1):
            fresh = conn is None
            conn = conn or self._connect(server)
            try:
                conn.request("POST", "/v3/kv/range", body=HEALTH_READ, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                self._kept[server] = conn
                return response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                if fresh or attempt:
                    raise
                conn = None  # a kept connection the member closed: once more on a new one
        raise AssertionError("unreachable")

    def _ask(self, server: str) -> tuple[bool, str]:
        deadline = time.monotonic() + ETCD_TIMEOUT
        while True:
            try:
                status = self._get(server)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                return False, f"{server}: {getattr(exc, 'reason', exc) or type(exc).__name__}"
            # 503 is gRPC's Unavailable ("leader changed", "no leader"): etcd's client asks a read again (its retry
            # interceptor), so a real apiserver's check waits through a leader change within its 2 s
            if status != 503 or time.monotonic() + 0.05 >= deadline:
                return status == 200, f"{server}: HTTP {status}"
            time.sleep(0.05)

    def _shared(self, server: str) -> Future[tuple[bool, str]]:
        """The ask of `server` in flight, or a new one: concurrent /healthz calls share one ask per member (on its
        kept connection). A real apiserver's concurrent checks each wait for etcd's answer (up to 2 s); failing a
        call because another one's ask was still waiting made a member's slow answer at a leader change a 500."""
        with self._guard:
            future = self._inflight.get(server)
            if future is None or future.done():
                future = self._inflight[server] = self._pool.submit(self._ask, server)
            return future

    def __call__(self) -> tuple[bool, str]:
        if not self.servers:
            return False, "no --etcd-servers configured"
        try:
            self.context()
        except (OSError, ssl.SSLError) as exc:
            return False, f"etcd client TLS setup failed: {exc}"
        asks = {self._shared(s): s for s in self.servers}
        reasons: list[str] = []
        try:
            for future in as_completed(asks, timeout=2 * ETCD_TIMEOUT + 1):  # its connect, its answer
                healthy, reason = future.result()
                if healthy:
                    return True, "ok"
                reasons.append(reason)
        except TimeoutError:
            reasons += [f"{asks[f]}: no answer" for f in asks if not f.done()]
        return False, "etcd unreachable: " + "; ".join(sorted(reasons))


class HealthServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], check: Callable[[], tuple[bool, str]]) -> None:
        super().__init__(address, HealthHandler)
        self.check = check


class HealthHandler(http.server.BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        path = self.path.split("?", 1)[0]
        if path in HEALTH_PATHS:
            healthy, reason = self.server.check()
            status, body = (200, "ok") if healthy else (500, f"[-]{path.strip('/')} failed: {reason}\n")
        else:
            status, body = 404, "404 page not found\n"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # quiet: keep the journal readable
        pass


def always_healthy() -> tuple[bool, str]:
    return True, "ok"


def make_servers(component: str, args: argparse.Namespace) -> list[HealthServer]:
    if component != "kube-apiserver":
        return [HealthServer((args.address, args.port), always_healthy)]
    probe = EtcdProbe(args)
    servers = []
    if args.insecure_port:
        servers.append(HealthServer((args.insecure_bind_address, args.insecure_port), probe))
    if args.tls_cert_file and args.tls_private_key_file and args.secure_port:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert_file, args.tls_private_key_file)
        secure = HealthServer((args.bind_address, args.secure_port), probe)
        secure.socket = context.wrap_socket(secure.socket, server_side=True, do_handshake_on_connect=False)
        servers.append(secure)
    return servers


def component_and_args(argv: list[str]) -> tuple[str, list[str]]:
    name = os.path.basename(argv[0]).removesuffix(".py")
    if name in COMPONENTS:
        return name, argv[1:]
    if len(argv) > 1 and argv[1] in COMPONENTS:
        return argv[1], argv[2:]
    raise SystemExit(f"usage: run as one of {', '.join(COMPONENTS)} (or pass the name as first argument)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    component, flags = component_and_args(argv)
    if "--help" in flags or "--version" in flags:  # as the real ones: say, and never serve
        print(f"{component}: testbed stand-in (accepts any flag)")
        return 0
    log(component, f"testbed stand-in starting, argv={argv!r}")
    args, _ignored = build_parser(component).parse_known_args(flags)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        servers = make_servers(component, args)
    except (OSError, ssl.SSLError) as exc:
        log(component, f"cannot serve: {exc}")
        return 1
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    listening = ", ".join(f"{s.server_address[0]}:{s.server_address[1]}" for s in servers)
    log(component, f"serving /healthz on {listening or 'nothing'}")
    sd_notify(f"READY=1\nSTATUS=serving on {listening}")
    watchdog_period = int(os.environ.get("WATCHDOG_USEC", "0") or 0) / 2e6
    last_ping = time.monotonic()
    while not stop.wait(min(0.5, watchdog_period or 0.5)):
        if watchdog_period and time.monotonic() - last_ping >= watchdog_period:
            sd_notify("WATCHDOG=1")
            last_ping = time.monotonic()
    sd_notify("STOPPING=1")
    for server in servers:
        server.shutdown()
        server.server_close()
    log(component, "stopped on signal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
