"""deploy/systemd/reconciler.service under a real systemd: Type=notify, STATUS=, watchdog, reload, clean stop.

The daemon runs as that unit on master-1 (a real systemd host of the testbed) and reconciles all three
hosts from there. The drop-in only changes what differs on a test host: the interpreter (this checkout's
virtualenv instead of /opt/reconciler), User=root (the test's key is root's) and, when the interpreter
lives under /root, ProtectHome=read-only; the hardening otherwise stays as shipped.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator

import pytest

from testbed import Testbed, TestHost
from tests.support.specs import REPO
from tests.support.unit_file import UNIT, install_unit, show, uninstall_unit, wait_until

pytestmark = pytest.mark.testbed


@pytest.fixture
def installed(converged: Testbed) -> Iterator[TestHost]:
    host = converged.hosts[0]
    install_unit(host, converged)
    try:
        yield host
    finally:
        uninstall_unit(host)


def test_runs_as_a_notify_service_with_watchdog_reload_and_clean_stop(installed: TestHost) -> None:
    host = installed
    host.ssh(f"systemctl start {UNIT}")  # Type=notify: returns once the daemon sent READY=1
    assert show(host, "ActiveState")["ActiveState"] == "active"
    assert host.ssh("curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:9479/healthz").stdout == "200"

    wait_until(
        "STATUS= to report every host converged",
        lambda: show(host, "StatusText")["StatusText"].startswith("3/3 hosts converged"),
        host,
    )
    # WatchdogSec=4s: it has stayed up across several watchdog periods only because WATCHDOG=1 keeps coming.
    started = show(host, "ExecMainStartTimestampMonotonic")["ExecMainStartTimestampMonotonic"]
    uptime_before = time.monotonic()
    wait_until("10 s of uptime", lambda: time.monotonic() - uptime_before > 10, host)
    props = show(host, "ActiveState", "NRestarts", "ExecMainStartTimestampMonotonic", "WatchdogUSec")
    assert props["ActiveState"] == "active" and props["NRestarts"] == "0", props
    assert props["ExecMainStartTimestampMonotonic"] == started and props["WatchdogUSec"] == "4s"

    cursor = host.ssh("journalctl -q -n 0 --show-cursor").stdout.strip().removeprefix("-- cursor: ")
    host.ssh(f"systemctl reload {UNIT}")  # ExecReload: SIGHUP reloads the specs
    wait_until(
        "the SIGHUP reload in the journal",
        lambda: '"reason": "sighup"' in host.ssh(f"journalctl -q -o cat -u {UNIT} --after-cursor='{cursor}'").stdout,
        host,
    )

    # A hung event loop stops the heartbeat: systemd's watchdog kills it and Restart=on-failure brings it back.
    pid = show(host, "MainPID")["MainPID"]
    host.ssh(f"kill -STOP {pid}")
    wait_until(
        "the watchdog to restart the daemon", lambda: show(host, "NRestarts")["NRestarts"] == "1", host, timeout=60
    )
    wait_until("the restarted daemon to be active", lambda: show(host, "ActiveState")["ActiveState"] == "active", host)
    assert show(host, "MainPID")["MainPID"] != pid

    host.ssh(f"systemctl stop {UNIT}")
    props = show(host, "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, props
    assert '"event": "stopping: finishing passes in flight"' in host.ssh(f"journalctl -q -o cat -u {UNIT}").stdout


def test_shipped_unit_hardening_score(converged: Testbed) -> None:
    """`systemd-analyze security` on the unit exactly as shipped (RELIABILITY.md records the number)."""
    host = converged.hosts[0]
    name = "reconciler-analyze.service"
    shutil.copy(REPO / "deploy/systemd" / UNIT, host.root / "etc/systemd/system" / name)
    try:
        host.ssh("systemctl daemon-reload")
        out = host.ssh(f"systemd-analyze security {name} --no-pager").stdout
    finally:
        host.ssh(f"rm -f /etc/systemd/system/{name}; systemctl daemon-reload", check=False)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", out)
    assert match, out
    print(f"systemd-analyze security: {match[1]} {match[2]}")
    assert float(match[1]) <= 1.5 and match[2] == "OK", out
