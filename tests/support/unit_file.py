"""The shipped systemd unit installed on a testbed host, and waiting on what systemd says of it. Used by the unit's
own test and the leader-election tests."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from testbed import Testbed, TestHost
from tests.support.specs import BUNDLED as SPECS
from tests.support.specs import REPO

UNIT = "reconciler.service"


def show(host: TestHost, *props: str) -> dict[str, str]:
    out = host.ssh(f"systemctl show {UNIT} " + " ".join(f"-p {p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_until(what: str, condition: Callable[[], bool], host: TestHost, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            journal = host.ssh(f"journalctl -u {UNIT} -n 40 --no-pager", check=False).stdout
            raise AssertionError(f"timed out waiting for {what}\n{journal}")
        time.sleep(0.2)


def install_unit(host: TestHost, bed: Testbed, run_args: str = "--listen 127.0.0.1:9479 --resync 5") -> None:
    """The shipped unit on `host` with the bundled specs in /etc/reconciler (keys and known_hosts beside them),
    running this checkout's `reconciler run` with `run_args`; loaded, not started."""
    etc = host.root / "etc/reconciler"
    shutil.rmtree(etc, ignore_errors=True)
    shutil.copytree(SPECS, etc / "specs")
    (etc / "ssh").mkdir(mode=0o700)
    shutil.copy(bed.key_path, etc / "ssh/id_ed25519")
    shutil.copy(bed.known_hosts_path, etc / "ssh/known_hosts")
    inventory = etc / "specs/inventory.yaml"
    inventory.write_text(
        inventory.read_text()
        .replace(str(bed.key_path), "/etc/reconciler/ssh/id_ed25519")
        .replace(str(bed.known_hosts_path), "/etc/reconciler/ssh/known_hosts")
    )
    unit_dir = host.root / "etc/systemd/system"
    shutil.copy(REPO / "deploy/systemd" / UNIT, unit_dir / UNIT)
    (unit_dir / f"{UNIT}.d").mkdir(exist_ok=True)
    checkout = (Path(sys.base_prefix).resolve(), REPO)
    under_root = any(p.is_relative_to("/root") for p in checkout)
    under_tmp = any(p.is_relative_to("/tmp") or p.is_relative_to("/var/tmp") for p in checkout)  # a clone in /tmp
    (unit_dir / f"{UNIT}.d/test.conf").write_text(
        "[Service]\nExecStart=\n"
        f"ExecStart={sys.executable} -m reconciler.cli --log-format json run --specs /etc/reconciler/specs "
        f"{run_args}\n"
        f"WorkingDirectory={REPO}\nUser=root\nGroup=root\nWatchdogSec=4s\nRestartSec=1s\n"
        + ("ProtectHome=read-only\n" if under_root else "")
        + ("PrivateTmp=no\nReadWritePaths=/tmp\n" if under_tmp else "")
    )  # a private /tmp would hide the checkout
    host.ssh("systemctl daemon-reload")


def uninstall_unit(host: TestHost) -> None:
    host.ssh(
        f"systemctl stop {UNIT}; rm -rf /etc/systemd/system/{UNIT} /etc/systemd/system/{UNIT}.d "
        "/etc/reconciler; systemctl daemon-reload; systemctl reset-failed",
        check=False,
    )
