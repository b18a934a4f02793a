"""etcd seen from outside while reconciler works on it (testbed tests): which members serve, and whether the cluster
answers a read that needs its quorum, sampled every 0.2 s by a thread beside the test."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.request

from testbed import Testbed, TestHost


def tls(bed: Testbed) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(bed.pki_dir / "ca.pem"))
    context.load_cert_chain(str(bed.pki_dir / "kubernetes.pem"), str(bed.pki_dir / "kubernetes-key.pem"))
    return context


def version(host: TestHost, context: ssl.SSLContext) -> dict[str, str] | None:
    """What the member on `host` says of its version and its cluster's; None when it does not serve."""
    try:
        with urllib.request.urlopen(f"https://{host.address}:2379/version", timeout=1, context=context) as reply:
            said = json.loads(reply.read())
            return said if isinstance(said, dict) else None
    except (OSError, ValueError):
        return None


class Serving(threading.Thread):
    """Samples, every 0.2 s, how many members serve (answer /version): the fewest seen is the cluster's worst moment."""

    def __init__(self, bed: Testbed):
        super().__init__(daemon=True)
        self.bed, self.context = bed, tls(bed)
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append(sum(version(h, self.context) is not None for h in self.bed.hosts))
            self.done.wait(0.2)

    def stop(self) -> None:
        self.done.set()
        self.join(10)


class Quorum(threading.Thread):
    """Samples, every 0.2 s, a linearizable read (it needs etcd's quorum) through each of `hosts` in turn: a read
    that fails on every one of them is a moment without quorum."""

    def __init__(self, bed: Testbed, hosts: list[TestHost]):
        super().__init__(daemon=True)
        self.hosts, self.context = hosts, tls(bed)
        self.samples, self.without = 0, 0
        self.done = threading.Event()

    def _read(self, host: TestHost) -> bool:
        body = json.dumps({"key": base64.b64encode(b"/quorum-probe").decode()}).encode()
        request = urllib.request.Request(f"https://{host.address}:2379/v3/kv/range", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=2, context=self.context) as reply:
                return isinstance(json.loads(reply.read()).get("header"), dict)
        except (OSError, ValueError, AttributeError):
            return False

    def run(self) -> None:
        while not self.done.is_set():
            self.samples += 1
            self.without += not any(self._read(h) for h in self.hosts)
            self.done.wait(0.2)

    def stop(self) -> None:
        self.done.set()
        self.join(10)
