"""What a person reads on a terminal: the daemon's /status as a table, plans with colour.

Pure text functions; colour only when asked (the CLI asks when stdout is a terminal and NO_COLOR is
unset), so piped output stays plain. Called by `cli`.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

_CODES = {"red": "31", "green": "32", "yellow": "33", "cyan": "36", "bold": "1", "dim": "2"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def wants_colour(stream: TextIO = sys.stdout) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


class Style:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str, *names: str) -> str:
        if not self.enabled or not names or not text:
            return text
        return f"\x1b[{';'.join(_CODES[n] for n in names)}m{text}\x1b[0m"


def colour_plan(text: str, style: Style) -> str:
    """A rendered plan with diff lines and headlines coloured like `git diff`."""
    if not style.enabled:
        return text
    out = []
    for line in text.splitlines():
        body = line.lstrip()
        if line.startswith("      "):  # diff lines
            if body.startswith(("+++", "---")):
                line = style(line, "bold")
            elif body.startswith("+"):
                line = style(line, "green")
            elif body.startswith("-"):
                line = style(line, "red")
            elif body.startswith("@@"):
                line = style(line, "cyan")
        elif line.startswith("  "):  # action headlines
            line = style(line, "yellow")
        elif line.endswith("no changes"):
            line = style(line, "green")
        else:
            line = style(line, "bold")
        out.append(line)
    return "\n".join(out)


def ago(then: float | None, now: float) -> str:
    if not then:
        return "never"
    seconds = max(0.0, now - then)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _table(rows: Sequence[Sequence[str]], style: Style, colours: Sequence[str | None]) -> list[str]:
    widths = [max(len(_ANSI.sub("", r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - len(_ANSI.sub("", cell)))
            cells.append(style(cell, "bold") + pad if n == 0 else cell + pad)
        colour = colours[n]
        line = "  ".join(cells).rstrip()
        lines.append(style(line, colour) if colour and n else line)
    return lines


STATUS_COLOUR = {
    "converged": "green",
    "failed": "red",
    "rolled-back": "red",
    "unconverged": "yellow",
    "pending": "yellow",
}
CERT_COLOUR = {"ok": "green", "expiring": "yellow"}  # expired, missing, unreadable: red


def _days(n: int) -> str:
    return "less than a day" if n < 1 else ("1 day" if n == 1 else f"{n} days")


def certificate_text(cert: Mapping[str, Any]) -> str:
    """One certificate in words, from its `status.report.certificate_entry` (a /status entry): the same text in
    `reconciler check`/`apply` and `reconciler status`. `ok: 365 days left (warnDays 30)`,
    `expiring: 12 days left (warnDays 30)`, `expired: 3 days ago`, `missing`, `unreadable: <why>`.
    Whole days are cut, not rounded: an `expiring` certificate never shows warnDays or more days left."""
    state, days, warn = cert["state"], cert.get("days_left"), cert.get("warn_days")
    if state in ("ok", "expiring") and days is not None:
        return f"{state}: {_days(math.floor(days))} left" + (f" (warnDays {warn:g})" if warn is not None else "")
    if state == "expired" and days is not None:
        return f"expired: {_days(math.floor(-days))} ago"
    if cert.get("error"):
        return f"{state}: {cert['error']}"
    return state


def render_status(doc: dict[str, Any], source: str, style: Style, now: float | None = None) -> str:
    """The daemon's /status document as a summary line, a host table, then problems and tuning."""
    now = time.time() if now is None else now
    spec, summary, hosts = doc["spec"], doc["summary"], doc["hosts"]
    spec_text = (
        f"specs valid (generation {spec['generation']})"
        if spec["valid"]
        else style(f"specs INVALID, running on generation {spec['generation']}", "red")
    )
    ready = "ready" if doc["ready"] else style("not ready", "yellow")
    converged = f"{summary['converged']}/{summary['hosts']} hosts converged"
    converged = style(converged, "green" if summary["converged"] == summary["hosts"] else "yellow")
    out = [
        f"reconciler at {source}: {ready}, {spec_text}, {converged}, {summary['queue_depth']} queued"
        + (f", in flight: {', '.join(summary['in_flight'])}" if summary["in_flight"] else "")
    ]
    rows: list[list[str]] = [
        ["HOST", "STATUS", "LAST RUN", "LAST SUCCESS", "DRIFT", "FAILURES", "RETRY IN", "COMPONENTS", "CERTIFICATES"]
    ]
    colours: list[str | None] = [None]
    for name, h in hosts.items():
        comps = h["components"]
        bad = sorted(c for c, v in comps.items() if not v["healthy"])
        comp_text = f"{len(comps) - len(bad)}/{len(comps)} healthy" + (f" ({', '.join(bad)} failing)" if bad else "")
        retry = f"{h['retry_in_seconds']:.1f}s" if h.get("retry_in_seconds") is not None else "-"
        states: dict[str, int] = {}
        for cert in h.get("certificates", {}).values():
            states[cert["state"]] = states.get(cert["state"], 0) + 1
        cert_text = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "-"
        rows.append(
            [
                name,
                h["status"],
                ago(h["last_run"], now),
                ago(h["last_success"], now),
                str(h["drift"]),
                str(h["failures"]),
                retry,
                comp_text,
                cert_text,
            ]
        )
        colours.append(STATUS_COLOUR.get(h["status"]))
    out += [""] + _table(rows, style, colours)
    problems = [f"  {style(name, 'bold')}: {h['error']}" for name, h in hosts.items() if h["error"]]
    pending = [f"  {name}: {a}" for name, h in hosts.items() for a in h["pending_actions"]]
    if not spec["valid"]:
        out += ["", style("spec errors:", "red")] + [f"  {e}" for e in spec["errors"]]
    if problems:
        out += ["", style("errors:", "red")] + problems
    if pending:
        out += ["", "pending actions:"] + pending
    certs = [
        (name, path, c)
        for name, h in hosts.items()
        for path, c in h.get("certificates", {}).items()
        if c["state"] != "ok"
    ]
    if certs:
        out += ["", "certificates needing attention:"]
        for name, path, c in certs:
            out.append(f"  {name}  {path}  {style(certificate_text(c), CERT_COLOUR.get(c['state'], 'red'))}")
    for vip, seen in (doc.get("virtual_ips") or {}).items():
        holders = seen["holders"]
        text = f"virtual IP {vip}: held by {', '.join(holders)}" if holders else f"virtual IP {vip}: held by NO host"
        out += [
            "",
            style(text, "green" if len(holders) == 1 else "red") + (" (more than one!)" if len(holders) > 1 else ""),
        ]
    tuning = doc.get("tuning") or {}
    if tuning.get("enabled"):
        eff = tuning["effective"]
        line = (
            f"etcd tuning: heartbeat {eff.get('ETCD_HEARTBEAT_INTERVAL')} ms, "
            f"election {eff.get('ETCD_ELECTION_TIMEOUT')} ms"
        )
        overlay = tuning.get("overlay")
        line += (
            f" (raised {ago(overlay['decided_at'], now)}: {overlay['reason']}; cause: {overlay['cause']})"
            if overlay
            else " (spec values, no overlay)"
        )
        decision = tuning.get("last_decision")
        out += ["", line] + ([f"  last decision: {decision['outcome']}: {decision['reason']}"] if decision else [])
    out += _snapshots_lines(doc.get("etcd_snapshots") or {}, now, style)
    return "\n".join(out)


def _snapshots_lines(snaps: dict[str, Any], now: float, style: Style) -> list[str]:
    """The EtcdBackup schedule's state: the newest kept snapshot and its age, the next attempt, failures."""
    if not snaps.get("enabled"):
        return []
    last = snaps.get("last")
    stale = last is None or now - last["taken_at"] > 2 * snaps["interval_seconds"]
    newest = (
        f"newest {ago(last['taken_at'], now)} (revision {last['revision']}, {last['size'] / 1e6:.1f} MB, from "
        f"{last['member']})"
        if last
        else "none kept yet"
    )
    line = f"etcd snapshots: {style(newest, 'red' if stale else 'green')}, every {snaps['interval_seconds']:g} s"
    lines = ["", line + f" in {snaps['directory']}"]
    if snaps.get("failures"):
        lines.append(style(f"  {snaps['failures']} attempt(s) in a row kept nothing: {snaps.get('error')}", "red"))
    return lines


def status_exit_code(doc: dict[str, Any]) -> int:
    converged = all(h["status"] == "converged" for h in doc["hosts"].values())
    return 0 if doc["ready"] and doc["spec"]["valid"] and converged else 1
