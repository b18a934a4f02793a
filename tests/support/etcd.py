"""A real etcd (Debian's 3.4) on loopback in a directory of the caller's, and the clients tests drive it with.

`local_etcd` starts one member and yields its client URL; `etcdctl` runs the CLI against it; `two` makes two
replicas' gateways in the caller's event loop; `wait_ready` steps an elector until etcd has elected itself.
Used by the leader-election, restart-lock and attack tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from reconciler.leader.elector import Elector
from reconciler.leader.from_here import EtcdGateway


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_etcd(data: Path) -> Iterator[str]:
    """One etcd member on 127.0.0.1 with its data in `data`; its client URL, once it listens."""
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    proc = subprocess.Popen(
        [
            "etcd",
            "--name=t",
            f"--data-dir={data}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=t=http://127.0.0.1:{peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", client), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def etcdctl(url: str, *args: str) -> None:
    subprocess.run(["etcdctl", f"--endpoints={url}", *args], check=True, capture_output=True, env={"ETCDCTL_API": "3"})


class Clock:
    """A clock the test moves by hand (`now`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def two(url: str) -> AsyncIterator[tuple[EtcdGateway, EtcdGateway]]:
    """Two replicas' clients (made in the test's own event loop)."""
    a, b = EtcdGateway([url]), EtcdGateway([url])
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def wait_ready(e: Elector) -> None:
    """Step the elector until etcd answers it (etcd elects itself leader a moment after it listens)."""
    for _ in range(100):
        await e.step()
        if not e.state.error:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(e.state.error)
