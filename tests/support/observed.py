"""What tests read off the testbed's hosts: unit start times, daemon-reloads and restart windows from the journal,
whether the files are the rendered specs. Used by the integration tests."""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.spec.isolate import load_desired
from testbed import Testbed, TestHost
from tests.support.specs import BUNDLED as SPECS

UNITS = ["etcd.service", "kube-apiserver.service", "kube-controller-manager.service", "kube-scheduler.service"]


SSL = "--cacert /etc/kubernetes/ssl/ca.pem --cert /etc/kubernetes/ssl/kubernetes.pem --key /etc/kubernetes/ssl/kubernetes-key.pem"


def unit_starts(host: TestHost) -> dict[str, str]:
    out = host.ssh("systemctl show --timestamp=us+utc -p Id,ActiveEnterTimestamp " + " ".join(UNITS)).stdout
    starts = {}
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines())
        starts[props["Id"]] = props["ActiveEnterTimestamp"]
    return starts


def all_starts(bed: Testbed) -> dict[tuple[str, str], str]:
    return {(h.name, u): t for h in bed.hosts for u, t in unit_starts(h).items()}


def journal_cursor(host: TestHost) -> str:
    out = host.ssh("journalctl -q -n 0 --show-cursor").stdout
    return out.strip().removeprefix("-- cursor: ")


def daemon_reloads_since(host: TestHost, cursor: str) -> int:
    out = host.ssh(f"journalctl -q -o cat _PID=1 --after-cursor='{cursor}'", check=False).stdout
    return len(re.findall(r"^Reloading", out, re.M))


def assert_files_match_specs(bed: Testbed, spec_dir: Path = SPECS) -> None:
    desired = load_desired(spec_dir)
    for host in bed.hosts:
        for path, want in desired.hosts[host.name].files.items():
            have = (host.root / path.lstrip("/")).read_bytes()
            assert have == want.content, f"{host.name}:{path} differs from the rendered spec"


def restart_window(host: TestHost, cursor: str) -> tuple[float, float]:
    """(etcd began stopping, etcd was started again) on this host after the cursor, unix seconds.

    The stop is the first of systemd's "Stopping" line and etcd's own "received terminated signal"
    (journald may order or drop one of them under load); exactly one start proves one restart.
    """
    out = host.ssh(f"journalctl -q -o short-unix -u etcd.service --after-cursor='{cursor}'").stdout
    lines = out.splitlines()
    stopping = [
        float(line.split()[0])
        for line in lines
        if "Stopping etcd.service" in line or "received terminated signal" in line
    ]
    started = [float(line.split()[0]) for line in lines if "Started etcd.service" in line]
    assert len(started) == 1 and stopping, out  # restarted exactly once
    assert len([line for line in lines if "received terminated signal" in line]) <= 1, out
    return min(stopping), started[0]
