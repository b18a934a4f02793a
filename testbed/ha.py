"""The HA front on the testbed (tests and bench): enabling specs/ha/ in a spec directory, who holds the VIP,
and a client sending requests through the VIP the whole time a fault runs.

`Traffic` is bounded in count and time; it records each request's start (monotonic) and whether it succeeded,
so a caller can count failures in a window and measure the time from a fault to the first success after it.
`partitioned` cuts a host off the bridge from the machine's side: the host's own link stays up, so its keepalived
sees no fault of its own and keeps the VIP while the others elect a holder (the real split brain).
`send_adverts` plays a stranger on the masters' network: VRRPv3 adverts claiming the VIP, from the machine's side.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import yaml

from testbed.hosts import Testbed, TestHost
from testbed.layout import BRIDGE, GATEWAY, VIP

VIP_URL = f"http://{VIP}:8081/healthz"  # the HA front's insecure frontend (specs/ha/haproxy.yaml)
VIP_TLS_URL = f"https://{VIP}:8443/healthz"  # its secure one: TCP through HAProxy to an apiserver's TLS port
IPPROTO_VRRP = 112


def enable_ha(spec_dir: Path, insecure_on_vip: bool = True) -> None:
    """As docs/ha.md says: label the masters `ha: front`, give them the VIP and priorities. And, as
    stacked masters often run, each apiserver on its own etcd member (so stopping one member fails one apiserver).
    `insecure_on_vip`: the operator's opt-in (`lb_insecure_bind: "*"`) to the seed's insecure port on every address,
    the VIP included, which `Traffic` on VIP_URL needs; without it that port is on loopback only."""
    docs = list(yaml.safe_load_all((spec_dir / "inventory.yaml").read_text()))
    for doc, priority in zip(docs, (150, 140, 130), strict=False):
        doc["metadata"]["labels"]["ha"] = "front"
        doc["spec"]["vars"].update(vip=VIP, vip_interface="host0", vrrp_priority=priority)
        if insecure_on_vip:
            doc["spec"]["vars"]["lb_insecure_bind"] = "*"
    (spec_dir / "inventory.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    kube = spec_dir / "kubernetes.yaml"
    local = 'KUBE_ETCD_SERVERS="--etcd-servers=https://{{ host.address }}:2379"'
    kube.write_text(re.sub(r'KUBE_ETCD_SERVERS="--etcd-servers=[^"]*"', lambda _: local, kube.read_text()))


def holders(bed: Testbed) -> list[str]:
    """The hosts that hold the VIP now (a host that does not answer SSH counts as not holding it)."""
    out = []
    for h in bed.hosts:
        try:
            proc = h.ssh(f"ip -o addr show to {VIP}", check=False, timeout=5)
        except subprocess.TimeoutExpired:
            continue
        if proc.returncode == 0 and proc.stdout.strip():
            out.append(h.name)
    return out


@contextlib.contextmanager
def partitioned(host: TestHost) -> Iterator[None]:
    """`host` off the testbed's bridge for the block (its veth taken out of the bridge on the machine's side),
    back on it afterwards whatever happens."""
    veth = f"vb-{host.name}"
    subprocess.run(["ip", "link", "set", veth, "nomaster"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "link", "set", veth, "master", BRIDGE], check=True, capture_output=True)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def vrrp_advert(src: str, dst: str, vrid: int, priority: int, addresses: list[str], ttl: int = 255) -> bytes:
    """One VRRPv3 advertisement (RFC 5798) in its IPv4 packet, header included (advert interval 0.5 s)."""
    body = struct.pack("!BBBBH", 0x31, vrid, priority, len(addresses), 50) + b"\0\0"
    body += b"".join(socket.inet_aton(a) for a in addresses)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, IPPROTO_VRRP, len(body))
    body = body[:6] + struct.pack("!H", _checksum(pseudo + body)) + body[8:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0xC0,
        20 + len(body),
        0,
        0,
        ttl,
        IPPROTO_VRRP,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + body


def send_adverts(
    dst: str, until: Callable[[], bool], src: str = GATEWAY, priority: int = 254, ttl: int = 255, seconds: float = 15
) -> int:
    """Send VRRPv3 adverts for the VIP (router id 51, as specs/ha/ renders by default) from `src` to `dst` every
    0.1 s, until `until()` is true (or `seconds`); return how many were sent. Needs root (a raw socket); the
    machine's side of the bridge (GATEWAY) is the stranger, or any `src` forged in the IP header."""
    packet = vrrp_advert(src, dst, 51, priority, [VIP], ttl)
    sent = 0
    end = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        while time.monotonic() < end:
            sock.sendto(packet, (dst, 0))
            sent += 1
            if sent % 5 == 0 and until():
                break
            time.sleep(0.1)
    return sent


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False  # the client measures availability, not the certificate (which names the VIP)
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Traffic:
    """`with Traffic() as t:` sends GET `url` every `pause` seconds until the block ends (at most `limit`
    requests or `seconds`), each with `timeout`."""

    url: str = VIP_URL
    pause: float = 0.02
    timeout: float = 2.0
    limit: int = 5000
    seconds: float = 180.0
    results: list[tuple[float, bool, str, float]] = field(default_factory=list)  # (start, ok, error, end)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        end = time.monotonic() + self.seconds
        context = _unverified() if self.url.startswith("https:") else None
        while not self._stop.is_set() and len(self.results) < self.limit and time.monotonic() < end:
            began = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout, context=context) as resp:  # noqa: S310
                    resp.read()
                self.results.append((began, True, "", time.monotonic()))
            except urllib.error.HTTPError as exc:  # what the server said, e.g. which of /healthz's checks failed
                said = exc.read(300).decode("utf-8", "replace").replace("\n", " ").strip()
                error = f"{exc.code} {said}" if said else str(exc.code)
                self.results.append((began, False, error, time.monotonic()))
            except (OSError, urllib.error.URLError, ssl.SSLError) as exc:
                error = type(exc).__name__
                self.results.append((began, False, error, time.monotonic()))
            self._stop.wait(self.pause)

    def failed(self, since: float = 0.0) -> list[tuple[float, bool, str, float]]:
        return [r for r in list(self.results) if not r[1] and r[0] >= since]

    def sent(self, since: float = 0.0) -> int:
        return sum(1 for r in list(self.results) if r[0] >= since)

    def first_success_after(self, t: float) -> float | None:
        """Seconds from `t` to the start of the first successful request that began after the last failure
        following `t` (the end of the outage); None if none succeeded yet."""
        after = [r for r in list(self.results) if r[0] >= t]
        last_failure = max((r[0] for r in after if not r[1]), default=t)
        ok = next((r[0] for r in after if r[1] and r[0] >= last_failure), None)
        return None if ok is None else ok - t

    def outage_after(self, t: float, slow: float = 0.5, run: int = 5) -> float | None:
        """Seconds from `t` to the end of the first outage after it: the first request begun after `t` that failed
        or took longer than `slow` starts it (a request that hangs until the VIP moves is the outage too); it
        ends when the first of `run` successes in a row completes. 0.0 when nothing was disturbed; None while it
        has not ended. A later outage (e.g. etcd's own election when a cut host returns) is not this one."""
        after = [r for r in list(self.results) if r[0] >= t]
        first = next((i for i, r in enumerate(after) if not r[1] or r[3] - r[0] > slow), None)
        if first is None:
            return 0.0
        for i in range(first, len(after) - run + 1):
            if all(r[1] for r in after[i : i + run]):
                return after[i][3] - t
        return None

    def wait_success_after(self, t: float, timeout: float = 60.0) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recent = [r for r in list(self.results) if r[0] >= t]
            if len(recent) >= 5 and all(r[1] for r in recent[-5:]):  # five in a row: the outage is over
                return self.first_success_after(t)
            time.sleep(0.05)
        return None
