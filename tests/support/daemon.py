"""The daemon as an operator runs it, in a process of its own: start it on a spec dir, read its /status and
/metrics, wait for a condition, stop it. Used by the integration tests (the run_daemon fixture) and the benches."""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.support.specs import REPO

T = TypeVar("T")


class RunningDaemon:
    def __init__(self, spec_dir: Path, log_path: Path, *args: str):
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler.cli",
                "--log-format",
                "json",
                "--log-level",
                "debug",
                "run",
                "--specs",
                str(spec_dir),
                "--listen",
                "127.0.0.1:0",
                *args,
            ],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started = wait_for("the daemon to listen", lambda: self.event("daemon started"), timeout=30, daemon=self)
        self.base = f"http://{started['listen']}"
        # glibc's malloc thresholds pinned at start (reconciler/engine/memory.py; RELIABILITY.md, the soak)
        assert started["malloc_thresholds_pinned"] is (platform.libc_ver()[0] == "glibc"), started

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "<not json>", "line": line})
        return out

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events() if e.get("event") == name), None)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def status(self) -> dict[str, Any]:
        return json.loads(self.get("/status")[1])

    def metrics(self) -> dict[str, Any]:
        return {f.name: f for f in text_string_to_metric_families(self.get("/metrics")[1])}

    def sample(self, family: str, suffix: str = "", **labels: str) -> float:
        """Sum of the samples of one family matching the labels (0 when none)."""
        fam = self.metrics().get(family)
        return (
            sum(
                s.value
                for s in fam.samples
                if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items())
            )
            if fam
            else 0.0
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def wait_for(what: str, condition: Callable[[], T], timeout: float = 120, daemon: RunningDaemon | None = None) -> T:
    """Poll `condition` until it returns something truthy; fail with the daemon's last words if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if daemon is not None and daemon.proc.poll() is not None:
            raise AssertionError(
                f"daemon exited ({daemon.proc.returncode}) while waiting for {what}:\n"
                + daemon.log_path.read_text()[-4000:]
            )
        if time.monotonic() > deadline:
            tail = daemon.log_path.read_text()[-4000:] if daemon else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")
        time.sleep(0.1)


def all_converged(daemon: RunningDaemon, after: float = 0.0) -> dict[str, Any] | None:
    """/status when every host's last pass converged (and ran after `after`), else None."""
    status = daemon.status()
    hosts = status["hosts"]
    ok = (
        status["ready"]
        and len(hosts) == 3
        and all(h["status"] == "converged" and (h["last_run"] or 0) > after for h in hosts.values())
    )
    return status if ok else None
