"""The HA front's HAProxy run for real on loopback, with the config specs/ha/haproxy.yaml renders (Debian's
haproxy, which scripts/install-deps installs): the backends are three local HTTP servers standing in for the
apiservers' insecure port, every address in the rendered config is rewritten to loopback.

What is pinned here (issue 26, item 8): the seed's insecure port (no authentication, no authorization) is served
on loopback only unless the operator opts in (`lb_insecure_bind`); an answer that says "failing" (5xx, or no
answer at all) is asked again of another apiserver only for a safe method (GET, HEAD, OPTIONS): a POST is delivered
exactly once; the `vip` check's path on the monitor port answers an apiserver's /readyz (over TLS, its certificate
verified) and nothing else; and
HAProxy gives up root (chroot and user) once it has bound its ports."""

from __future__ import annotations

import contextlib
import http.client
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.spec.isolate import load_desired
from testbed import pki

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[2]
VIP = "198.18.0.100"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rendered(tmp_path: Path, **extra: Any) -> str:
    """master-1's haproxy.cfg from the bundled specs with the HA front enabled (as docs/ha.md says),
    `extra` added to every host's vars."""
    d = tmp_path / "specs"
    shutil.copytree(REPO / "specs", d)
    docs = list(yaml.safe_load_all((d / "inventory.yaml").read_text()))
    for doc, priority in zip(docs, (150, 140, 130), strict=True):
        doc["metadata"]["labels"]["ha"] = "front"
        doc["spec"]["vars"].update(vip=VIP, vip_interface="host0", vrrp_priority=priority, **extra)
    (d / "inventory.yaml").write_text(yaml.safe_dump_all(docs))
    return load_desired(d).hosts["master-1"].files["/etc/haproxy/haproxy.cfg"].content.decode()


def section(cfg: str, name: str) -> str:
    """One `frontend`/`backend` section of a rendered config, up to the next section."""
    match = re.search(rf"^\s*{name}\n(.*?)(?=^\s*(?:frontend|backend|global|defaults)\s|\Z)", cfg, re.M | re.S)
    assert match, f"no section {name!r} in:\n{cfg}"
    return match.group(1)


@dataclass
class Backends:
    """Three apiserver stand-ins on loopback. /healthz answers 200 (the checks); any other path is counted,
    and a path under /fail-once/ answers its first delivery 503, one under /drop-once/ closes its first
    delivery's connection without an answer (HAProxy's empty-response); every later delivery answers 200."""

    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)
    servers: list[ThreadingHTTPServer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # the apiservers' secure port as the `vip` check's backend sees it: TLS (the testbed PKI's kubernetes.pem),
    # /readyz answered 200, anything else counted in `deliveries`
    secure: list[ThreadingHTTPServer] = field(default_factory=list)
    ssl_dir: Path | None = None

    def start(self) -> Backends:
        backends = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if self.path == "/healthz":
                    self._send(200, b"ok")
                    return
                with backends.lock:
                    backends.deliveries[(self.command, self.path)] += 1
                    first = backends.deliveries[(self.command, self.path)] == 1
                if first and self.path.startswith("/fail-once/"):
                    self._send(503, b"failing")
                elif first and self.path.startswith("/drop-once/"):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self._send(200, b"done")

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    with contextlib.suppress(OSError):  # HAProxy may close as soon as it saw a 503's head
                        self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

        for _ in range(3):
            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)

        class Secure(Handler):
            def _answer(self) -> None:
                if self.path == "/readyz":
                    self._send(200, b"ok")
                else:
                    with backends.lock:
                        backends.deliveries[(self.command, self.path)] += 1
                    self._send(403, b"forbidden")

            do_GET = do_POST = do_HEAD = _answer

        if self.ssl_dir is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.ssl_dir / "kubernetes.pem", self.ssl_dir / "kubernetes-key.pem")
            for _ in range(3):
                server = ThreadingHTTPServer(("127.0.0.1", 0), Secure)
                server.daemon_threads = True
                server.socket = context.wrap_socket(server.socket, server_side=True)
                threading.Thread(target=server.serve_forever, daemon=True).start()
                self.secure.append(server)
        return self

    def stop(self) -> None:
        for server in self.servers + self.secure:
            server.shutdown()
            server.server_close()

    @property
    def ports(self) -> list[int]:
        return [s.server_address[1] for s in self.servers]


