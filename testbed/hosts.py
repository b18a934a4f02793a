"""The testbed: N systemd master hosts booted with systemd-nspawn on one bridge.

Owns the lifecycle of a whole testbed: Testbed.start() cleans leftovers, makes the client key and PKI,
creates the bridge, prepares every overlay root, boots all hosts in parallel and waits until each answers
SSH with strict host-key checking and systemd has finished booting; Testbed.stop() tears it all down.
Used by tests/integration and by `python -m testbed`. One host is a TestHost (host.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from testbed import kube, pki, rootfs
from testbed.cleanup import cleanup
from testbed.host import BOOT_TIMEOUT, SSHCommandError, TestHost
from testbed.layout import BRIDGE, DEFAULT_STATE_DIR, GATEWAY, StateLayout, moved_address
from testbed.system import create_bridge, delete_bridge, parallel, run

__all__ = ["BRIDGE", "DEFAULT_STATE_DIR", "GATEWAY", "SSHCommandError", "TestHost", "Testbed"]


class Testbed:
    """N master hosts on bridge rcbr0 (198.18.0.1/24), host i at 198.18.0.(10+i), named master-i."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        n: int = 3,
        state_dir: Path = DEFAULT_STATE_DIR,
        boot_timeout: float = BOOT_TIMEOUT,
        kube_kind: str | None = None,
    ) -> None:
        if not 1 <= n <= 200:
            raise ValueError(f"n must be between 1 and 200, got {n}")
        self.kube_kind = kube_kind or kube.default_kind()  # which Kubernetes binaries the hosts get (testbed.kube)
        self.layout = StateLayout(Path(state_dir))
        self.state_dir = self.layout.state_dir
        self.boot_timeout = boot_timeout
        self.hosts = [TestHost(i, self.layout) for i in range(1, n + 1)]
        self.timings: dict[str, float] = {}

    @property
    def key_path(self) -> Path:
        return self.layout.key_path

    @property
    def known_hosts_path(self) -> Path:
        return self.layout.known_hosts_path

    @property
    def pki_dir(self) -> Path:
        return self.layout.pki_dir

    def host(self, name: str) -> TestHost:
        return next(h for h in self.hosts if h.name == name)

    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Testbed:
        """Boot every host and wait until all are ready; on failure tear down and re-raise."""
        began = time.monotonic()
        cleanup(self.state_dir)
        try:
            self._prepare()
            self.timings["prepare"] = time.monotonic() - began
            booted = time.monotonic()
            for host in self.hosts:
                host.boot()
            deadline = booted + self.boot_timeout
            parallel(lambda h: h.wait_ready(deadline), self.hosts)
            self.timings["boot"] = time.monotonic() - booted
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self) -> None:
        for directory in (self.layout.hosts_dir, self.layout.run_dir, self.layout.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        ssh_dir = self.layout.ssh_dir
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        for old in ssh_dir.iterdir():
            old.unlink()
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reconciler-testbed", "-f", str(self.key_path)])
        authorized = Path(f"{self.key_path}.pub").read_text()
        moved = [moved_address(i) for i in range(1, min(len(self.hosts), 20) + 1)]
        pki.generate(self.pki_dir, [h.name for h in self.hosts], [h.address for h in self.hosts] + moved)
        create_bridge()

        def prepare_host(host: TestHost) -> str:
            rootfs.mount(self.layout.host_dir(host.name))
            key = rootfs.prepare(
                host.root,
                name=host.name,
                address=host.address,
                authorized_key=authorized,
                pki_dir=self.pki_dir,
                kube_kind=self.kube_kind,
            )
            return f"{host.address} {key}\n"

        lines = parallel(prepare_host, self.hosts)
        self.known_hosts_path.write_text("".join(lines))

    def stop(self) -> None:
        """Power off every host, unmount every overlay and tmpfs, delete the bridge."""
        began = time.monotonic()
        errors: list[BaseException] = []

        def stop_host(host: TestHost) -> None:
            try:
                host.stop()
            except Exception as exc:  # keep tearing down the others
                errors.append(exc)
            rootfs.umount(self.layout.host_dir(host.name))

        parallel(stop_host, self.hosts)
        cleanup(self.state_dir)  # anything not owned by self.hosts (e.g. a larger earlier run)
        for host in self.hosts:
            try:
                self.layout.host_dir(host.name).rmdir()
            except OSError:
                pass
        delete_bridge()
        self.timings["stop"] = time.monotonic() - began
        if errors:
            raise errors[0]
