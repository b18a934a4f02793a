"""etcd's journal as facts: heartbeat warnings (3.4 text and 3.5+ JSON) and restarts, parsed purely.

`parse_entry` takes one `journalctl -o json` record and returns a `HeartbeatWarning`, a `Restart`
marker (systemd stopping or starting the unit) or None. Never raises on odd input: a line it cannot
read is simply not a warning. Called by `tuning.follower`; tested on recorded lines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

_UNITS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_TEXT = re.compile(
    r"failed to send out heartbeat on time \(exceeded the (?P<interval>[0-9.a-zµμ]+) timeout for "
    r"(?P<exceeded>[0-9.a-zµμ]+)"
)


def go_duration_ms(text: str) -> float | None:
    """Go's time.Duration text ("401.80886ms", "1.5s", "1m2.5s") in milliseconds; None if it is not one."""
    text = text.strip()
    if not text:
        return None
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass(frozen=True)
class HeartbeatWarning:
    at: float  # unix seconds, from the journal
    interval_ms: float  # the heartbeat interval etcd ran with
    gap_ms: float  # how long the heartbeat really took: the warning's threshold (2 x interval) plus the excess

    @property
    def late_ms(self) -> float:
        return self.gap_ms - 2 * self.interval_ms


@dataclass(frozen=True)
class Restart:
    at: float
    phase: Literal["stopping", "started"]


def parse_message(message: str, at: float) -> HeartbeatWarning | None:
    """One etcd log message (3.4 capnslog text, or a 3.5+ zap JSON object) -> a heartbeat warning or None."""
    if "heartbeat on time" not in message:
        return None
    match = _TEXT.search(message)
    if match:
        interval, exceeded = go_duration_ms(match["interval"]), go_duration_ms(match["exceeded"])
        if interval is None or exceeded is None:
            return None
        return HeartbeatWarning(at, interval, 2 * interval + exceeded)
    start = message.find("{")
    if start < 0:
        return None
    try:
        record = json.loads(message[start:])
    except ValueError:
        return None
    if not isinstance(record, dict) or "heartbeat on time" not in str(record.get("msg", "")):
        return None
    interval = go_duration_ms(str(record.get("heartbeat-interval", "")))
    expected = go_duration_ms(str(record.get("expected-duration", "")))
    exceeded = go_duration_ms(str(record.get("exceeded-duration", "")))
    if interval is None or exceeded is None:
        return None
    return HeartbeatWarning(at, interval, (expected if expected is not None else 2 * interval) + exceeded)


def _message(entry: dict[str, Any]) -> str:
    message = entry.get("MESSAGE", "")
    if isinstance(message, list):  # journald exports non-UTF-8 messages as byte arrays
        try:
            return bytes(int(b) & 0xFF for b in message).decode(errors="replace")
        except (TypeError, ValueError):
            return ""
    return message if isinstance(message, str) else ""


def parse_entry(line: str | bytes, unit: str) -> tuple[str | None, HeartbeatWarning | Restart | None]:
    """One `journalctl -o json` line -> (its cursor, what it says). Cursor None if the line is not a record."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None, None
    if not isinstance(entry, dict):
        return None, None
    cursor = entry.get("__CURSOR") if isinstance(entry.get("__CURSOR"), str) else None
    try:
        at = int(entry.get("__REALTIME_TIMESTAMP", 0)) / 1e6
    except (TypeError, ValueError):
        at = 0.0
    message = _message(entry)
    if entry.get("_PID") == "1" or entry.get("SYSLOG_IDENTIFIER") == "systemd":
        if message.startswith(f"Stopping {unit}"):
            return cursor, Restart(at, "stopping")
        if message.startswith(f"Started {unit}"):
            return cursor, Restart(at, "started")
        return cursor, None
    return cursor, parse_message(message, at)