@dataclass
class LocalHAProxy:
    cfg: str
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]

    def request(
        self, method: str, path: str, port: str = "insecure", host: str = "127.0.0.1", body: bytes | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(host, self.ports[port], timeout=10)
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def to_loopback(cfg: str, backends: Backends) -> str:
    """Every server line on loopback: the insecure backend's on the stand-ins, the `vip` check's (/readyz over
    TLS, its CA the local PKI's) on the TLS stand-ins, the secure TCP backend's on a port where nothing listens."""
    assert backends.ssl_dir is not None
    ports = iter(backends.ports)
    cfg = re.sub(r"(server \S+) [\d.]+:8080", lambda m: f"{m.group(1)} 127.0.0.1:{next(ports)}", cfg)
    readyz = section(cfg, "backend kube-apiserver-readyz")
    secure = iter(s.server_address[1] for s in backends.secure)
    local = re.sub(r"(server \S+) [\d.]+:6443", lambda m: f"{m.group(1)} 127.0.0.1:{next(secure)}", readyz)
    cfg = cfg.replace(readyz, local.replace("/etc/kubernetes/ssl/ca.pem", str(backends.ssl_dir / "ca.pem")))
    return re.sub(r"(server \S+) [\d.]+:6443", lambda m: f"{m.group(1)} 127.0.0.1:{free_port()}", cfg)


def wait_until(what: str, condition: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def run_haproxy(tmp_path: Path, backends: Backends, **extra: Any) -> Iterator[LocalHAProxy]:
    ports = {"secure": free_port(), "insecure": free_port(), "monitor": free_port()}
    cfg = to_loopback(
        rendered(
            tmp_path,
            lb_port=ports["secure"],
            lb_insecure_port=ports["insecure"],
            lb_monitor_port=ports["monitor"],
            **extra,
        ),
        backends,
    )
    if os.geteuid() != 0:  # chroot and setuid need root: run without them, the privilege test says it skipped
        cfg = re.sub(r"^\s*(chroot|user|group) .*\n", "", cfg, flags=re.M)
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    log = (tmp_path / "haproxy.log").open("wb")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(path)], stdout=log, stderr=subprocess.STDOUT)
    front = LocalHAProxy(cfg, proc, ports)
    try:
        # up, and every stand-in passing its check (a request through the frontend reaches one)
        wait_until("HAProxy's monitor URI", lambda: front.request("GET", "/healthz", port="monitor")[0] == 200)
        wait_until("the insecure frontend", lambda: front.request("GET", "/healthz")[0] == 200)
        yield front
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Backends]:
    b = Backends(ssl_dir=pki.generate(tmp_path / "pki", [], [])).start()
    yield b
    b.stop()


@pytest.fixture
def haproxy(tmp_path: Path, backends: Backends) -> Iterator[LocalHAProxy]:
    yield from run_haproxy(tmp_path, backends)


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_insecure_frontend_is_on_loopback_unless_the_operator_opts_in(tmp_path: Path, backends: Backends) -> None:
    default = rendered(tmp_path / "default")
    assert "bind 127.0.0.1:8081" in section(default, "frontend kube-apiserver-insecure")
    opted = rendered(tmp_path / "opted", lb_insecure_bind="*")
    assert "bind *:8081" in section(opted, "frontend kube-apiserver-insecure")
    # live: 127.0.0.2 stands for every address that is not 127.0.0.1 (the VIP among them)
    for extra, other_address_refused in (({}, True), ({"lb_insecure_bind": "*"}, False)):
        run = tmp_path / ("opted-live" if extra else "default-live")
        run.mkdir()
        for front in run_haproxy(run, backends, **extra):
            assert front.request("GET", "/api/v1/secrets")[0] == 200  # on the master itself: as the seed had it
            assert refused("127.0.0.2", front.ports["insecure"]) is other_address_refused
            assert not refused("127.0.0.2", front.ports["secure"])  # the TLS frontend stays on every address


