"""Hosts that never answer, for tests of what the operator sees while reconciler waits: a loopback TCP port that
accepts and then says nothing (SSH waits for a banner that never comes), and a spec directory whose hosts are
such ports or closed ones."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncssh

from tests.support.specs import copy_specs


@contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def closed_port() -> int:
    """A loopback port nobody listens on (bound and released: refused until someone else takes it)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def unanswered_specs(dest: Path, ports: dict[str, int]) -> Path:
    """The bundled specs (without the HA front) with each host in `ports` at 127.0.0.1:port, a key and an empty
    known_hosts of their own; hosts not in `ports` are dropped."""
    specs = copy_specs(dest / "specs", ha=False)
    key = dest / "id_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    key.chmod(0o600)
    (dest / "known_hosts").write_text("")
    docs = []
    for name, port in ports.items():
        docs.append(
            f"""apiVersion: reconciler/v1
kind: Host
metadata:
  name: {name}
  labels: {{role: master, etcd: member}}
spec:
  address: 127.0.0.1
  port: {port}
  identityFile: {key}
  knownHosts: {dest / "known_hosts"}
  vars:
    etcd_binary: /usr/bin/etcd
"""
        )
    (specs / "inventory.yaml").write_text("---\n".join(docs))
    return specs
