"""The daemon as an operator runs it, in a process of its own: start `reconciler run` on a spec dir, follow its JSON
log, wait for a condition (/readyz, events, /status), read its /status and /metrics, stop it with SIGTERM and
collect its exit code. The one launcher: the integration tests (the run_daemon fixture) and the benches
(bench/fleet.py, bench/peer.py and bench/versus.py through it, bench/soak.py) all start the daemon here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.support.specs import REPO

T = TypeVar("T")

RECONCILER = (sys.executable, "-m", "reconciler.cli")  # the command before the daemon's own arguments


class LogTail:
    """A JSON log read incrementally: each complete line once, a line that is not JSON kept as `<not json>`."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0
        self.events: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        """Every event so far (the list grows in place: an index into it stays valid)."""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "<not json>", "line": line})
        return self.events


def stamp(event: dict[str, Any]) -> float:
    """An event's own timestamp, in seconds since the epoch."""
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


class RunningDaemon:
    """`COMMAND --log-format json [--log-level L] run --specs SPEC_DIR --listen LISTEN ARGS...` from `cwd` (this
    checkout, or another commit's worktree), its output in `log_path`. With a port of 0 (the default) the daemon
    picks a free one, and the constructor returns once its "daemon started" event names it (`started`); with a
    port given, it returns at once. `env` adds variables to this process's environment for it."""

    def __init__(
        self,
        spec_dir: Path,
        log_path: Path,
        *args: str,
        listen: str = "127.0.0.1:0",
        log_level: str | None = "debug",
        command: Sequence[str] = RECONCILER,
        cwd: Path = REPO,
        env: Mapping[str, str] | None = None,
    ):
        self.log_path = log_path
        argv = [*command, "--log-format", "json", *(("--log-level", log_level) if log_level else ())]
        argv += ["run", "--specs", str(spec_dir), "--listen", listen, *args]
        with log_path.open("w") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
            )
        self._tail = LogTail(log_path)
        self.started: dict[str, Any] | None = None
        if listen.rsplit(":", 1)[1] == "0":
            started = wait_for("the daemon to listen", lambda: self.event("daemon started") or {}, 30, daemon=self)
            self.started, listen = started, started["listen"]
        self.base = f"http://{listen}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """The log's events from the `since`-th on (`len(daemon.events())` marks a point to count from)."""
        return self._tail.poll()[since:]

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events() if e.get("event") == name), None)

    def wait_events(
        self, name: str, count: int, since: int = 0, timeout: float = 120, interval: float = 0.05
    ) -> list[dict[str, Any]]:
        """The first `count` or more `name` events from the `since`-th event on, once there are that many."""

        def found() -> list[dict[str, Any]]:
            events = [e for e in self.events(since) if e.get("event") == name]
            return events if len(events) >= count else []

        return wait_for(f"{count} {name!r} event(s)", found, timeout, daemon=self, interval=interval)

    def get(self, path: str, timeout: float = 10) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def ready(self) -> bool:
        """/readyz answers 200 (False while it answers otherwise or does not answer yet)."""
        try:
            return self.get("/readyz", timeout=5)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 120, interval: float = 0.05) -> None:
        wait_for("the daemon to be ready (/readyz)", self.ready, timeout, daemon=self, interval=interval)

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

    def stop(self, timeout: float = 180) -> int:
        """SIGTERM (if it still runs), then its exit code; killed if it has not exited within `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_for(
    what: str,
    condition: Callable[[], T],
    timeout: float = 120,
    daemon: RunningDaemon | None = None,
    interval: float = 0.1,
) -> T:
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
        time.sleep(interval)


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
