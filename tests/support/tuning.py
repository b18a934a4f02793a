"""etcd overload on the testbed: specs with tuning on, the etcd leader, SIGSTOP pulses, the values members run with,
and a client writing through every endpoint. Used by the tuning, rollback and fault tests."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from testbed import Testbed, TestHost
from tests.support.daemon import wait_for

GRACE = 10


def tuning_specs(spec_copy: Path) -> Path:
    etcd = spec_copy / "etcd.yaml"
    etcd.write_text(
        etcd.read_text()
        .replace("cooldownSeconds: 600", "cooldownSeconds: 0")  # only the rules stop round 2
        .replace("restartGraceSeconds: 30", f"restartGraceSeconds: {GRACE}")
    )
    return spec_copy


def etcdctl(
    bed: Testbed, *args: str, endpoints: list[TestHost] | None = None, timeout: float = 10
) -> subprocess.CompletedProcess[str]:
    pki = bed.pki_dir
    eps = ",".join(f"https://{h.address}:2379" for h in (endpoints or bed.hosts))
    return subprocess.run(
        [
            "etcdctl",
            f"--endpoints={eps}",
            f"--cacert={pki}/ca.pem",
            f"--cert={pki}/kubernetes.pem",
            f"--key={pki}/kubernetes-key.pem",
            "--command-timeout=5s",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )


def pad(bed: Testbed, prefix: str, count: int, size: int = 100_000) -> None:
    """Put `count` values of `size` bytes under `prefix` (given on stdin: etcdctl reads a value there): a database
    of some size for a snapshot or a learner to carry."""
    pki = bed.pki_dir
    for i in range(count):
        put = subprocess.run(
            ["etcdctl", f"--endpoints=https://{bed.hosts[0].address}:2379", f"--cacert={pki}/ca.pem",
             f"--cert={pki}/kubernetes.pem", f"--key={pki}/kubernetes-key.pem", "put", f"{prefix}{i:03d}"],
            input="x" * size, capture_output=True, text=True, timeout=20, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert put.returncode == 0, put.stderr


def leader(bed: Testbed, among: list[TestHost]) -> TestHost:
    out = etcdctl(bed, "endpoint", "status", "-w", "json", endpoints=among).stdout
    for status, host in zip(json.loads(out), among):
        if status["Status"]["leader"] == status["Status"]["header"]["member_id"]:
            return host
    raise AssertionError(f"no leader among {among}: {out}")


def pulse(host: TestHost, times: int = 3) -> None:
    """Stall etcd's process 400 ms at a time: heartbeats go out late, etcd logs the warning."""
    host.ssh(
        "pid=$(systemctl show -p MainPID --value etcd); "
        f"for i in $(seq {times}); do kill -STOP $pid; sleep 0.4; kill -CONT $pid; sleep 0.3; done"
    )


def running_values(host: TestHost) -> dict[str, str]:
    """The timeouts etcd's running process was started with; {} while it is between processes (a restart)."""
    proc = host.ssh("tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value etcd)/environ", check=False)
    env = proc.stdout if proc.returncode == 0 else ""
    return dict(line.split("=", 1) for line in env.splitlines() if line.startswith(("ETCD_HEARTBEAT", "ETCD_ELECTION")))


def conf_values(host: TestHost) -> dict[str, str]:
    conf = (host.root / "etc/etcd/etcd.conf").read_text()
    return dict(
        line.split("=", 1) for line in conf.splitlines() if line.startswith(("ETCD_HEARTBEAT", "ETCD_ELECTION"))
    )


def wait_past_recent_restarts(bed: Testbed) -> None:
    """Warnings within GRACE s of a restart do not count: let earlier tests' restarts age out first."""
    starts = []
    for host in bed.hosts:
        usec = host.ssh("systemctl show -p ActiveEnterTimestampMonotonic --value etcd").stdout.strip()
        now = host.ssh("cat /proc/uptime").stdout.split()[0]
        starts.append(time.time() - (float(now) - int(usec) / 1e6))
    wait_for("earlier etcd restarts to age past the grace window", lambda: time.time() > max(starts) + GRACE + 1)


class Writer(threading.Thread):
    """A client putting keys through all endpoints; remembers every acknowledged write."""

    def __init__(self, bed: Testbed):
        super().__init__(daemon=True)
        self.bed, self.failed = bed, 0
        self.acked: list[str] = []
        self.errors: list[str] = []  # what etcdctl said of the first failed writes
        self.failed_at: list[float] = []  # when each failed write was given up (wall clock)
        self.done = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.done.is_set():
            key = f"/tuning-test/{i:06d}"
            put = etcdctl(self.bed, "put", key, str(i))
            if put.returncode == 0:
                self.acked.append(key)
            else:
                self.failed += 1
                self.failed_at.append(time.time())
                self.errors += [put.stderr.strip()[-300:]][: 10 - len(self.errors)]
            i += 1

    def stop(self) -> None:
        self.done.set()
        if self.ident is not None:  # started
            self.join(30)