def test_a_get_is_asked_again_of_another_apiserver_a_post_is_delivered_once(
    haproxy: LocalHAProxy, backends: Backends
) -> None:
    assert haproxy.request("GET", "/fail-once/pods") == (200, b"done")
    assert backends.deliveries[("GET", "/fail-once/pods")] == 2
    assert haproxy.request("HEAD", "/fail-once/pods")[0] == 200
    for n in range(4):  # (today's HAProxy replays a POST on most tries, not every one)
        status, _ = haproxy.request("POST", f"/fail-once/pods-{n}", body=b'{"kind":"Pod"}')
        assert backends.deliveries[("POST", f"/fail-once/pods-{n}")] == 1
        assert status == 503  # the apiserver's own answer, passed on: the client decides whether to send it again
    for method in ("PUT", "PATCH", "DELETE"):  # idempotent or not, a write is never replayed by the front
        assert haproxy.request(method, "/fail-once/x", body=b"{}")[0] == 503
        assert backends.deliveries[(method, "/fail-once/x")] == 1


def test_a_post_whose_connection_closed_without_an_answer_is_not_replayed(
    haproxy: LocalHAProxy, backends: Backends
) -> None:
    assert haproxy.request("GET", "/drop-once/pods") == (200, b"done")
    assert backends.deliveries[("GET", "/drop-once/pods")] == 2
    for n in range(4):
        status, _ = haproxy.request("POST", f"/drop-once/pods-{n}", body=b'{"kind":"Pod"}')
        assert backends.deliveries[("POST", f"/drop-once/pods-{n}")] == 1
        assert status == 502  # the apiserver may have acted on it: said so, not sent again


def test_a_post_is_still_sent_elsewhere_when_an_apiserver_refuses_the_connection(
    haproxy: LocalHAProxy, backends: Backends
) -> None:
    """A connection that failed carried nothing: that retry (to another apiserver) stays on for every method."""
    backends.servers[0].shutdown()
    backends.servers[0].server_close()  # refused from now on, before any check has seen it
    for n in range(6):  # round robin: some of them are first sent to the closed one
        assert haproxy.request("POST", f"/write-{n}", body=b"{}") == (200, b"done")
        assert backends.deliveries[("POST", f"/write-{n}")] == 1


def test_the_vip_checks_path_answers_an_apiservers_readyz_over_tls_and_nothing_else(
    tmp_path: Path, haproxy: LocalHAProxy, backends: Backends
) -> None:
    assert haproxy.request("GET", "/apiserver/healthz", port="monitor") == (200, b"ok")
    assert haproxy.request("GET", "/healthz", port="monitor")[0] == 200  # the local HAProxy serves (keepalived)
    for method, path in (("GET", "/api/v1/secrets"), ("POST", "/apiserver/healthz"), ("GET", "/apiserver/x")):
        assert haproxy.request(method, path, port="monitor", body=b"" if method == "POST" else None)[0] == 403
    assert not backends.deliveries  # nothing but /readyz (and the checks' /healthz) reached an apiserver
    vip = load_desired(tmp_path / "specs").hosts["master-1"].check("vip")
    assert vip is not None and vip.url == f"http://{VIP}:{haproxy.ports['monitor']}/apiserver/healthz"


def test_haproxy_gives_up_root_once_its_ports_are_bound(haproxy: LocalHAProxy) -> None:
    assert re.search(r"^\s*chroot /var/lib/haproxy$", haproxy.cfg, re.M) or os.geteuid() != 0
    if os.geteuid() != 0:
        pytest.skip(
            "chroot and setuid need root; the rendered global section is checked by tests/unit/engine/test_converge_virtual_ip.py"
        )
    user = pwd.getpwnam("haproxy")  # Debian's haproxy package creates it, with /var/lib/haproxy
    status = Path(f"/proc/{haproxy.proc.pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
    gids = re.search(r"^Gid:\s+(.*)$", status, re.M)
    assert uids and set(uids.group(1).split()) == {str(user.pw_uid)}, status
    assert gids and set(gids.group(1).split()) == {str(user.pw_gid)}, status
    assert os.readlink(f"/proc/{haproxy.proc.pid}/root") == "/var/lib/haproxy"
